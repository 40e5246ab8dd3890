"""The stepper: drive a conversation one state at a time (``conv.step()``), and say what comes next.

Every decision is read from the table (``_table``): the trigger of a step is the state's ``next``
(or its ``idle`` trigger when no prompt is queued), a state that ``reads`` is read to its end in
one step, a state that ``needs_prompt`` refuses to be entered without one, and the description of
the next request is the destination's ``request`` with its dialect's body.

A step that fails leaves the conversation at the failure, its ending pending (the server's state then is
what one debugs): the ending task exists already, the client owns it, and it waits for the next
``step()`` before each of its steps; anything else that ends the conversation (leaving its block,
``aclose()``, a cancellation, the client's end) lets it run to its end at once (``_Pause.release``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._aio import wait_owned
from ._exceptions import H2oStateError
from ._log import redact, shown_headers
from ._model import ConversationModel
from ._phase import Phase
from ._protocol import Messages
from ._records import StepResult
from ._steps import skipped
from ._table import SPEC, destination, request_line

__all__ = ["Stepping"]

_CANCELLED = (asyncio.CancelledError, KeyboardInterrupt, SystemExit)


class _Pause:
    """An ending paused at a failure: ``go`` lets its next step run, ``done`` says it ran."""

    __slots__ = ("done", "go", "released", "trigger")

    def __init__(self) -> None:
        self.go, self.done = asyncio.Event(), asyncio.Event()
        self.released = False
        self.trigger = "abort"  # the ending's next trigger

    def release(self) -> None:
        """Run the rest of the ending without waiting for steps."""
        self.released = True
        self.go.set()


class Stepping(ConversationModel):
    """The stepping half of :class:`~h2o_fsm.Conversation` (the driver methods are the other half)."""

    pause: _Pause | None = None  # set while an ending waits for steps (a step failed)

    async def step(self, prompt: str | Messages | None = None) -> StepResult:
        """Run exactly one state's step and return what it did.

        From ``new`` it posts settings; then create; then fetch (chat-ui: the parent message); then
        ``send`` (needs ``prompt`` for the turn, or the one given earlier to :meth:`queue`); then
        ``stream`` (enters the state); then reads the whole stream (``finish``); from ``ready`` without
        a prompt it ends the conversation (deletes it). A step after a terminal state raises
        :class:`H2oStateError`. A step that fails raises its error and leaves the conversation there, its
        ending pending: each next ``step()`` runs one step of it (``abort``, stop, DELETE), and leaving the
        block, ``aclose()`` or a cancellation run all of it, as for any other failure.
        """
        if prompt is not None:
            self.queue(prompt)
        state = self.state
        if state.is_terminal:
            raise H2oStateError(f"the conversation already ended ({state.value})", phase=state)
        if self.busy:
            raise H2oStateError("a turn is running on this conversation", phase=state)
        trigger = self.next_trigger()
        if self.pause is not None:
            return await self._step_ending(self.pause, trigger)
        spec = SPEC[state]
        t0 = time.perf_counter()
        text: str | None = None
        before = len(self.records)

        async def one_step() -> None:
            nonlocal text
            if trigger == spec.idle:
                await wait_owned(self._end(trigger), self.rt.abandoned)
                return
            if spec.rests:
                await self._start_turn()  # a new turn: its own deadline
            if spec.reads:
                text = await self._read_all()
            await self._fire(trigger)

        await self._guarded(one_step, pause=True)  # one step at a time, and no turn meanwhile
        return self._result(trigger, before, t0, text)

    def _result(self, trigger: str, before: int, t0: float, text: str | None = None) -> StepResult:
        new = self.records[before:]
        last = next((r for r in new if r.trigger == trigger), new[0] if new else None)  # not a tail record
        headers = self.headers
        return StepResult(
            state=self.state,
            trigger=trigger,
            request=last.request if last else None,
            status=last.status if last else None,
            elapsed_ms=(time.perf_counter() - t0) * 1000.0,
            skipped=last.skipped if last else False,
            text=text,
            headers=() if headers is None or last is None or last.status is None
            else shown_headers(headers, self.scrubbed),
        )

    async def _step_ending(self, pause: _Pause, trigger: str) -> StepResult:
        """One step of an ending paused at a failure; it runs in the client's task (a cancelled caller
        does not cut it: the rest of the ending follows)."""
        t0, before = time.perf_counter(), len(self.records)
        ending = self.ending
        assert ending is not None
        self.busy = True
        try:
            pause.done.clear()
            pause.go.set()
            done = asyncio.ensure_future(pause.done.wait())
            try:
                await asyncio.wait([done, ending], return_when=asyncio.FIRST_COMPLETED)
            finally:
                done.cancel()
        finally:
            self.busy = False
        return self._result(trigger, before, t0)

    async def _paused_end(self, pause: _Pause) -> None:
        """The ending of a conversation whose step failed: one step per ``go``, the rest at ``release``."""
        loop = asyncio.get_running_loop()
        try:
            while not self.state.is_terminal:
                closing = self.rt.requester.closing  # the client closes: it ends what it did not release
                if not closing:
                    await pause.go.wait()
                pause.go.clear()
                if pause.released or closing:
                    await self._run_end(pause.trigger)
                    return
                self.end_by = loop.time() + self.rt.timeouts.cleanup  # the pause was the person's, not the ending's
                await self._fire(pause.trigger)
                pause.trigger = SPEC[self.state].next or ""
                pause.done.set()
        except BaseException as exc:  # the machine still ends, whatever happened (cancelled at a pause too)
            self._force_end(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.pause = None
            pause.done.set()

    def queue(self, prompt: str | Messages) -> None:
        """Set the prompt the next ``send`` step will post (validated now)."""
        preprompt, text = self.rt.dialect.prepare(prompt, first=self.state is Phase.NEW and self.cid is None)
        self.rt.limits.check_prompt(preprompt, text)
        if self.state is Phase.NEW:
            self.dstate = self.rt.dialect.new_state(preprompt)
        self.prompt = text
        self.prompt_pending = True

    def next_trigger(self) -> str:
        """The trigger :meth:`step` would fire now."""
        if self.pause is not None and not self.state.is_terminal:
            return self.pause.trigger
        state = self.state
        spec = SPEC[state]
        if spec.idle is not None and not self.prompt_pending:
            return spec.idle
        if spec.next is None:
            raise H2oStateError(f"the conversation already ended ({state.value})", phase=state)
        dest = destination(state, spec.next, self._holds)
        if dest is not None and SPEC[dest].needs_prompt and not self.prompt_pending:
            raise H2oStateError(f"no prompt queued for the {dest.value} step; pass one to step()", phase=state)
        return spec.next

    def describe_next(self) -> str:
        """What the next step will send, with secrets redacted (for ``--step``)."""
        trigger = self.next_trigger()
        state = self.state
        base = redact(self.rt.requester.base_url)
        if SPEC[state].reads and self.pause is None:  # (paused in the stream: its ending is next)
            return "read the answer's stream to its final event"
        dest = destination(state, trigger, self._holds)
        if self.pause is not None and (dest is None or SPEC[dest].request is None):
            return f"end: nothing to send (to {dest.value if dest else trigger})"
        if trigger == SPEC[state].idle and (dest is None or SPEC[dest].request is None):
            return "end"
        if dest is not None and SPEC[dest].request is None and SPEC[dest].rests:  # an attached conversation's start
            return f"nothing to send: the conversation exists on the server (to {dest.value})"
        if dest is None or SPEC[dest].request is None:
            return "open the answer's stream" if dest is not None and SPEC[dest].reads else trigger
        method, _, path = (request_line(dest, self.cid) or "").partition(" ")
        shown = (self.prompt or "") if self.rt.log_content else f"<{len(self.prompt or '')} chars>"
        body = self.rt.dialect.describe(dest, self.model, shown, self.parameters)
        skip = " (skipped)" if skipped(self, dest) else ""
        return f"{method} {base}{path}" + (f" {body}" if body else "") + skip

    def _holds(self, guard: str) -> bool:
        """The value of a guard the table names (``created``, ``has_error``)."""
        return bool(getattr(self, guard))

    def diagram(self, fmt: str = "mermaid") -> str:
        """The machine's diagram with this conversation's current state highlighted."""
        from ._diagram import render

        if fmt not in ("mermaid", "dot"):
            raise ValueError(f"unknown diagram format {fmt!r}; expected 'mermaid' or 'dot'")
        return render("mermaid" if fmt == "mermaid" else "dot", highlight=self.state)

    async def _guarded(self, work: Callable[[], Awaitable[None]], *, pause: bool = False) -> None:
        """Run ``work`` as this conversation's one running operation; any failure ends the conversation
        (``pause``: a failure that is no cancellation leaves its ending waiting for steps)."""
        self.busy = True
        try:
            await work()
        except BaseException as exc:
            if not (pause and not isinstance(exc, _CANCELLED) and self._pause_at(exc)):
                await self._abort(exc)
            raise
        finally:
            self.busy = False

    def _pause_at(self, exc: BaseException) -> bool:
        """Start the ending of a failed step paused (unless something else ends the conversation already)."""
        if self.state.is_terminal or self.ending is not None or self.transitioning or self.rt.requester.closing:
            return False  # (the client closing cut the step: nobody will step its ending)
        if self.error is None:
            self.error = exc
        pause = self.pause = _Pause()
        self.ending = self.rt.spawn(self._paused_end(pause))
        return True

    # -- the driver's half (``Conversation``)
    async def _fire(self, trigger: str) -> None:
        raise NotImplementedError

    def _end(self, trigger: str) -> asyncio.Task[Any]:
        raise NotImplementedError

    async def _run_end(self, trigger: str) -> None:
        raise NotImplementedError

    def _force_end(self, exc: BaseException) -> None:
        raise NotImplementedError

    async def _abort(self, exc: BaseException) -> None:
        raise NotImplementedError

    async def _start_turn(self) -> None:
        raise NotImplementedError

    async def _read_all(self) -> str:
        raise NotImplementedError
