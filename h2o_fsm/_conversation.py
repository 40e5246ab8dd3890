"""One conversation: the public API, and the driver that runs the table and guarantees the ending.

The driver fires the table's triggers (``_table``): a turn fires each state's ``next`` until the state
the caller reads, then until one that rests. Whatever ends a conversation — the end of the block, an
HTTP error, a broken stream, the consumer leaving the loop, ``task.cancel()``, a timeout around the
caller, an exception nobody expected — goes through ``close``/``abort`` to ``delete``, exactly once:

* the ending runs in one task the client owns, shared by every path that ends the conversation;
* a cancellation from outside reaches the caller at once; the ending goes on in that task (the
  client's ``aclose()`` waits for it, bounded by ``Timeouts.cleanup``);
* the caller sees the error that caused the ending, an ``H2oError`` (the original in ``__cause__``),
  or its own cancellation; a failed DELETE is attached to it, never raised in its place.

A turn ends at the final answer; the stream's tail, then the next turn or the ending, follow (``_tail``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

from ._aio import wait_owned
from ._attach import attach, detach
from ._exceptions import H2oCleanupError, H2oError, H2oStateError, add_note
from ._machine import MACHINE
from ._phase import Phase
from ._protocol import Messages
from ._reader import read_answer
from ._records import TransitionRecord
from ._stepper import Stepping
from ._table import SPEC, VALID_TRIGGERS
from ._tail import before_end, before_turn, end_steps, settle, start
from ._turn import TurnScope

__all__ = ["Conversation"]

_CANCELLED = (asyncio.CancelledError, KeyboardInterrupt, SystemExit)


class Conversation(Stepping):
    """A server-side conversation driven by the shared machine.

    Use it as an async context manager; leaving the block deletes the conversation (if one was
    created), whatever happened inside::

        async with client.conversation() as conv:
            async for chunk in conv.stream("Hello"):
                print(chunk, end="")
            print(await conv.ask("And again?"))

    Inspect ``state``, ``conversation_id`` and ``history`` at any time.
    """

    # ------------------------------------------------------------------ public
    @property
    def conversation_id(self) -> str | None:
        """The server's id, once ``create`` succeeded."""
        return self.cid

    @property
    def history(self) -> tuple[TransitionRecord, ...]:
        """Every transition so far, in order."""
        return tuple(self.records)

    def __repr__(self) -> str:
        return f"<Conversation state={self.state.value} id={self.cid} model={self.model!r}>"

    async def __aenter__(self) -> Conversation:
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            await self.aclose()
        else:
            await self._abort(exc)

    def stream(self, prompt: str | Messages) -> AsyncGenerator[str, None]:
        """Send one turn and yield the answer's text chunks as they arrive.

        ``prompt`` is a string (sent as is) or a list of ``{"role", "content"}`` messages. Leaving the
        loop early ends the whole conversation (it is deleted).
        """
        scope = self.turn(prompt)  # validates now, before the first chunk is asked for
        return self._stream(scope)

    async def _stream(self, scope: TurnScope) -> AsyncGenerator[str, None]:
        async with scope as reader:
            async for text in reader:
                yield text

    async def ask(self, prompt: str | Messages) -> str:
        """Send one turn and return the whole answer."""
        async with self.turn(prompt) as reader:
            parts = [chunk async for chunk in reader]
        return "".join(parts)

    async def settle(self) -> None:
        """Wait until the server has finished the last answer's run (its stream's tail read, bounded by half
        of ``Timeouts.cleanup``): then ``final.title`` holds a title chat-ui sent after the answer."""
        await settle(self)

    def turn(self, prompt: str | Messages) -> TurnScope:
        """One turn as an async context manager yielding the answer's chunks (what :meth:`stream` and
        :meth:`ask` use). The prompt is validated here, before anything is sent."""
        # first: nothing exists on the server yet (an attached conversation exists: no create, no preprompt)
        preprompt, text = self.rt.dialect.prepare(prompt, first=self.state is Phase.NEW and self.cid is None)
        self.rt.limits.check_prompt(preprompt, text)
        self._check_can_send()
        return TurnScope(self, preprompt, text)

    async def open(self) -> None:
        """Run the steps up to ``create`` now (otherwise the first turn does it)."""
        if self.state is not Phase.NEW:
            raise H2oStateError(f"open() needs state 'new', not {self.state.value!r}", phase=self.state)
        self._check_can_send()

        async def up_to_create() -> None:
            await self._start_turn()
            await self._advance(lambda p: SPEC[p].rests)

        await self._guarded(up_to_create)

    async def aclose(self) -> None:
        """Delete the conversation (if created) and end in ``closed``. Idempotent.

        Raises :class:`H2oCleanupError` if the DELETE failed and nothing else had failed before.
        """
        if self.state.is_terminal:
            return
        if self.transitioning and self.ending is None:  # a turn in another task is inside a step
            raise H2oStateError("cannot close while another task runs one of its steps; cancel that task",
                                phase=self.state, conversation_id=self.cid)
        await wait_owned(self._end("close"), self.rt.abandoned)
        if self.cleanup_error is not None and self.error is None:
            raise self.cleanup_error

    def attach(self, conversation_id: str) -> None:
        """Continue ``conversation_id``, a conversation on the server, instead of creating one (what
        ``client.conversation(conversation_id=...)`` does); deleted at its end unless detached."""
        attach(self, conversation_id)

    async def detach(self) -> str:
        """Leave the conversation on the server on purpose (not deleted, out of the journal, logged);
        returns its id."""
        return await detach(self)

    def close_soon(self) -> None:
        """Start ending the conversation in the client's task without waiting for it (unless a step of
        it runs in another task right now: ending it is that task's job). ``H2oClient.aclose()`` uses it."""
        if not self.state.is_terminal and not self.transitioning:
            self._end("close")

    # ------------------------------------------------------------------ driver
    def _check_can_send(self) -> None:
        if self.busy:
            raise H2oStateError("a turn is already running on this conversation", phase=self.state)
        if not SPEC[self.state].rests or self.ending is not None:
            raise H2oStateError(
                f"cannot send a turn in state {self.state.value!r}", phase=self.state, conversation_id=self.cid
            )

    async def _start_turn(self) -> None:
        rt = self.rt
        if self.state is Phase.NEW and self not in rt.live:
            rt.live.add(self)
        total = rt.timeouts.total
        self.deadline = None if total is None else asyncio.get_running_loop().time() + total
        await before_turn(self)  # the server's previous run first: a turn never overlaps it
        if not self.holds_slot and rt.slots is not None:
            await rt.slots.acquire()
            if self.holds_slot or self.state.is_terminal or self.ending is not None:
                rt.slots.release()  # ended (or given a slot) while this turn waited: never keep a second one
                if not self.holds_slot:
                    raise H2oStateError("the conversation ended while its turn waited for a slot",
                                        phase=self.state, conversation_id=self.cid)
            else:
                self.holds_slot = True

    async def _advance(self, until: Callable[[Phase], bool]) -> None:
        """Fire each state's ``next`` (from the table) until ``until(state)`` holds; at least once."""
        while True:
            if self.state.is_terminal or self.ending is not None:
                raise H2oStateError("the conversation was ended meanwhile (closed from another task)",
                                    phase=self.state, conversation_id=self.cid)
            await self._fire(SPEC[self.state].next or "")
            if until(self.state):
                return

    async def _fire(self, trigger: str) -> None:
        if trigger not in VALID_TRIGGERS[self.state]:
            raise H2oStateError(
                f"trigger {trigger!r} is not allowed in state {self.state.value!r}",
                phase=self.state, conversation_id=self.cid,
            )
        if self.transitioning:
            raise H2oStateError(f"trigger {trigger!r} while another transition is running",
                                phase=self.state, conversation_id=self.cid)
        self.transitioning = True
        try:
            await MACHINE.events[trigger].trigger(self)
            if self.tail is not None and SPEC[self.state].rests:  # the answer is complete: read the rest
                start(self)
        except H2oError:
            raise
        except Exception as exc:  # anything a callback raised that nobody expected
            raise H2oError(f"unexpected {type(exc).__name__}", phase=self.state, conversation_id=self.cid) from exc
        finally:
            self.transitioning = False

    def _end(self, trigger: str) -> asyncio.Task[None]:
        """The one task that ends this conversation, owned by the client. Every path that ends it
        shares it, so the DELETE runs exactly once."""
        if self.ending is None:
            self.ending = self.rt.spawn(self._run_end(trigger))
        elif self.pause is not None:  # an ending paused at a failed step (the stepper's): all of it now
            self.pause.release()
        return self.ending

    async def _run_end(self, trigger: str) -> None:
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
            self._force_end(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise

    def _force_end(self, exc: BaseException) -> None:
        """End in ``failed`` without the machine (its own ending failed or was cancelled)."""
        source = self.state
        if self.state.is_terminal:
            return
        MACHINE.set_state(Phase.FAILED, model=self)
        if self.error is None:
            self.error = exc
        if self.cid is not None and self.cleanup_error is None:
            self.cleanup_error = H2oCleanupError(
                f"the conversation was not deleted: {type(exc).__name__}", phase=Phase.DELETE,
                conversation_id=self.cid,
            )
            self.rt.undeleted += 1
        record = TransitionRecord(source, Phase.FAILED, "abandon", 0.0, error=type(exc).__name__,
                                  conversation_id=self.cid)
        self.records.append(record)
        self.on_terminal()
        self.report(record, failed=True)

    async def _abort(self, exc: BaseException) -> None:
        """End the conversation because of ``exc``; delete it if it exists. Waits for the ending unless
        ``exc`` is a cancellation (then it must reach the caller at once); a failed cleanup is attached
        to ``exc``."""
        if self.state.is_terminal:
            return
        if self.error is None:
            self.error = exc
        if self.transitioning and self.ending is None:  # another task is inside a step: ending it is its job
            add_note(exc, "h2o-fsm: the conversation was not ended here: another task runs one of its steps")
            return
        ending = self._end("abort")
        if isinstance(exc, _CANCELLED):
            return
        try:
            await wait_owned(ending, self.rt.abandoned)
        except H2oStateError as closed:  # the client gave up on the ending: never hide ``exc`` behind that
            add_note(exc, f"h2o-fsm: {closed.message}")
            return
        cleanup = self.cleanup_error
        if cleanup is not None:
            if isinstance(exc, H2oError):
                if exc.cleanup_error is None:
                    exc.cleanup_error = cleanup
            else:
                add_note(exc, f"h2o-fsm: deleting the conversation failed too: {cleanup.message}")

    async def _read_all(self) -> str:
        async with aclosing(read_answer(self)) as reader:
            parts = [chunk async for chunk in reader]
        return "".join(parts)
