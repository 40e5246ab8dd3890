"""The driver: the one object the shared machine (``_machine``) moves, and what runs a conversation's table.

It fires the table's triggers (``fire``), a state's ``next`` until a condition holds (``advance``), and
owns the ending: whatever ends a conversation — the end of the block, an HTTP error, a broken stream,
the consumer leaving the loop, ``task.cancel()``, a timeout around the caller, an exception nobody
expected — goes through ``close``/``abort`` to ``delete``, exactly once:

* the ending runs in one task the client owns (``end``), shared by every path that ends the conversation;
* a cancellation from outside reaches the caller at once; the ending goes on in that task (the client's
  ``aclose()`` waits for it, bounded by ``Timeouts.cleanup``);
* the caller sees the error that caused the ending, an ``H2oError`` (the original in ``__cause__``), or
  its own cancellation; a failed DELETE is attached to it, never raised in its place.

Its data is plain (``_data``): ``conv`` (the conversation), ``turn`` (the current turn), ``transition``
(the running transition, which ``prepare``/``finalize`` turn into a history record); the rest of its
fields say what runs now (a transition, a turn, the create, the ending, the stream's tail), whether it
holds a slot of the client's ``max_concurrency``, and by when its ending must be over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from ._aio import wait_owned
from ._data import ConversationData, TransitionData, TurnData
from ._exceptions import H2oCleanupError, H2oError, H2oStateError, add_note
from ._history import finalize, prepare, record_abandoned, report
from ._machine import MACHINE
from ._phase import Phase
from ._reader import read_answer
from ._table import SPEC, VALID_TRIGGERS
from ._tail import before_end, before_turn, end_steps, start

if TYPE_CHECKING:
    from transitions.core import EventData

    from ._log import Logger
    from ._protocol import Messages, Parameters
    from ._runtime import Runtime
    from ._session import Session

__all__ = ["CANCELLED", "Driver", "Pause"]

CANCELLED = (asyncio.CancelledError, KeyboardInterrupt, SystemExit)


class Pause:
    """An ending paused at a failed step (the stepper's): ``go`` lets its next step run, ``done`` says it ran."""

    __slots__ = ("done", "go", "released", "trigger")

    def __init__(self) -> None:
        self.go, self.done = asyncio.Event(), asyncio.Event()
        self.released = False
        self.trigger = "abort"  # the ending's next trigger

    def release(self) -> None:
        """Run the rest of the ending without waiting for steps."""
        self.released = True
        self.go.set()


class Driver:
    """One conversation as the machine sees it. ``state`` is set by the machine only."""

    __slots__ = ("__weakref__", "busy", "conv", "create_task", "end_by", "ending", "holds_slot", "one_shot", "pause",
                 "rt", "state", "tail_task", "transition", "transitioning", "turn")

    conv: ConversationData
    turn: TurnData
    transition: TransitionData

    def __init__(self, rt: Runtime, *, model: str, parameters: Parameters, session: Session, log: Logger) -> None:
        self.state: Phase = Phase.NEW
        self.rt = rt
        self.conv = ConversationData(model, parameters, session, log, rt.dialect.new_state(None))
        self.turn = TurnData()
        self.transition = TransitionData()
        self.transitioning = False  # a transition runs (in some task)
        self.busy = False  # a turn, a step or open() runs
        self.holds_slot = False  # of the client's ``max_concurrency``
        self.create_task: asyncio.Task[None] | None = None  # the create, in a task the client owns
        self.ending: asyncio.Task[None] | None = None  # the one task that ends the conversation
        self.end_by = 0.0  # loop time by which the ending (stop and DELETE) must be over
        self.pause: Pause | None = None  # set while an ending waits for steps (a step failed)
        self.tail_task: asyncio.Task[None] | None = None  # reads the last answer's stream tail (``_tail``)
        self.one_shot = False  # ask/stream: its ending follows the answer at once, and reads the tail itself

    # ------------------------------------------------------------------ guards (named in the table)
    @property
    def created(self) -> bool:
        """Whether the server holds (or held) this conversation."""
        return self.conv.cid is not None

    @property
    def has_error(self) -> bool:
        """Whether an error or a failed cleanup ended the conversation."""
        return self.conv.error is not None or self.conv.cleanup_error is not None

    # ------------------------------------------------------------------ machine callbacks (``_history``)
    def prepare(self, event: EventData) -> None:
        prepare(self, event)

    def finalize(self, event: EventData) -> None:
        finalize(self, event)

    def holds(self, guard: str) -> bool:
        """The value of a guard the table names (``created``, ``has_error``)."""
        return bool(getattr(self, guard))

    # ------------------------------------------------------------------ a turn
    def validate(self, prompt: str | Messages) -> tuple[str | None, str]:
        """``prompt`` as the dialect sends it (its preprompt, its text), checked against the limits before
        anything is sent. Only the first turn of a conversation that is not on the server yet has a preprompt."""
        preprompt, text = self.rt.dialect.prepare(prompt, first=self.state is Phase.NEW and self.conv.cid is None)
        self.rt.limits.check_prompt(preprompt, text)
        return preprompt, text

    def set_prompt(self, preprompt: str | None, text: str) -> None:
        """The prompt of the next send; the first one also makes the dialect's state (with the preprompt)."""
        if self.state is Phase.NEW:
            self.conv.dstate = self.rt.dialect.new_state(preprompt)
        self.turn.prompt = text

    def check_can_send(self) -> None:
        if self.busy:
            raise H2oStateError("a turn is already running on this conversation", phase=self.state)
        if not SPEC[self.state].rests or self.ending is not None:
            raise H2oStateError(
                f"cannot send a turn in state {self.state.value!r}", phase=self.state, conversation_id=self.conv.cid
            )

    async def start_turn(self) -> None:
        rt = self.rt
        if self.state is Phase.NEW and self not in rt.live:
            rt.live.add(self)
        total = rt.timeouts.total
        self.turn.deadline = None if total is None else asyncio.get_running_loop().time() + total
        await before_turn(self)  # the server's previous run first: a turn never overlaps it
        if not self.holds_slot and rt.slots is not None:
            await rt.slots.acquire()
            if self.holds_slot or self.state.is_terminal or self.ending is not None:
                rt.slots.release()  # ended (or given a slot) while this turn waited: never keep a second one
                if not self.holds_slot:
                    raise H2oStateError("the conversation ended while its turn waited for a slot",
                                        phase=self.state, conversation_id=self.conv.cid)
            else:
                self.holds_slot = True

    async def advance(self, until: Callable[[Phase], bool]) -> None:
        """Fire each state's ``next`` (from the table) until ``until(state)`` holds; at least once."""
        while True:
            if self.state.is_terminal or self.ending is not None:
                raise H2oStateError("the conversation was ended meanwhile (closed from another task)",
                                    phase=self.state, conversation_id=self.conv.cid)
            await self.fire(SPEC[self.state].next or "")
            if until(self.state):
                return

    async def fire(self, trigger: str) -> None:
        if trigger not in VALID_TRIGGERS[self.state]:
            raise H2oStateError(
                f"trigger {trigger!r} is not allowed in state {self.state.value!r}",
                phase=self.state, conversation_id=self.conv.cid,
            )
        if self.transitioning:
            raise H2oStateError(f"trigger {trigger!r} while another transition is running",
                                phase=self.state, conversation_id=self.conv.cid)
        self.transitioning = True
        try:
            await MACHINE.events[trigger].trigger(self)
            if self.turn.tail is not None and SPEC[self.state].rests and not self.one_shot:
                start(self)  # the answer is complete: read the rest (a one-shot's ending reads it, ``_tail``)
        except H2oError:
            raise
        except Exception as exc:  # anything a callback raised that nobody expected
            raise H2oError(f"unexpected {type(exc).__name__}", phase=self.state,
                           conversation_id=self.conv.cid) from exc
        finally:
            self.transitioning = False

    async def read_all(self) -> str:
        async with aclosing(read_answer(self)) as reader:
            parts = [chunk async for chunk in reader]
        return "".join(parts)

    async def guarded(self, work: Callable[[], Awaitable[None]],
                      pause: Callable[[BaseException], bool] | None = None) -> None:
        """Run ``work`` as this conversation's one running operation; any failure ends the conversation
        (unless ``pause`` takes a failure that is no cancellation: then its ending waits for steps)."""
        self.busy = True
        try:
            await work()
        except BaseException as exc:
            if not (pause is not None and not isinstance(exc, CANCELLED) and pause(exc)):
                await self.abort(exc)
            raise
        finally:
            self.busy = False

    # ------------------------------------------------------------------ the ending
    def close_soon(self) -> None:
        """Start ending the conversation in the client's task without waiting for it (unless a step of
        it runs in another task right now: ending it is that task's job)."""
        if not self.state.is_terminal and not self.transitioning:
            self.end("close")

    def end(self, trigger: str) -> asyncio.Task[Any]:
        """The one task that ends this conversation, owned by the client. Every path that ends it
        shares it, so the DELETE runs exactly once."""
        if self.ending is None:
            self.ending = self.rt.spawn(self.run_end(trigger))
        elif self.pause is not None:  # an ending paused at a failed step (the stepper's): all of it now
            self.pause.release()
        return self.ending

    async def run_end(self, trigger: str) -> None:
        self.end_by = asyncio.get_running_loop().time() + self.rt.timeouts.cleanup
        try:
            create = self.create_task
            if create is not None:  # a create still in flight: its answer names what to delete
                if not create.done():
                    await asyncio.wait([create])
                if not create.cancelled():
                    create.exception()  # retrieved: it is (or was raised as) the conversation's error
            await before_end(self)
            await end_steps(self, trigger)
        except BaseException as exc:  # the machine still ends, whatever happened
            self.force_end(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise

    def force_end(self, exc: BaseException) -> None:
        """End in ``failed`` without the machine (its own ending failed or was cancelled)."""
        source, conv = self.state, self.conv
        if source.is_terminal:
            return
        MACHINE.set_state(Phase.FAILED, model=self)
        if conv.error is None:
            conv.error = exc
        if conv.cid is not None and conv.cleanup_error is None:
            conv.cleanup_error = H2oCleanupError(
                f"the conversation was not deleted: {type(exc).__name__}", phase=Phase.DELETE,
                conversation_id=conv.cid,
            )
            self.rt.undeleted += 1
        self.on_terminal()
        report(self, record_abandoned(self, source, exc), failed=True)

    async def abort(self, exc: BaseException) -> None:
        """End the conversation because of ``exc``; delete it if it exists. Waits for the ending unless
        ``exc`` is a cancellation (then it must reach the caller at once); a failed cleanup is attached
        to ``exc``."""
        conv = self.conv
        if self.state.is_terminal:
            return
        if conv.error is None:
            conv.error = exc
        if self.transitioning and self.ending is None:  # another task is inside a step: ending it is its job
            add_note(exc, "h2o-fsm: the conversation was not ended here: another task runs one of its steps")
            return
        ending = self.end("abort")
        if isinstance(exc, CANCELLED):
            return
        try:
            await wait_owned(ending, self.rt.abandoned)
        except H2oStateError as closed:  # the client gave up on the ending: never hide ``exc`` behind that
            add_note(exc, f"h2o-fsm: {closed.message}")
            return
        cleanup = conv.cleanup_error
        if cleanup is not None:
            if isinstance(exc, H2oError):
                if exc.cleanup_error is None:
                    exc.cleanup_error = cleanup
            else:
                add_note(exc, f"h2o-fsm: deleting the conversation failed too: {cleanup.message}")

    def on_terminal(self) -> None:
        """Give back the concurrency slot and leave the client's live set. Idempotent."""
        rt = self.rt
        if self.holds_slot and rt.slots is not None:
            rt.slots.release()
            self.holds_slot = False
        rt.live.discard(self)
