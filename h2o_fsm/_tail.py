"""After the answer: the stream's tail (the one-shot's scope that returns at the answer is ``_turn``'s).

The tail is what the server writes once the answer is complete, until it ends the stream (chat-ui
persists the run, then writes ``status: finished``; the 2023 server ends after its final event). It is
read in a task the client owns (a one-shot's by its ending, which follows the answer at once), under
the stream's limits and within half of ``Timeouts.cleanup``, while the caller already has its answer;
its outcome is one ``tail`` record (history, log, trace); a failure there is counted
(``H2oClient.tail_errors``) and logged, never raised to that caller. The next turn and the ending (the
DELETE) start after it, so nothing overlaps the server's run.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Final, NamedTuple, cast

from . import _steps
from ._aio import Deadline
from ._events import Event, StreamError
from ._exceptions import H2oError, H2oLimitError, H2oProtocolError, H2oTimeoutError, H2oUpstreamError
from ._history import report, scrubbed
from ._phase import Phase
from ._records import TransitionRecord
from ._stream import StreamSyntaxError
from ._table import SPEC
from ._translate import translate

if TYPE_CHECKING:
    import httpx
    from transitions.core import EventData

    from ._driver import Driver
    from ._stream import Parser

__all__ = ["TRIGGER", "Tail", "before_end", "before_turn", "end_steps", "settle", "start"]

TRIGGER: Final = "tail"  # the record's trigger: not a transition of the table (the state stays)
_STREAM = Phase.STREAM


class Tail(NamedTuple):
    """What is left of a stream once its answer is complete: the body still open, its parser, and the
    events that came after the final answer in the same chunk."""

    body: AsyncGenerator[bytes, None]
    response: httpx.Response
    parser: Parser
    rest: list[Event]


def start(d: Driver) -> None:
    """Read ``d.turn.tail`` (kept by the reader at the final answer) in a task the client owns."""
    tail, d.turn.tail = d.turn.tail, None
    if tail is not None:
        d.tail_task = d.rt.spawn(_run(d, tail))


async def settle(d: Driver) -> None:
    """Wait for the tail task, if one runs (it bounds itself); never raises but the caller's cancellation."""
    task = d.tail_task
    if task is not None and not task.done():
        await asyncio.wait([task])


async def before_turn(d: Driver) -> None:
    """The next turn starts once the server finished the previous run, within the turn's deadline."""
    task = d.tail_task
    if task is None or task.done():
        return
    if d.turn.deadline is None:
        await asyncio.wait([task])
        return
    try:
        async with Deadline(d.turn.deadline):
            await asyncio.wait([task])
    except asyncio.TimeoutError:
        raise H2oTimeoutError("the conversation's deadline passed while the previous answer's stream ended",
                              phase=_STREAM, conversation_id=d.conv.cid) from None


async def before_end(d: Driver) -> None:
    """The ending (its DELETE) starts once the tail is over; a one-shot's tail is read here (the ending
    follows its answer at once: one task less). A cancellation from outside the client (the event loop
    shutting down: ``asyncio.run`` cancels every task left) cuts the tail, and the ending goes on: that
    cancellation is not the client's (``aclose()`` marks the endings it gives up on)."""
    tail = d.turn.tail
    if tail is not None:  # not started: a one-shot's answer, or a turn that failed after its answer
        d.turn.tail = None
        if not (d.one_shot and SPEC[d.state].rests):
            await close_tail(tail)
            tail = None
    task = d.tail_task  # (None for a one-shot: its tail is never a task's)
    try:
        if tail is not None:  # parks at its start (a loop shutting down finds the ending there, recorded),
            await _run(d, tail, park=True)  # and closes the tail however it ends
        elif task is not None and not task.done():
            await asyncio.wait([task])
        else:  # one suspension all the same: a loop shutting down right now finds the ending here, not later
            await asyncio.sleep(0)  # in its DELETE
    except asyncio.CancelledError:
        if not _from_outside(d):
            raise
        if task is not None:
            task.cancel()
            await asyncio.wait([task])


async def end_steps(d: Driver, trigger: str) -> None:
    """Fire ``trigger``, then each state's ``next`` until a terminal state. When a cancellation from outside
    the client (the event loop shutting down) cuts a cleanup step's request, that step runs once more: its
    request is idempotent (a DELETE that had arrived answers 404, which counts as deleted)."""
    again = True
    while True:
        try:
            await d.fire(trigger)
        except asyncio.CancelledError:
            callback = SPEC[d.state].on_enter
            if not (again and SPEC[d.state].cleanup and callback is not None and _from_outside(d)):
                raise
            again = False
            d.transitioning = True
            try:
                await getattr(_steps, callback)(cast("EventData", types.SimpleNamespace(model=d)))
            finally:
                d.transitioning = False
        if d.state.is_terminal:
            return
        trigger = SPEC[d.state].next or ""


def _from_outside(d: Driver) -> bool:
    """Whether the cancellation the current task just got came from outside the client (not an ending
    ``aclose()`` gave up on); if so the task is no longer being cancelled (Python 3.11+: uncancelled)."""
    me = asyncio.current_task()
    if me is None or me in d.rt.abandoned:
        return False
    uncancel = getattr(me, "uncancel", None)
    if uncancel is not None:
        uncancel()
    return True


async def _run(d: Driver, tail: Tail, park: bool = False) -> None:
    """Read ``tail`` to the end of the stream, close it, record how it went. Raises nothing but a
    cancellation (the client cut it short: closing, or the event loop shutting down)."""
    t0 = time.perf_counter()
    seconds = d.rt.timeouts.cleanup / 2
    error: str | None = None
    try:
        if park:
            await asyncio.sleep(0)
        await _read(d, tail, asyncio.get_running_loop().time() + seconds)
    except asyncio.CancelledError:
        error = "CancelledError"
        raise
    except Exception as exc:
        err = _classify(d, exc, seconds)
        error = scrubbed(d, f"{type(err).__name__}: {err.message}")
        d.rt.tail_errors += 1
    finally:
        await close_tail(tail)
        record = TransitionRecord(d.state, d.state, TRIGGER, (time.perf_counter() - t0) * 1000.0, error=error,
                                  conversation_id=d.conv.cid)
        d.conv.records.append(record)
        report(d, record, failed=error is not None)


async def close_tail(tail: Tail) -> None:
    """Close what is left of the stream (idempotent; raises nothing but a cancellation)."""
    for closing in (tail.body.aclose, tail.response.aclose):
        try:
            await closing()
        except Exception:
            continue


async def _read(d: Driver, tail: Tail, until: float) -> None:
    parser, body, max_bytes = tail.parser, tail.body, d.rt.limits.max_stream_bytes
    async with Deadline(until):
        _after_answer(tail.rest)
        while True:
            try:
                chunk = await body.__anext__()
            except StopAsyncIteration:
                break
            _after_answer(parser.feed(chunk))
            if parser.bytes_seen > max_bytes:
                raise H2oLimitError(f"stream exceeded {max_bytes} bytes", phase=_STREAM)
        _after_answer(parser.close())


def _after_answer(events: list[Event]) -> None:
    for ev in events:
        if type(ev) is StreamError:
            raise H2oUpstreamError(f"the server reported an error after the answer: {ev.message}", phase=_STREAM,
                                   status=ev.status, error_type=ev.error_type)


def _classify(d: Driver, exc: Exception, seconds: float) -> H2oError:
    if isinstance(exc, StreamSyntaxError):
        return H2oProtocolError(f"after the answer: {exc}", phase=_STREAM, conversation_id=d.conv.cid)
    if isinstance(exc, asyncio.TimeoutError):
        return H2oTimeoutError(f"the stream did not end within {seconds:g}s after the answer", phase=_STREAM,
                               conversation_id=d.conv.cid)
    if isinstance(exc, H2oError):
        return exc
    return translate(exc, _STREAM, d.conv.cid, d.turn.send_status, "the stream's tail")
