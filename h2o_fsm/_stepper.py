"""The stepper: drive a conversation one state at a time (``conv.step()``), and say what comes next.

Every decision is read from the table (``_table``): the trigger of a step is the state's ``next``
(or its ``idle`` trigger when no prompt is queued), a state that ``reads`` is read to its end in
one step, a state that ``needs_prompt`` refuses to be entered without one, and the description of
the next request is the destination's ``request`` with its dialect's body.

A step that fails leaves the conversation at the failure, its ending pending (the server's state then is
what one debugs): the ending task exists already, the client owns it, and it waits for the next
``step()`` before each of its steps; anything else that ends the conversation (leaving its block,
``aclose()``, a cancellation, the client's end) lets it run to its end at once (``Pause.release``).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ._aio import wait_owned
from ._driver import Pause
from ._exceptions import H2oStateError
from ._history import scrubbed
from ._log import redact, shown_headers
from ._records import StepResult
from ._steps import skipped
from ._table import SPEC, destination, request_line

if TYPE_CHECKING:
    from ._driver import Driver
    from ._protocol import Messages

__all__ = ["describe_next", "next_trigger", "queue", "step"]


async def step(d: Driver, prompt: str | Messages | None = None) -> StepResult:
    """Run exactly one state's step of ``d`` and return what it did (``Conversation.step``)."""
    if prompt is not None:
        queue(d, prompt)
    state = d.state
    if state.is_terminal:
        raise H2oStateError(f"the conversation already ended ({state.value})", phase=state)
    if d.busy:
        raise H2oStateError("a turn is running on this conversation", phase=state)
    trigger = next_trigger(d)
    if d.pause is not None:
        return await _step_ending(d, d.pause, trigger)
    spec = SPEC[state]
    t0 = time.perf_counter()
    text: str | None = None
    before = len(d.conv.records)

    async def one_step() -> None:
        nonlocal text
        if trigger == spec.idle:
            await wait_owned(d.end(trigger), d.rt.abandoned)
            return
        if spec.rests:
            await d.start_turn()  # a new turn: its own deadline
        if spec.reads:
            text = await d.read_all()
        await d.fire(trigger)

    await d.guarded(one_step, lambda exc: _pause_at(d, exc))  # one step at a time, and no turn meanwhile
    return _result(d, trigger, before, t0, text)


def _result(d: Driver, trigger: str, before: int, t0: float, text: str | None = None) -> StepResult:
    new = d.conv.records[before:]
    last = next((r for r in new if r.trigger == trigger), new[0] if new else None)  # not a tail record
    headers = d.transition.headers
    return StepResult(
        state=d.state,
        trigger=trigger,
        request=last.request if last else None,
        status=last.status if last else None,
        elapsed_ms=(time.perf_counter() - t0) * 1000.0,
        skipped=last.skipped if last else False,
        text=text,
        headers=() if headers is None or last is None or last.status is None
        else shown_headers(headers, lambda text: scrubbed(d, text)),
    )


async def _step_ending(d: Driver, pause: Pause, trigger: str) -> StepResult:
    """One step of an ending paused at a failure; it runs in the client's task (a cancelled caller
    does not cut it: the rest of the ending follows)."""
    t0, before = time.perf_counter(), len(d.conv.records)
    ending = d.ending
    assert ending is not None
    d.busy = True
    try:
        pause.done.clear()
        pause.go.set()
        done = asyncio.ensure_future(pause.done.wait())
        try:
            await asyncio.wait([done, ending], return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
    finally:
        d.busy = False
    return _result(d, trigger, before, t0)


def _pause_at(d: Driver, exc: BaseException) -> bool:
    """Start the ending of a failed step paused (unless something else ends the conversation already)."""
    if d.state.is_terminal or d.ending is not None or d.transitioning or d.rt.requester.closing:
        return False  # (the client closing cut the step: nobody will step its ending)
    if d.conv.error is None:
        d.conv.error = exc
    pause = d.pause = Pause()
    d.ending = d.rt.spawn(_paused_end(d, pause))
    return True


async def _paused_end(d: Driver, pause: Pause) -> None:
    """The ending of a conversation whose step failed: one step per ``go``, the rest at ``release``."""
    loop = asyncio.get_running_loop()
    try:
        while not d.state.is_terminal:
            closing = d.rt.requester.closing  # the client closes: it ends what it did not release
            if not closing:
                await pause.go.wait()
            pause.go.clear()
            if pause.released or closing:
                await d.run_end(pause.trigger)
                return
            d.end_by = loop.time() + d.rt.timeouts.cleanup  # the pause was the person's, not the ending's
            await d.fire(pause.trigger)
            pause.trigger = SPEC[d.state].next or ""
            pause.done.set()
    except BaseException as exc:  # the machine still ends, whatever happened (cancelled at a pause too)
        d.force_end(exc)
        if isinstance(exc, asyncio.CancelledError):
            raise
    finally:
        d.pause = None
        pause.done.set()


def queue(d: Driver, prompt: str | Messages) -> None:
    """Set the prompt the next ``send`` step will post (validated now)."""
    d.set_prompt(*d.validate(prompt))
    d.turn.prompt_pending = True


def next_trigger(d: Driver) -> str:
    """The trigger :func:`step` would fire now."""
    if d.pause is not None and not d.state.is_terminal:
        return d.pause.trigger
    state = d.state
    spec = SPEC[state]
    if spec.idle is not None and not d.turn.prompt_pending:
        return spec.idle
    if spec.next is None:
        raise H2oStateError(f"the conversation already ended ({state.value})", phase=state)
    dest = destination(state, spec.next, d.holds)
    if dest is not None and SPEC[dest].needs_prompt and not d.turn.prompt_pending:
        raise H2oStateError(f"no prompt queued for the {dest.value} step; pass one to step()", phase=state)
    return spec.next


def describe_next(d: Driver) -> str:
    """What the next step will send, with secrets redacted (for ``--step``)."""
    trigger = next_trigger(d)
    state, rt, conv, pause = d.state, d.rt, d.conv, d.pause
    base = redact(rt.requester.base_url)
    if SPEC[state].reads and pause is None:  # (paused in the stream: its ending is next)
        return "read the answer's stream to its final event"
    dest = destination(state, trigger, d.holds)
    if pause is not None and (dest is None or SPEC[dest].request is None):
        return f"end: nothing to send (to {dest.value if dest else trigger})"
    if trigger == SPEC[state].idle and (dest is None or SPEC[dest].request is None):
        return "end"
    if dest is not None and SPEC[dest].request is None and SPEC[dest].rests:  # an attached conversation's start
        return f"nothing to send: the conversation exists on the server (to {dest.value})"
    if dest is None or SPEC[dest].request is None:
        return "open the answer's stream" if dest is not None and SPEC[dest].reads else trigger
    method, _, path = (request_line(dest, conv.cid) or "").partition(" ")
    prompt = d.turn.prompt or ""
    shown = prompt if rt.log_content else f"<{len(prompt)} chars>"
    body = rt.dialect.describe(dest, conv.model, shown, conv.parameters)
    skip = " (skipped)" if skipped(d, dest) else ""
    return f"{method} {base}{path}" + (f" {body}" if body else "") + skip
