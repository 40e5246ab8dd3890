"""What each state does: the machine's ``on_enter``/``on_exit`` callbacks, one per state of the table.

Each callback receives transitions' event data whose ``model`` (transitions' word) is the conversation's
:class:`~h2o_fsm._driver.Driver`; it performs its state's request through the client's
requester, with the body its dialect builds, bounded by the state's timeout from the table. An
optional state the dialect does not use records itself as skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, cast

from ._aio import Deadline, wait_owned
from ._dialects import Body
from ._exceptions import H2oCleanupError, H2oError, H2oProtocolError, H2oStatusError, H2oTransportError
from ._history import note, scrubbed
from ._phase import Phase
from ._reattach import reattach
from ._table import SPEC, seconds
from ._transport import not_sent

if TYPE_CHECKING:
    import httpx
    from transitions.core import EventData

    from ._driver import Driver

__all__ = [
    "SKIP_GUARDS", "create", "delete", "fetch", "leave_stream", "reattach", "send", "settings", "skipped", "stop",
    "stream",
]

_NO_BODY: Final = Body()


def _driver(event: EventData) -> Driver:
    return cast("Driver", event.model)


# ---------------------------------------------------------------------------------------------- skips
SKIP_GUARDS: Final[Mapping[str, Callable[[Driver], bool]]] = {
    "settings_sent": lambda d: d.conv.session.settings_model == d.conv.model,  # this session sent them already
    "nothing_runs": lambda d: not d.turn.generating or d.conv.cid is None,  # no generation left running
}
"""The table's ``skip`` guards by name."""


def skipped(d: Driver, phase: Phase) -> bool:
    """Whether ``phase``'s step has nothing to do for ``d``: the one rule the step runner and the stepper
    evaluate (optional and not performed by this client, its dialect's ``skips``, the row's guard)."""
    spec = SPEC[phase]
    if spec.optional and (phase not in d.rt.performs or d.rt.dialect.skips(phase, d.conv.dstate)):
        return True
    return spec.skip is not None and SKIP_GUARDS[spec.skip](d)


def _skip(d: Driver, phase: Phase) -> bool:
    """Whether the step is skipped, recorded as such on the transition."""
    d.transition.skipped = skipped(d, phase)
    return d.transition.skipped


async def _call(d: Driver, phase: Phase, body: Body = _NO_BODY, **kw: Any) -> httpx.Response:
    """Send ``phase``'s request: the statuses its row accepts, the status (and retries) recorded on the
    transition."""

    def retried() -> None:
        d.transition.retries += 1

    response = await d.rt.requester.call(phase, session=d.conv.session, body=body, ok=SPEC[phase].ok, cid=d.conv.cid,
                                         on_retry=retried, **kw)
    d.transition.status, d.transition.headers = response.status_code, response.headers
    return response


def _share(d: Driver, phase: Phase) -> float:
    """The loop time by which cleanup step ``phase`` ends: its row's share of what the ending has left."""
    now = asyncio.get_running_loop().time()
    return now + max(0.0, d.end_by - now) * SPEC[phase].budget


async def _exchange(
    d: Driver, phase: Phase, body: Body = _NO_BODY, *, until: float | None, read: bool = True
) -> bytes:
    """The generic request step: ``phase``'s request bounded by its row's timeout and ``until`` (the
    turn's deadline, or a cleanup step's share of the ending), its answer read whole (``read``) or
    drained (whatever it says is not needed, and an error while reading it just ends it)."""
    rq = d.rt.requester
    async with rq.step(phase, until, d.conv.cid):
        response = await _call(d, phase, body)
        if read:
            return await rq.read_body(response, phase, d.conv.cid)
        await rq.drain(response)
        return b""


def _protocol_error(d: Driver, phase: Phase, exc: ValueError) -> H2oProtocolError:
    return H2oProtocolError(scrubbed(d, str(exc)), phase=phase, status=200, conversation_id=d.conv.cid)


# ---------------------------------------------------------------------------------------------- settings
async def settings(event: EventData) -> None:
    d = _driver(event)
    if not d.conv.model and d.rt.default_model is not None:  # the server's default model, looked up once per client
        d.conv.model = await d.rt.default_model()
    if _skip(d, Phase.SETTINGS):
        return
    async with d.conv.session.lock:
        if _skip(d, Phase.SETTINGS):  # another conversation sent them meanwhile
            return
        async with d.rt.requester.step(Phase.SETTINGS, d.turn.deadline, None):
            await _post_settings(d)


async def _post_settings(d: Driver) -> None:
    rq = d.rt.requester
    response = await _call(d, Phase.SETTINGS, d.rt.dialect.settings_body(d.conv.model))
    html = response.status_code == 200 and "html" in response.headers.get("content-type", "")
    await rq.drain(response)
    if html:  # chat-ui answers 303 (2023) or 200 with no body (today): an HTML page is a proxy's
        raise H2oProtocolError("settings answered an HTML page (a proxy's?), not chat-ui's answer",
                               phase=Phase.SETTINGS, status=200)
    d.conv.session.settings_model = d.conv.model


# ---------------------------------------------------------------------------------------------- create
async def create(event: EventData) -> None:
    d = _driver(event)
    # In a task the client owns: a caller cancelled meanwhile gets control at once, and the task still
    # learns the id, so the ending (which waits for it) can delete the conversation.
    task = d.create_task = d.rt.spawn(_create(d))
    await wait_owned(task, d.rt.abandoned)


async def _create(d: Driver) -> None:
    session = d.conv.session
    if not session.established:  # the first answer starts the session (its cookie): the others wait for it
        async with session.lock:
            if not session.established:
                await _create_in(d)
                return
    await _create_in(d)


async def _create_in(d: Driver) -> None:
    rt, rq = d.rt, d.rt.requester
    conv, turn = d.conv, d.turn
    body = rt.dialect.create_body(conv.dstate, conv.model)
    rq.refuse_late(Phase.CREATE, turn.deadline, None)  # refused here: nothing was sent, nothing is counted
    try:
        async with rq.step(Phase.CREATE, turn.deadline, None):
            try:
                response = await _call(d, Phase.CREATE, body)
            except H2oStatusError as exc:
                if exc.status is None or not rt.dialect.renews_session(Phase.CREATE, exc.status):
                    raise
                # The server forgot this session (store wiped, session expired): accept the settings
                # again in the session it just started, then create once more.
                note(d, "session_renewed", status=exc.status)
                conv.session.settings_model = None
                await _post_settings(d)
                response = await _call(d, Phase.CREATE, body)
            raw = await rq.read_body(response, Phase.CREATE, None)
    except (H2oTransportError, asyncio.CancelledError) as exc:
        if not not_sent(exc):  # it may exist on the server, and we can never name it: reported
            rt.undeleted += 1
            note(d, "create_outcome_unknown", error=type(exc).__name__)
        raise
    try:
        cid = rt.dialect.after_create(conv.dstate, raw)
    except ValueError as exc:
        conv.cid = getattr(exc, "conversation_id", None)  # a valid id beside a malformed rest: still deleted
        raise _protocol_error(d, Phase.CREATE, exc) from exc
    conv.cid = cid
    with contextlib.suppress(Exception):  # a failing log sink never stops the machine
        conv.log = conv.log.bind(conversation_id=cid)
    journal = rt.journal
    if journal is not None:
        try:
            await journal.add_async(rq.base_url, cid, conv.session.cookies, dialect=rt.dialect.name)
        except Exception as exc:  # crash safety lost for this one; the conversation goes on
            note(d, "journal_failed", error=type(exc).__name__)


# ---------------------------------------------------------------------------------------------- fetch
async def fetch(event: EventData) -> None:
    d = _driver(event)
    if _skip(d, Phase.FETCH):
        return
    raw = await _exchange(d, Phase.FETCH, until=d.turn.deadline)
    try:
        d.rt.dialect.after_fetch(d.conv.dstate, raw)
    except ValueError as exc:
        raise _protocol_error(d, Phase.FETCH, exc) from exc


# ---------------------------------------------------------------------------------------------- send
async def send(event: EventData) -> None:
    d = _driver(event)
    conv, turn = d.conv, d.turn
    assert conv.cid is not None and turn.prompt is not None
    rt, rq = d.rt, d.rt.requester
    conv.dstate.parser = None  # this turn's stream has not started (a stop before it delivered nothing)
    body = rt.dialect.send_body(conv.dstate, turn.prompt, conv.parameters)
    generation = rt.dialect.generation(conv.dstate) if Phase.STOP in rt.performs else ""  # only what can be stopped
    if rt.journal is not None and generation:  # what a sweep stops if this process dies mid-answer
        try:
            await rt.journal.running_async(rq.base_url, conv.cid, generation, conv.session.cookies)
        except Exception as exc:  # bounded; the turn goes on
            note(d, "journal_failed", error=type(exc).__name__)
    if rt.log_content:
        note(d, "send_prompt", level="debug", prompt=turn.prompt, parameters=conv.parameters)
    turn.prompt_pending = False
    turn.generating = True  # from here the server may be generating, even if we never see its answer
    async with rq.step(Phase.SEND, turn.deadline, conv.cid):
        try:
            response = await _call(d, Phase.SEND, body)
        except H2oStatusError:
            turn.generating = False  # refused: nothing runs
            raise
    turn.send_status = response.status_code
    if response.headers.get("content-type", "").startswith("text/html"):
        turn.generating = False  # a proxy's page: nothing is generating behind it
        snippet = await rq.snippet(response, 120, conv.session)
        raise H2oProtocolError(f"expected a stream, got an HTML page: {snippet!r}", phase=Phase.SEND,
                               status=response.status_code, conversation_id=conv.cid)
    turn.response = response


# ---------------------------------------------------------------------------------------------- stream
async def stream(event: EventData) -> None:
    d = _driver(event)
    d.turn.parser = d.conv.dstate.parser = d.rt.dialect.new_parser(d.rt.limits.max_line_bytes)
    d.turn.stream_t0 = time.perf_counter()


async def leave_stream(event: EventData) -> None:
    d = _driver(event)
    d.rt.dialect.after_turn(d.conv.dstate)
    response, d.turn.response = d.turn.response, None
    if response is not None:
        await response.aclose()


# ---------------------------------------------------------------------------------------------- stop
async def stop(event: EventData) -> None:
    d = _driver(event)
    if _skip(d, Phase.STOP):  # nothing runs
        return
    try:  # best effort: bounded, and never hiding the error that ended the turn
        await _exchange(d, Phase.STOP, d.rt.dialect.stop_body(d.conv.dstate), until=_share(d, Phase.STOP), read=False)
        d.turn.generating = False
    except H2oError as exc:
        d.transition.status = exc.status
        note(d, "stop_generating_failed", error=exc.message)


# ---------------------------------------------------------------------------------------------- delete
async def delete(event: EventData) -> None:
    d = _driver(event)
    cid = d.conv.cid
    assert cid is not None
    rt, rq = d.rt, d.rt.requester
    end_by = _share(d, Phase.DELETE)
    left = max(0.0, end_by - asyncio.get_running_loop().time())  # what the ending's budget still allows
    try:
        async with Deadline(end_by):
            budget = max(0.0, left - seconds(rt.timeouts, SPEC[Phase.DELETE].timeout or "delete"))
            response = await _call(d, Phase.DELETE, budget=budget, each=True)
            await rq.drain(response)
    except (asyncio.TimeoutError, H2oError) as exc:
        reason = exc.message if isinstance(exc, H2oError) else f"did not finish within {rt.timeouts.cleanup:g}s"
        err = H2oCleanupError(f"DELETE failed: {reason}", phase=Phase.DELETE, detail=reason,
                              status=getattr(exc, "status", None), conversation_id=cid)
        err.__cause__ = exc
        d.conv.cleanup_error = err
        rt.undeleted += 1
        note(d, "delete_failed", error=err.message)
        return
    journal = rt.journal
    if journal is not None:
        try:
            await journal.remove_async(rq.base_url, cid)
        except Exception as exc:  # the sweep will find it deleted (404) later
            note(d, "journal_failed", error=type(exc).__name__)
