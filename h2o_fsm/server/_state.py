"""What both emulator apps share: the config, the deterministic "model", sessions, and response helpers."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import random
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .._protocol import DEFAULT_MODEL
from ._accounting import Accounting, RequestRecord
from ._faults import Fault, FaultPlan

__all__ = [
    "HTML_PAGE",
    "AbsoluteForm",
    "Dropped",
    "ServerConfig",
    "ServerSession",
    "State",
    "StoredConversation",
    "apply_request_fault",
    "error",
    "generate",
    "quiet_expected_errors",
]

_WORDS = tuple(
    (
        "the state machine keeps every conversation in order and deletes it when the work is done so "
        "nothing leaks a careful client checks each status reads each event and cleans up after failure "
        "tokens arrive one by one over a stream that may end early or carry an error"
    ).split()
)
HTML_PAGE = "<!doctype html><html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """How the emulator behaves (fields marked chat-ui only matter to that dialect).

    * ``token_delay`` seconds between streamed tokens; ``max_tokens`` caps an answer (an h2o request's
      ``max_new_tokens`` may ask for fewer; chat-ui sends no generation parameters).
    * ``require_settings``: h2o's welcome-modal gate (405 until settings were accepted).
    * ``required_cookies``: login mode — non-GET requests without these cookies (name → value) get
      401 "You have to be logged in."; a session cookie listed here is always a known session.
    * chat-ui: ``conversation_field`` — create answers with the ``conversation`` superjson field (servers
      since 2026-07); off, the client must read the root with ``GET /api/v2/conversations/{id}``.
    * chat-ui: ``keep_alive`` — seconds between ``keepAlive`` lines while a token delay or a stall
      waits (0: none); ``reasoning_tokens`` before the answer; ``title`` sent ``"before"`` or
      ``"after"`` the ``finalAnswer`` of the first turn (or ``"none"``); ``unknown_updates`` sprinkles
      update types and fields a client must ignore; ``finished_status`` ends the run with
      ``status: finished`` (servers since 2026-02).
    * ``answer_tail``: seconds the server keeps working after the answer before it ends the stream (chat-ui
      persists the run); :attr:`State.overlapping_sends` then counts sends that came before that end.
    * ``secure_cookie``: the session cookie's ``Secure`` flag; ``None`` (default) is the dialect's own:
      chat-ui sets ``Secure; SameSite=None`` even over plain http (a standard cookie jar never sends it
      back to an ``http://`` server), the 2023 emulator does not.
    * chat-ui: ``max_conversations`` — the usage limit: a create past that many live conversations of
      one session is answered 429 "You have reached the maximum number of conversations. Delete some
      to continue." (``None``: no limit); ``page_size`` of ``GET /api/v2/conversations?p=N``.
    * chat-ui: ``reattach`` — serve ``GET /conversation/{id}/stream`` (servers since 2026; off: 404);
      ``reattach_cap`` seconds before that stream closes without ``end`` (chat-ui: 5 minutes);
      ``heartbeat`` seconds between ``: heartbeat`` comments while it waits; ``reattach_runs`` off
      plays a server that lost its runs (restarted): every reattach ends ``gone``.
    """

    models: tuple[str, ...] = (DEFAULT_MODEL, "h2oai/h2ogpt-gm-oasst1-en-2048-open-llama-13b")
    token_delay: float = 0.0
    max_tokens: int = 32
    require_settings: bool = True
    cookie_name: str = "hf-chat"
    keep_request_log: bool = True
    request_log_size: int = 100_000  # the newest records are kept; counters are never truncated
    message_log_size: int = 10_000  # chat-ui: messages kept for the newest conversations
    required_cookies: Mapping[str, str] = dataclasses.field(default_factory=dict)
    conversation_field: bool = True
    keep_alive: float = 0.1
    reasoning_tokens: int = 0
    title: Literal["before", "after", "none"] = "after"
    unknown_updates: bool = False
    finished_status: bool = True
    answer_tail: float = 0.0
    secure_cookie: bool | None = None
    max_conversations: int | None = None
    page_size: int = 30
    reattach: bool = True
    reattach_cap: float = 300.0
    heartbeat: float = 5.0
    reattach_runs: bool = True

    def __post_init__(self) -> None:
        if self.title not in ("before", "after", "none"):
            raise ValueError(f"ServerConfig.title must be 'before', 'after' or 'none', got {self.title!r}")
        delays = (self.keep_alive, self.token_delay, self.answer_tail)
        if min(delays) < 0 or self.max_tokens < 1 or self.reasoning_tokens < 0:
            raise ValueError("ServerConfig: delays must be >= 0, max_tokens >= 1, reasoning_tokens >= 0")
        if self.max_conversations is not None and self.max_conversations < 0:
            raise ValueError("ServerConfig.max_conversations must be >= 0 (or None: no limit)")
        if self.page_size < 1 or self.reattach_cap <= 0 or self.heartbeat <= 0:
            raise ValueError("ServerConfig: page_size >= 1, reattach_cap and heartbeat > 0")


def generate(history: list[tuple[str, str]], n_tokens: int) -> list[str]:
    """The emulator's deterministic "model": ``n_tokens`` word tokens seeded by the history.

    ``history`` is the conversation's linear history as ``(role, content)`` pairs ending with the
    user's new message (chat-ui: the system message only when its preprompt is not empty), so a
    one-turn answer to "Hi" is ``"".join(generate([("user", "Hi")], n))`` in both dialects.
    """
    seed = hashlib.sha256(json.dumps(history).encode()).digest()
    rng = random.Random(seed)
    return [(" " if i else "") + rng.choice(_WORDS) for i in range(n_tokens)]


@dataclasses.dataclass
class ServerSession:
    """What the emulator keeps of one client session (its cookie): the settings gate and active model."""

    settings_accepted: bool = False
    active_model: str | None = None


@dataclasses.dataclass
class StoredConversation:
    """A conversation as the emulator stores it (each app subclasses it with its own data)."""

    session: str
    model: str

    def close(self) -> None:
        """Stop whatever still runs for this conversation (chat-ui: its generation)."""


class Dropped(Exception):
    """Raised inside a body iterator: uvicorn then closes the connection mid-body."""


class State:
    """One app's config, fault plan, accounting, sessions and conversations.

    Mutated only on the server's event loop (``LocalServer`` runs ``reset``/``forget_sessions`` there).
    """

    def __init__(self, config: ServerConfig, faults: FaultPlan, accounting: Accounting) -> None:
        self.config = config
        self.faults = faults
        self.accounting = accounting
        self.sessions: dict[str, ServerSession] = {}
        self.conversations: dict[str, StoredConversation] = {}
        self.open_streams: dict[str, int] = {}  # conversation id -> its answer streams not ended yet
        self.overlapping_sends = 0  # sends that came while the same conversation's previous stream was open
        self.cookie_secure = config.secure_cookie is True  # the apps may choose their dialect's default
        self.cookie_samesite: Literal["lax", "strict", "none"] = "lax"

    def reset(self) -> None:
        """Forget sessions and conversations (the fault plan and accounting are reset by their owner)."""
        for conv in self.conversations.values():
            conv.close()
        self.sessions.clear()
        self.conversations.clear()
        self.overlapping_sends = 0

    def forget_sessions(self) -> None:
        """Forget every session: old cookies become unknown, their conversations unreachable (404)."""
        self.sessions.clear()
        self.accounting.record_orphaned(set(self.conversations))

    def session_of(self, request: Request) -> tuple[str, bool]:
        """The request's session id, and whether it is new (then the response sets the cookie)."""
        name = self.config.cookie_name
        sid = request.cookies.get(name)
        if sid and (sid in self.sessions or sid == self.config.required_cookies.get(name)):
            self.sessions.setdefault(sid, ServerSession())
            return sid, False
        sid = secrets.token_hex(16)
        self.sessions[sid] = ServerSession()
        return sid, True

    def owned(self, sid: str, cid: str) -> StoredConversation | None:
        conv = self.conversations.get(cid)
        return conv if conv is not None and conv.session == sid else None

    def logged_in(self, request: Request) -> bool:
        return all(request.cookies.get(k) == v for k, v in self.config.required_cookies.items())

    def finish(self, request: Request, response: Response, sid: str, new: bool, cid: str | None = None) -> Response:
        """Set the session cookie if new, and account for the request."""
        cfg = self.config
        if new:
            response.set_cookie(cfg.cookie_name, sid, httponly=True, samesite=self.cookie_samesite,
                                secure=self.cookie_secure, path="/")
        record = None
        if cfg.keep_request_log:
            record = RequestRecord(request.method, request.url.path, response.status_code, sid, cid, time.time())
        self.accounting.record_request(record)
        if cid is not None and self.config.answer_tail and isinstance(response, StreamingResponse):
            if request.method == "POST" and self.open_streams.get(cid):  # a send (a reattach GET is not)
                self.overlapping_sends += 1
            response.body_iterator = self._tracked(cid, response.body_iterator)
        return response

    async def _tracked(self, cid: str, body: AsyncIterable[Any]) -> AsyncIterator[Any]:
        """An answer's body, counted open until it ends, ``answer_tail`` seconds after its last chunk."""
        self.open_streams[cid] = self.open_streams.get(cid, 0) + 1
        try:
            async for chunk in body:
                yield chunk
            await asyncio.sleep(self.config.answer_tail)
        finally:
            left = self.open_streams.pop(cid, 1) - 1
            if left:
                self.open_streams[cid] = left


def error(status: int, message: str, *, as_json: bool, key: str = "error") -> Response:
    """An error answer: JSON ``{key: message}`` or plain text."""
    if as_json:
        return JSONResponse({key: message}, status_code=status)
    return PlainTextResponse(message, status_code=status)


async def apply_request_fault(
    fault: Fault | None, *, as_json: bool, key: str = "error", render: Callable[[int, str], Response] | None = None
) -> Response | None:
    """The answer an injected request fault gives (``None``: carry on, after a stall if any); ``render``
    builds the error answer of a ``status`` fault (default: :func:`error`)."""
    if fault is None:
        return None
    if fault.kind == "stall":
        await asyncio.sleep(fault.seconds)
        return None
    if fault.kind == "html":
        return HTMLResponse(HTML_PAGE, status_code=200)
    if fault.kind == "status":
        message = f"injected fault: HTTP {fault.status}"
        response = render(fault.status, message) if render else error(fault.status, message, as_json=as_json, key=key)
        if fault.retry_after is not None:
            response.headers["Retry-After"] = f"{fault.retry_after:g}"
        return response
    return None


class AbsoluteForm:
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


class _QuietExpected(logging.Filter):
    """Drop uvicorn's tracebacks for what the emulator does on purpose (an injected dropped
    connection) or what clients legitimately do (disconnect while we read their body)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, (Dropped, ClientDisconnect))


def quiet_expected_errors() -> None:
    """Install :class:`_QuietExpected` on uvicorn's error log (once)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietExpected) for f in logger.filters):
        logger.addFilter(_QuietExpected())
