"""A conversation's history and log: the record of each transition (made by the machine's
``prepare_event``/``finalize_event``), reported to the host's logger, observer and telemetry, and the
conversation's other log lines (``note``), never with a secret (``scrubbed``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from ._exceptions import H2oError, add_note
from ._log import NULL_LOGGER, scrub
from ._phase import Phase
from ._records import TransitionRecord
from ._table import request_line

if TYPE_CHECKING:
    from transitions.core import EventData

    from ._driver import Driver

__all__ = ["finalize", "note", "prepare", "record_abandoned", "report", "scrubbed"]


def prepare(d: Driver, event: EventData) -> None:
    """A transition starts: its clock (``finish`` is charged with the time spent reading the stream since
    ``stream`` was entered), and nothing it has not done yet."""
    t = d.transition
    t.t0 = d.turn.stream_t0 if event.event.name == "finish" else time.perf_counter()
    t.status = None
    t.headers = None
    t.skipped = False
    t.retries = 0
    t.source = d.state


def finalize(d: Driver, event: EventData) -> None:
    """A transition ended (also when a callback raised): its record, in the history and reported."""
    if event.transition is None:
        return
    t, conv = d.transition, d.conv
    err = event.error
    why = err if err is not None or event.event.name != "abort" else conv.error  # what the abort is for
    record = TransitionRecord(
        source=t.source,
        dest=d.state,
        trigger=event.event.name,
        duration_ms=(time.perf_counter() - t.t0) * 1000.0,
        status=t.status,
        error=None if why is None else describe(why),
        skipped=t.skipped,
        conversation_id=conv.cid,
        request=request_line(d.state, conv.cid) if d.state is not t.source else None,
        retries=t.retries,
    )
    conv.records.append(record)
    if d.state.is_terminal:
        d.on_terminal()
    report(d, record, failed=err is not None)


def record_abandoned(d: Driver, source: Phase, exc: BaseException) -> TransitionRecord:
    """The record of an ending that failed or was cancelled (the machine was set to ``failed``)."""
    record = TransitionRecord(source, Phase.FAILED, "abandon", 0.0, error=type(exc).__name__,
                              conversation_id=d.conv.cid)
    d.conv.records.append(record)
    return record


def report(d: Driver, record: TransitionRecord, *, failed: bool) -> None:
    """Log the transition and hand it to the observer. A log sink or observer that raises is noted once
    on the conversation's error, never allowed to stop the machine."""
    conv, rt = d.conv, d.rt
    try:
        if conv.log is not NULL_LOGGER:
            fields = record.as_dict()
            if failed:
                conv.log.warning("transition_failed", **fields)
            else:
                conv.log.debug("transition", **fields)
        observer = rt.observer
        if observer is not None:
            observer(record)
        telemetry = rt.telemetry
        if telemetry is not None:
            telemetry.on_transition(d, record)
    except Exception as exc:  # the host's sink failed: the machine goes on
        if conv.error is not None:
            add_note(conv.error, f"h2o-fsm: logging a transition failed: {type(exc).__name__}")


def note(d: Driver, event: str, level: str = "warning", **fields: object) -> None:
    """Log about this conversation; a failing log sink is ignored here."""
    with contextlib.suppress(Exception):
        getattr(d.conv.log, level)(event, **fields)


def scrubbed(d: Driver, text: str) -> str:
    """``text`` (something the server sent) without our secrets: cookie values, proxy credentials."""
    return scrub(text, (*d.rt.requester.secrets, *d.conv.session.cookies.values()))


def describe(err: BaseException) -> str:
    """What a record says of an error: never its text unless it is ours (it may hold anything)."""
    if isinstance(err, H2oError):
        return f"{type(err).__name__}: {err.message}"
    if isinstance(err, asyncio.CancelledError):
        return "CancelledError: cancelled by the caller (its cancel() or its own deadline)"
    if isinstance(err, asyncio.TimeoutError):  # not ours (ours are H2oTimeoutError): the caller's deadline
        return "TimeoutError: the caller's deadline passed"
    return type(err).__name__  # its text may hold anything (a header value, a cookie): never logged
