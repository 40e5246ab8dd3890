"""A chat-ui compatible server (protocol emulator, no model): the Starlette app and its state.

It speaks ../PROTOCOL.md: the ``hf-chat`` session cookie, conversations owned by their session, the
CSRF and welcome-modal gates, settings as a form answered with 303, TGI-style streamed events and a
final event, DELETE (404 when unknown). Its text comes from a deterministic generator seeded by the
conversation's history — it is an emulator of the protocol, not a language model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import random
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .._protocol import DEFAULT_MODEL
from ._faults import Fault, FaultPlan

__all__ = ["Accounting", "RequestRecord", "ServerConfig", "create_app"]

_WORDS = tuple(
    (
        "the state machine keeps every conversation in order and deletes it when the work is done so "
        "nothing leaks a careful client checks each status reads each event and cleans up after failure "
        "tokens arrive one by one over a stream that may end early or carry an error"
    ).split()
)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_HTML = "<!doctype html><html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """How the emulator behaves.

    ``token_delay`` seconds between streamed tokens; ``max_tokens`` caps an answer (the request's
    ``max_new_tokens`` may ask for fewer); ``require_settings`` enables the welcome-modal gate (405).
    """

    models: tuple[str, ...] = (DEFAULT_MODEL, "h2oai/h2ogpt-gm-oasst1-en-2048-open-llama-13b")
    token_delay: float = 0.0
    max_tokens: int = 32
    require_settings: bool = True
    cookie_name: str = "hf-chat"
    secure_cookie: bool = False
    keep_request_log: bool = True
    request_log_size: int = 100_000  # the newest records are kept; counters are never truncated


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    status: int
    session: str
    conversation_id: str | None
    at: float


class Accounting:
    """What happened on the server, for tests to assert on. Thread-safe snapshots."""

    def __init__(self, request_log_size: int = 100_000) -> None:
        self._lock = threading.Lock()
        self.created = 0
        self.deleted = 0
        self.deleted_twice = 0
        self.live_ids: set[str] = set()
        self.gone_ids: set[str] = set()
        self.requests: deque[RequestRecord] = deque(maxlen=request_log_size)  # bounded in long runs
        self.requests_total = 0

    @property
    def live(self) -> int:
        with self._lock:
            return len(self.live_ids)

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "created": self.created,
                "deleted": self.deleted,
                "live": len(self.live_ids),
                "deleted_twice": self.deleted_twice,
                "requests": self.requests_total,
                "live_ids": sorted(self.live_ids),
            }

    def requests_for(self, method: str | None = None, path_prefix: str = "") -> list[RequestRecord]:
        with self._lock:
            return [
                r for r in self.requests if (method is None or r.method == method) and r.path.startswith(path_prefix)
            ]


@dataclasses.dataclass
class _Session:
    settings_accepted: bool = False
    active_model: str | None = None


@dataclasses.dataclass
class _Conversation:
    session: str
    model: str
    history: list[tuple[str, str]]


class _State:
    def __init__(self, config: ServerConfig, faults: FaultPlan, accounting: Accounting) -> None:
        self.config = config
        self.faults = faults
        self.accounting = accounting
        self.sessions: dict[str, _Session] = {}
        self.conversations: dict[str, _Conversation] = {}


def generate(history: list[tuple[str, str]], n_tokens: int) -> list[str]:
    """The emulator's deterministic "model": ``n_tokens`` word tokens seeded by the history."""
    seed = hashlib.sha256(json.dumps(history).encode()).digest()
    rng = random.Random(seed)
    return [(" " if i else "") + rng.choice(_WORDS) for i in range(n_tokens)]


def _event(
    token_id: int, text: str, *, special: bool = False, final: str | None = None, details: object = None
) -> bytes:
    payload = {
        "token": {"id": token_id, "text": text, "logprob": -0.25, "special": special},
        "generated_text": final,
        "details": details,
    }
    return b"data:" + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def create_app(
    config: ServerConfig | None = None, faults: FaultPlan | None = None, accounting: Accounting | None = None
) -> Starlette:
    """The Starlette app. ``app.state.h2o`` holds its config, faults and accounting."""
    config = config or ServerConfig()
    st = _State(config, faults or FaultPlan(), accounting or Accounting(config.request_log_size))
    cfg = st.config
    acct = st.accounting

    def session_of(request: Request) -> tuple[str, bool]:
        sid = request.cookies.get(cfg.cookie_name)
        if sid and sid in st.sessions:
            return sid, False
        sid = secrets.token_hex(16)
        st.sessions[sid] = _Session()
        return sid, True

    def finish(request: Request, response: Response, sid: str, new: bool, cid: str | None = None) -> Response:
        if new:
            response.set_cookie(cfg.cookie_name, sid, httponly=True, samesite="lax", secure=cfg.secure_cookie, path="/")
        if cfg.keep_request_log:
            record = RequestRecord(request.method, request.url.path, response.status_code, sid, cid, time.time())
            with acct._lock:
                acct.requests.append(record)
                acct.requests_total += 1
        else:
            with acct._lock:
                acct.requests_total += 1
        return response

    def error(status: int, message: str, *, as_json: bool) -> Response:
        if as_json:
            return JSONResponse({"error": message}, status_code=status)
        return PlainTextResponse(message, status_code=status)

    async def apply(fault: Fault | None, as_json: bool) -> Response | None:
        if fault is None:
            return None
        if fault.kind == "stall":
            await asyncio.sleep(fault.seconds)
            return None
        if fault.kind == "html":
            return HTMLResponse(_HTML, status_code=200)
        if fault.kind == "status":
            response = error(fault.status, f"injected fault: HTTP {fault.status}", as_json=as_json)
            if fault.retry_after is not None:
                response.headers["Retry-After"] = f"{fault.retry_after:g}"
            return response
        return None

    def gate(request: Request, sid: str) -> Response | None:
        if cfg.require_settings and not st.sessions[sid].settings_accepted:
            return error(405, "You need to accept the welcome modal first", as_json=True)
        return None

    async def index(request: Request) -> Response:
        sid, new = session_of(request)
        return finish(request, HTMLResponse("<!doctype html><title>h2o-fsm local chat-ui emulator</title>"), sid, new)

    async def settings(request: Request) -> Response:
        sid, new = session_of(request)
        referer = request.headers.get("referer")
        origin = f"{request.url.scheme}://{request.url.netloc}"
        if not referer:
            return finish(request, error(403, "Non-JSON form requests need to have a referer", as_json=False), sid, new)
        ref = urlsplit(referer)
        if f"{ref.scheme}://{ref.netloc}" != origin and ref.netloc != request.headers.get("host"):
            return finish(request, error(403, "Referer is not from the same origin", as_json=False), sid, new)
        injected = await apply(st.faults.take("settings"), as_json=False)
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
        sid, new = session_of(request)
        blocked = gate(request, sid)
        if blocked is not None:
            return finish(request, blocked, sid, new)
        fault = st.faults.take("create")
        injected = await apply(fault, as_json=True)
        if injected is not None:
            return finish(request, injected, sid, new)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return finish(request, error(400, "Invalid JSON", as_json=True), sid, new)
        model = body.get("model") if isinstance(body, dict) else None
        if model not in cfg.models:
            return finish(request, error(400, f"Invalid model: {model!r}", as_json=True), sid, new)
        cid = secrets.token_hex(12)
        st.conversations[cid] = _Conversation(sid, model, [])
        with acct._lock:
            acct.created += 1
            acct.live_ids.add(cid)
        if fault is not None and fault.kind == "create_then_error":
            failed = error(fault.status, "injected fault: created, then failed", as_json=True)
            return finish(request, failed, sid, new, cid)
        return finish(request, JSONResponse({"conversationId": cid}), sid, new, cid)

    def owned(sid: str, cid: str) -> _Conversation | None:
        conv = st.conversations.get(cid)
        return conv if conv is not None and conv.session == sid else None

    async def send(request: Request) -> Response:
        sid, new = session_of(request)
        cid = request.path_params["cid"]
        blocked = gate(request, sid)
        if blocked is not None:
            return finish(request, blocked, sid, new, cid)
        conv = owned(sid, cid)
        if conv is None:
            return finish(request, error(404, "Conversation not found", as_json=True), sid, new, cid)
        injected = await apply(st.faults.take("send"), as_json=True)
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
        response = StreamingResponse(stream, media_type="text/event-stream")
        return finish(request, response, sid, new, cid)

    async def delete(request: Request) -> Response:
        sid, new = session_of(request)
        cid = request.path_params["cid"]
        blocked = gate(request, sid)
        if blocked is not None:
            return finish(request, blocked, sid, new, cid)
        injected = await apply(st.faults.take("delete"), as_json=True)
        if injected is not None:
            return finish(request, injected, sid, new, cid)
        if owned(sid, cid) is None:
            with acct._lock:
                if cid in acct.gone_ids:
                    acct.deleted_twice += 1
            return finish(request, error(404, "Conversation not found", as_json=True), sid, new, cid)
        del st.conversations[cid]
        with acct._lock:
            acct.deleted += 1
            acct.live_ids.discard(cid)
            acct.gone_ids.add(cid)
        return finish(request, Response(status_code=200), sid, new, cid)

    async def accounting_view(request: Request) -> Response:
        return JSONResponse(acct.snapshot())

    app = Starlette(
        middleware=[Middleware(_AbsoluteForm)],
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/settings", settings, methods=["POST"]),
            Route("/conversation", create, methods=["POST"]),
            Route("/conversation/{cid}", send, methods=["POST"]),
            Route("/conversation/{cid}", delete, methods=["DELETE"]),
            Route("/_emulator/accounting", accounting_view, methods=["GET"]),
        ],
    )
    app.state.h2o = st
    return app


class _AbsoluteForm:
    """Serve requests sent *through* the emulator as an HTTP proxy (absolute-form targets such as
    ``POST http://name.invalid/settings``), so tests can prove a client's proxy setting is used."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(("http://", "https://")):
            target = urlsplit(path)
            scope = dict(scope, path=target.path or "/", raw_path=(target.path or "/").encode())
        await self.app(scope, receive, send)


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


class _Dropped(Exception):
    """Raised inside the body iterator: uvicorn then closes the connection mid-body."""


class _QuietExpected(logging.Filter):
    """Drop uvicorn's tracebacks for what the emulator does on purpose (an injected dropped
    connection) or what clients legitimately do (disconnect while we read their body)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, (_Dropped, ClientDisconnect))


logging.getLogger("uvicorn.error").addFilter(_QuietExpected())


async def _stream(
    conv: _Conversation, tokens: list[str], fault: Fault | None, delay: float, details: bool
) -> AsyncIterator[bytes]:
    at = min(fault.at_token, len(tokens)) if fault is not None else -1
    for i in range(len(tokens) + 1):
        if i == at and fault is not None:
            if fault.kind == "stall":
                await asyncio.sleep(fault.seconds)
            elif fault.kind == "drop":
                raise _Dropped("injected fault: connection dropped mid-stream")
            elif fault.kind == "malformed":
                yield b'data:{"token": {"id": 1, "text": "oops"\n\n'
                return
            elif fault.kind == "error_event":
                yield b'data:{"error":"injected fault: model overloaded","error_type":"overloaded"}\n\n'
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
