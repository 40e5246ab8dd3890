"""What each state does: the machine's ``on_enter``/``on_exit`` callbacks, one per state of the table.

Each callback receives transitions' event data whose ``model`` is the conversation
(:class:`~h2o_fsm._model.ConversationModel`); it performs its state's request through the client's
requester, with the body its dialect builds, bounded by the state's timeout from the table. An
optional state the dialect does not use records itself as skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from ._aio import Deadline, wait_owned
from ._dialects import Body
from ._exceptions import H2oCleanupError, H2oError, H2oProtocolError, H2oStatusError, H2oTransportError
from ._model import ConversationModel
from ._phase import Phase
from ._reattach import reattach
from ._table import SPEC, seconds
from ._transport import not_sent

if TYPE_CHECKING:
    import httpx
    from transitions.core import EventData

__all__ = [
    "SKIP_GUARDS", "create", "delete", "fetch", "leave_stream", "reattach", "send", "settings", "skipped", "stop",
    "stream",
]

_NO_BODY: Final = Body()


def _model(event: EventData) -> ConversationModel:
    model = event.model
    assert isinstance(model, ConversationModel)
    return model


# ---------------------------------------------------------------------------------------------- skips
SKIP_GUARDS: Final[Mapping[str, Callable[[ConversationModel], bool]]] = {
    "settings_sent": lambda m: m.session.settings_model == m.model,  # this session sent them already
    "nothing_runs": lambda m: not m.generating or m.cid is None,  # no generation left running
}
"""The table's ``skip`` guards by name."""


def skipped(m: ConversationModel, phase: Phase) -> bool:
    """Whether ``phase``'s step has nothing to do for ``m``: the one rule the step runner and the stepper
    evaluate (optional and not performed by this client, its dialect's ``skips``, the row's guard)."""
    spec = SPEC[phase]
    if spec.optional and (phase not in m.rt.performs or m.rt.dialect.skips(phase, m.dstate)):
        return True
    return spec.skip is not None and SKIP_GUARDS[spec.skip](m)


def _skip(m: ConversationModel, phase: Phase) -> bool:
    """Whether the step is skipped, recorded as such on the transition."""
    m.skipped = skipped(m, phase)
    return m.skipped


async def _call(m: ConversationModel, phase: Phase, body: Body = _NO_BODY, **kw: Any) -> httpx.Response:
    """Send ``phase``'s request: the statuses its row accepts, the status (and retries) recorded on the
    transition."""

    def retried() -> None:
        m.retries += 1

    response = await m.rt.requester.call(phase, session=m.session, body=body, ok=SPEC[phase].ok, cid=m.cid,
                                         on_retry=retried, **kw)
    m.status, m.headers = response.status_code, response.headers
    return response


def _share(m: ConversationModel, phase: Phase) -> float:
    """The loop time by which cleanup step ``phase`` ends: its row's share of what the ending has left."""
    now = asyncio.get_running_loop().time()
    return now + max(0.0, m.end_by - now) * SPEC[phase].budget


async def _exchange(
    m: ConversationModel, phase: Phase, body: Body = _NO_BODY, *, until: float | None, read: bool = True
) -> bytes:
    """The generic request step: ``phase``'s request bounded by its row's timeout and ``until`` (the
    turn's deadline, or a cleanup step's share of the ending), its answer read whole (``read``) or
    drained (whatever it says is not needed, and an error while reading it just ends it)."""
    rq = m.rt.requester
    async with rq.step(phase, until, m.cid):
        response = await _call(m, phase, body)
        if read:
            return await rq.read_body(response, phase, m.cid)
        await rq.drain(response)
        return b""


def _protocol_error(m: ConversationModel, phase: Phase, exc: ValueError) -> H2oProtocolError:
    return H2oProtocolError(m.scrubbed(str(exc)), phase=phase, status=200, conversation_id=m.cid)


# ---------------------------------------------------------------------------------------------- settings
async def settings(event: EventData) -> None:
    m = _model(event)
    if not m.model and m.rt.default_model is not None:  # the server's default model, looked up once per client
        m.model = await m.rt.default_model()
    if _skip(m, Phase.SETTINGS):
        return
    async with m.session.lock:
        if _skip(m, Phase.SETTINGS):  # another conversation sent them meanwhile
            return
        async with m.rt.requester.step(Phase.SETTINGS, m.deadline, None):
            await _post_settings(m)


async def _post_settings(m: ConversationModel) -> None:
    rq = m.rt.requester
    response = await _call(m, Phase.SETTINGS, m.rt.dialect.settings_body(m.model))
    html = response.status_code == 200 and "html" in response.headers.get("content-type", "")
    await rq.drain(response)
    if html:  # chat-ui answers 303 (2023) or 200 with no body (today): an HTML page is a proxy's
        raise H2oProtocolError("settings answered an HTML page (a proxy's?), not chat-ui's answer",
                               phase=Phase.SETTINGS, status=200)
    m.session.settings_model = m.model


# ---------------------------------------------------------------------------------------------- create
async def create(event: EventData) -> None:
    m = _model(event)
    # In a task the client owns: a caller cancelled meanwhile gets control at once, and the task still
    # learns the id, so the ending (which waits for it) can delete the conversation.
    task = m.create_task = m.rt.spawn(_create(m))
    await wait_owned(task, m.rt.abandoned)


async def _create(m: ConversationModel) -> None:
    session = m.session
    if not session.established:  # the first answer starts the session (its cookie): the others wait for it
        async with session.lock:
            if not session.established:
                await _create_in(m)
                return
    await _create_in(m)


async def _create_in(m: ConversationModel) -> None:
    rt, rq = m.rt, m.rt.requester
    body = rt.dialect.create_body(m.dstate, m.model)
    rq.refuse_late(Phase.CREATE, m.deadline, None)  # refused here: nothing was sent, nothing is counted
    try:
        async with rq.step(Phase.CREATE, m.deadline, None):
            try:
                response = await _call(m, Phase.CREATE, body)
            except H2oStatusError as exc:
                if exc.status is None or not rt.dialect.renews_session(Phase.CREATE, exc.status):
                    raise
                # The server forgot this session (store wiped, session expired): accept the settings
                # again in the session it just started, then create once more.
                m.note("session_renewed", status=exc.status)
                m.session.settings_model = None
                await _post_settings(m)
                response = await _call(m, Phase.CREATE, body)
            raw = await rq.read_body(response, Phase.CREATE, None)
    except (H2oTransportError, asyncio.CancelledError) as exc:
        if not not_sent(exc):  # it may exist on the server, and we can never name it: reported
            rt.undeleted += 1
            m.note("create_outcome_unknown", error=type(exc).__name__)
        raise
    try:
        cid = rt.dialect.after_create(m.dstate, raw)
    except ValueError as exc:
        m.cid = getattr(exc, "conversation_id", None)  # a valid id beside a malformed rest: still deleted
        raise _protocol_error(m, Phase.CREATE, exc) from exc
    m.cid = cid
    with contextlib.suppress(Exception):  # a failing log sink never stops the machine
        m.log = m.log.bind(conversation_id=cid)
    journal = rt.journal
    if journal is not None:
        try:
            await journal.add_async(rq.base_url, cid, m.session.cookies, dialect=rt.dialect.name)
        except Exception as exc:  # crash safety lost for this one; the conversation goes on
            m.note("journal_failed", error=type(exc).__name__)


# ---------------------------------------------------------------------------------------------- fetch
async def fetch(event: EventData) -> None:
    m = _model(event)
    if _skip(m, Phase.FETCH):
        return
    raw = await _exchange(m, Phase.FETCH, until=m.deadline)
    try:
        m.rt.dialect.after_fetch(m.dstate, raw)
    except ValueError as exc:
        raise _protocol_error(m, Phase.FETCH, exc) from exc


# ---------------------------------------------------------------------------------------------- send
async def send(event: EventData) -> None:
    m = _model(event)
    assert m.cid is not None and m.prompt is not None
    rt, rq = m.rt, m.rt.requester
    m.dstate.parser = None  # this turn's stream has not started (a stop before it delivered nothing)
    body = rt.dialect.send_body(m.dstate, m.prompt, m.parameters)
    generation = rt.dialect.generation(m.dstate) if Phase.STOP in rt.performs else ""  # only what can be stopped
    if rt.journal is not None and generation:  # what a sweep stops if this process dies mid-answer
        try:
            await rt.journal.running_async(rq.base_url, m.cid, generation, m.session.cookies)
        except Exception as exc:  # bounded; the turn goes on
            m.note("journal_failed", error=type(exc).__name__)
    if rt.log_content:
        m.note("send_prompt", level="debug", prompt=m.prompt, parameters=m.parameters)
    m.prompt_pending = False
    m.generating = True  # from here the server may be generating, even if we never see its answer
    async with rq.step(Phase.SEND, m.deadline, m.cid):
        try:
            response = await _call(m, Phase.SEND, body)
        except H2oStatusError:
            m.generating = False  # refused: nothing runs
            raise
    m.send_status = response.status_code
    if response.headers.get("content-type", "").startswith("text/html"):
        m.generating = False  # a proxy's page: nothing is generating behind it
        snippet = await rq.snippet(response, 120, m.session)
        raise H2oProtocolError(f"expected a stream, got an HTML page: {snippet!r}", phase=Phase.SEND,
                               status=response.status_code, conversation_id=m.cid)
    m.response = response


# ---------------------------------------------------------------------------------------------- stream
async def stream(event: EventData) -> None:
    m = _model(event)
    m.parser = m.dstate.parser = m.rt.dialect.new_parser(m.rt.limits.max_line_bytes)
    m.stream_t0 = time.perf_counter()


async def leave_stream(event: EventData) -> None:
    m = _model(event)
    m.rt.dialect.after_turn(m.dstate)
    response, m.response = m.response, None
    if response is not None:
        await response.aclose()


# ---------------------------------------------------------------------------------------------- stop
async def stop(event: EventData) -> None:
    m = _model(event)
    if _skip(m, Phase.STOP):  # nothing runs
        return
    try:  # best effort: bounded, and never hiding the error that ended the turn
        await _exchange(m, Phase.STOP, m.rt.dialect.stop_body(m.dstate), until=_share(m, Phase.STOP), read=False)
        m.generating = False
    except H2oError as exc:
        m.status = exc.status
        m.note("stop_generating_failed", error=exc.message)


# ---------------------------------------------------------------------------------------------- delete
async def delete(event: EventData) -> None:
    m = _model(event)
    cid = m.cid
    assert cid is not None
    rt, rq = m.rt, m.rt.requester
    end_by = _share(m, Phase.DELETE)
    left = max(0.0, end_by - asyncio.get_running_loop().time())  # what the ending's budget still allows
    try:
        async with Deadline(end_by):
            budget = max(0.0, left - seconds(rt.timeouts, SPEC[Phase.DELETE].timeout or "delete"))
            response = await _call(m, Phase.DELETE, budget=budget, each=True)
            await rq.drain(response)
    except (asyncio.TimeoutError, H2oError) as exc:
        reason = exc.message if isinstance(exc, H2oError) else f"did not finish within {rt.timeouts.cleanup:g}s"
        err = H2oCleanupError(f"DELETE failed: {reason}", phase=Phase.DELETE, detail=reason,
                              status=getattr(exc, "status", None), conversation_id=cid)
        err.__cause__ = exc
        m.cleanup_error = err
        rt.undeleted += 1
        m.note("delete_failed", error=err.message)
        return
    journal = rt.journal
    if journal is not None:
        try:
            await journal.remove_async(rq.base_url, cid)
        except Exception as exc:  # the sweep will find it deleted (404) later
            m.note("journal_failed", error=type(exc).__name__)
