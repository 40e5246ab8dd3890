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
import uuid
from typing import TYPE_CHECKING

from ._aio import Deadline, wait_owned
from ._exceptions import H2oCleanupError, H2oError, H2oProtocolError, H2oStatusError, H2oTransportError
from ._model import ConversationModel
from ._phase import Phase
from ._protocol import DELETE_OK
from ._transport import not_sent

if TYPE_CHECKING:
    from transitions.core import EventData

__all__ = ["create", "delete", "fetch", "leave_stream", "send", "settings", "stop", "stream"]


def _model(event: EventData) -> ConversationModel:
    model = event.model
    assert isinstance(model, ConversationModel)
    return model


def _skip(m: ConversationModel, phase: Phase) -> bool:
    """Whether this optional step is skipped for ``m`` (its dialect does not use it)."""
    if phase in m.rt.performs:
        return False
    m.skipped = True
    return True


def _skip_if(m: ConversationModel, nothing_to_do: bool) -> bool:
    m.skipped = nothing_to_do
    return nothing_to_do


# ---------------------------------------------------------------------------------------------- settings
async def settings(event: EventData) -> None:
    m = _model(event)
    session = m.session
    if _skip(m, Phase.SETTINGS) or _skip_if(m, session.settings_model == m.model):
        return
    async with session.lock:
        if _skip_if(m, session.settings_model == m.model):  # another conversation sent them meanwhile
            return
        async with m.rt.requester.step(Phase.SETTINGS, m.deadline, None):
            await _post_settings(m)


async def _post_settings(m: ConversationModel) -> None:
    rq = m.rt.requester
    body = m.rt.dialect.settings_body(m.model)
    response = await rq.call(Phase.SETTINGS, session=m.session, body=body, ok=range(200, 400))
    m.status = response.status_code
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
    body = rt.dialect.create_body(m.model, m.preprompt)
    rq.refuse_late(Phase.CREATE, m.deadline, None)  # refused here: nothing was sent, nothing is counted
    try:
        async with rq.step(Phase.CREATE, m.deadline, None):
            try:
                response = await rq.call(Phase.CREATE, session=m.session, body=body)
            except H2oStatusError as exc:
                if exc.status is None or exc.status != rt.dialect.welcome_gate:
                    raise
                # The server forgot this session (store wiped, session expired): accept the settings
                # again in the session it just started, then create once more.
                m.note("session_renewed", status=exc.status)
                m.session.settings_model = None
                await _post_settings(m)
                response = await rq.call(Phase.CREATE, session=m.session, body=body)
            m.status = response.status_code
            raw = await rq.read_body(response, Phase.CREATE, None)
    except (H2oTransportError, asyncio.CancelledError) as exc:
        if not not_sent(exc):  # it may exist on the server, and we can never name it: reported
            rt.undeleted += 1
            m.note("create_outcome_unknown", error=type(exc).__name__)
        raise
    try:
        cid, root = rt.dialect.parse_create(raw)
    except ValueError as exc:
        m.cid = getattr(exc, "conversation_id", None)  # a valid id beside a malformed rest: still deleted
        raise H2oProtocolError(m.scrubbed(str(exc)), phase=Phase.CREATE, status=200, conversation_id=m.cid) from exc
    m.cid, m.parent_id = cid, root
    with contextlib.suppress(Exception):  # a failing log sink never stops the machine
        m.log = m.log.bind(conversation_id=cid)
    journal = rt.journal
    if journal is not None:
        try:
            await journal.add_async(rq.base_url, cid, m.session.cookies)
        except Exception as exc:  # crash safety lost for this one; the conversation goes on
            m.note("journal_failed", error=type(exc).__name__)


# ---------------------------------------------------------------------------------------------- fetch
async def fetch(event: EventData) -> None:
    m = _model(event)
    if _skip(m, Phase.FETCH) or _skip_if(m, m.parent_id is not None):  # the create answer named the root
        return
    assert m.cid is not None
    rq = m.rt.requester
    async with rq.step(Phase.FETCH, m.deadline, m.cid):
        response = await rq.call(Phase.FETCH, session=m.session, cid=m.cid)
        m.status = response.status_code
        raw = await rq.read_body(response, Phase.FETCH, m.cid)
    try:
        m.parent_id = m.rt.dialect.parse_fetch(raw)
    except ValueError as exc:
        raise H2oProtocolError(m.scrubbed(str(exc)), phase=Phase.FETCH, status=200, conversation_id=m.cid) from exc


# ---------------------------------------------------------------------------------------------- send
async def send(event: EventData) -> None:
    m = _model(event)
    assert m.cid is not None and m.prompt is not None
    rt, rq = m.rt, m.rt.requester
    m.generation_id = str(uuid.uuid4()) if Phase.STOP in rt.performs else ""  # only what can be stopped
    body = rt.dialect.send_body(m.prompt, m.parameters, m.parent_id, m.generation_id)
    if rt.log_content:
        m.note("send_prompt", level="debug", prompt=m.prompt, parameters=m.parameters)
    m.prompt_pending = False
    m.generating = True  # from here the server may be generating, even if we never see its answer
    async with rq.step(Phase.SEND, m.deadline, m.cid):
        try:
            response = await rq.call(Phase.SEND, session=m.session, body=body, cid=m.cid)
        except H2oStatusError:
            m.generating = False  # refused: nothing runs
            raise
    m.status = m.send_status = response.status_code
    if response.headers.get("content-type", "").startswith("text/html"):
        m.generating = False  # a proxy's page: nothing is generating behind it
        snippet = await rq.snippet(response, 120, m.session)
        raise H2oProtocolError(f"expected a stream, got an HTML page: {snippet!r}", phase=Phase.SEND,
                               status=response.status_code, conversation_id=m.cid)
    m.response = response


# ---------------------------------------------------------------------------------------------- stream
async def stream(event: EventData) -> None:
    m = _model(event)
    m.parser = m.rt.dialect.new_parser(m.rt.limits.max_line_bytes)
    m.stream_t0 = time.perf_counter()


async def leave_stream(event: EventData) -> None:
    m = _model(event)
    m.parent_id = None  # chat-ui: the next turn hangs from the message this one created
    response, m.response = m.response, None
    if response is not None:
        await response.aclose()


# ---------------------------------------------------------------------------------------------- stop
async def stop(event: EventData) -> None:
    m = _model(event)
    cid = m.cid
    if _skip(m, Phase.STOP) or _skip_if(m, not m.generating or cid is None):  # nothing runs
        return
    assert cid is not None
    rq, body = m.rt.requester, m.rt.dialect.stop_body(m.generation_id or "")
    now = asyncio.get_running_loop().time()
    share = now + max(0.0, m.end_by - now) / 2  # the DELETE keeps at least half of the ending's budget
    try:  # best effort: bounded, and never hiding the error that ended the turn
        async with rq.step(Phase.STOP, share, cid):
            response = await rq.call(Phase.STOP, session=m.session, body=body, ok=(200, 202, 204, 404), cid=cid)
            m.status = response.status_code
            await rq.drain(response)
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
    left = max(0.0, m.end_by - asyncio.get_running_loop().time())  # what the ending's budget still allows
    try:
        async with Deadline(m.end_by):
            budget = max(0.0, left - rt.timeouts.delete)
            response = await rq.call(Phase.DELETE, session=m.session, ok=DELETE_OK, cid=cid, budget=budget, each=True)
            m.status = response.status_code
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
