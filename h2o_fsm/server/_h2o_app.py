"""The 2023 "h2o" dialect of the emulator: docs/protocol.md's first half, as a Starlette app.

The ``hf-chat`` session cookie, conversations owned by their session, the CSRF (Referer) and
welcome-modal gates, settings as a form answered with 303, TGI-style streamed events and a final
event, DELETE (404 when unknown).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import secrets
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ._faults import Fault, StreamWire, stream_fault
from ._state import AbsoluteForm, Dropped, State, StoredConversation, apply_request_fault, error, generate

__all__ = ["create_h2o_app"]

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


@dataclasses.dataclass
class _StoredH2oConversation(StoredConversation):
    history: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def _event(
    token_id: int, text: str, *, special: bool = False, final: str | None = None, details: object = None
) -> bytes:
    payload = {
        "token": {"id": token_id, "text": text, "logprob": -0.25, "special": special},
        "generated_text": final,
        "details": details,
    }
    return b"data:" + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def create_h2o_app(st: State, routes: list[Route]) -> Starlette:
    """The 2023 dialect's app over ``st``; ``routes`` are added (the accounting view)."""
    cfg = st.config
    acct = st.accounting
    finish = st.finish

    def gate(request: Request, sid: str) -> Response | None:
        if not st.logged_in(request):
            return error(401, "You have to be logged in.", as_json=True)
        if cfg.require_settings and not st.sessions[sid].settings_accepted:
            return error(405, "You need to accept the welcome modal first", as_json=True)
        return None

    async def index(request: Request) -> Response:
        sid, new = st.session_of(request)
        return finish(request, HTMLResponse("<!doctype html><title>h2o-fsm local chat-ui emulator</title>"), sid, new)

    async def settings(request: Request) -> Response:
        sid, new = st.session_of(request)
        referer = request.headers.get("referer")
        origin = f"{request.url.scheme}://{request.url.netloc}"
        if not referer:
            return finish(request, error(403, "Non-JSON form requests need to have a referer", as_json=False), sid, new)
        ref = urlsplit(referer)
        if f"{ref.scheme}://{ref.netloc}" != origin and ref.netloc != request.headers.get("host"):
            return finish(request, error(403, "Referer is not from the same origin", as_json=False), sid, new)
        if not st.logged_in(request):
            return finish(request, error(401, "You have to be logged in.", as_json=False), sid, new)
        injected = await apply_request_fault(st.faults.take("settings"), as_json=False)
        if injected is not None:
            return finish(request, injected, sid, new)
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8", "replace"), True).items()}
        model = form.get("activeModel")
        if not isinstance(model, str) or model not in cfg.models:
            return finish(request, error(400, f"Invalid model: {model!r}", as_json=False), sid, new)
        sess = st.sessions[sid]
        sess.settings_accepted = form.get("ethicsModalAccepted") in ("true", "on")
        sess.active_model = model
        return finish(request, Response(status_code=303, headers={"Location": referer or "/"}), sid, new)

    async def create(request: Request) -> Response:
        sid, new = st.session_of(request)
        blocked = gate(request, sid)
        if blocked is not None:
            return finish(request, blocked, sid, new)
        fault = st.faults.take("create")
        injected = await apply_request_fault(fault, as_json=True)
        if injected is not None:
            return finish(request, injected, sid, new)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return finish(request, error(400, "Invalid JSON", as_json=True), sid, new)
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or model not in cfg.models:
            return finish(request, error(400, f"Invalid model: {model!r}", as_json=True), sid, new)
        cid = secrets.token_hex(12)
        st.conversations[cid] = _StoredH2oConversation(sid, model)
        failed = fault is not None and fault.kind == "create_then_error"
        acct.record_created(cid, answered_error=failed)
        if fault is not None and failed:
            answer = error(fault.status, "injected fault: created, then failed", as_json=True)
            return finish(request, answer, sid, new, cid)
        return finish(request, JSONResponse({"conversationId": cid}), sid, new, cid)

    async def send(request: Request) -> Response:
        sid, new = st.session_of(request)
        cid = request.path_params["cid"]
        blocked = gate(request, sid)
        if blocked is not None:
            return finish(request, blocked, sid, new, cid)
        conv = st.owned(sid, cid)
        if not isinstance(conv, _StoredH2oConversation):
            return finish(request, error(404, "Conversation not found", as_json=True), sid, new, cid)
        injected = await apply_request_fault(st.faults.take("send"), as_json=True)
        if injected is not None:
            return finish(request, injected, sid, new, cid)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return finish(request, error(400, "Invalid JSON", as_json=True), sid, new, cid)
        problem = _check_send(body)
        if problem:
            return finish(request, error(400, problem, as_json=True), sid, new, cid)
        params = body.get("parameters") or {}
        wanted = params.get("max_new_tokens", cfg.max_tokens)
        n = max(1, min(int(wanted) if isinstance(wanted, int) else cfg.max_tokens, cfg.max_tokens))
        conv.history.append(("user", body["inputs"]))
        tokens = generate(conv.history, n)
        fault = st.faults.take("stream")
        stream = _stream(conv, tokens, fault, cfg.token_delay, bool(params.get("details", True)))
        return finish(request, StreamingResponse(stream, media_type="text/event-stream"), sid, new, cid)

    async def delete(request: Request) -> Response:
        sid, new = st.session_of(request)
        cid = request.path_params["cid"]
        blocked = gate(request, sid)
        if blocked is not None:
            return finish(request, blocked, sid, new, cid)
        injected = await apply_request_fault(st.faults.take("delete"), as_json=True)
        if injected is not None:
            acct.record_delete_fault(cid)
            return finish(request, injected, sid, new, cid)
        if st.owned(sid, cid) is None:
            acct.record_delete_unknown(cid)
            return finish(request, error(404, "Conversation not found", as_json=True), sid, new, cid)
        del st.conversations[cid]
        acct.record_deleted(cid)
        return finish(request, Response(status_code=200), sid, new, cid)

    return Starlette(
        middleware=[Middleware(AbsoluteForm)],
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/settings", settings, methods=["POST"]),
            Route("/conversation", create, methods=["POST"]),
            Route("/conversation/{cid}", send, methods=["POST"]),
            Route("/conversation/{cid}", delete, methods=["DELETE"]),
            *routes,
        ],
    )


def _check_send(body: object) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    inputs = body.get("inputs")
    if not isinstance(inputs, str) or not inputs.strip():
        return "inputs must be a non-empty string"
    options = body.get("options")
    if not isinstance(options, dict):
        return "options missing"
    for key in ("id", "response_id"):
        value = options.get(key)
        if not isinstance(value, str) or not _UUID.match(value):
            return f"options.{key} must be a UUID"
    params = body.get("parameters")
    if params is not None and not isinstance(params, dict):
        return "parameters must be an object"
    if isinstance(params, dict) and "stream" in params:
        return "'stream' is not a generation parameter"
    return None


_WIRE = StreamWire(
    malformed=b'data:{"token": {"id": 1, "text": "oops"\n\n',
    error_event=lambda fault: b'data:{"error":"injected fault: model overloaded","error_type":"overloaded"}\n\n',
)


async def _stream(
    conv: _StoredH2oConversation, tokens: list[str], fault: Fault | None, delay: float, details: bool
) -> AsyncIterator[bytes]:
    for i in range(len(tokens) + 1):
        injected = stream_fault(fault, i, len(tokens), _WIRE)
        if injected is not None:
            if injected.stall:
                await asyncio.sleep(injected.stall)
            if injected.drop:
                raise Dropped("injected fault: connection dropped mid-stream")
            if injected.last is not None:
                yield injected.last
                return
        if i == len(tokens):
            break
        if delay:
            await asyncio.sleep(delay)
        yield _event(i + 1, tokens[i])
    answer = "".join(tokens)
    conv.history.append(("assistant", answer))
    final_details = {"finish_reason": "length", "generated_tokens": len(tokens), "seed": None} if details else None
    yield _event(2, "</s>", special=True, final=answer, details=final_details)
