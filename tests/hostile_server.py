"""A raw asyncio HTTP/1.1 server on 127.0.0.1 that plays a 2023 h2o chat-ui and misbehaves on request.

It runs its own event loop in a background thread (so a test's loop that stalls cannot stall the
server, and the server's timing does not depend on the client under test), listens on an ephemeral
port, and is stopped by its context manager. By default it is a small honest h2o server (welcome
gate, session cookie, settings, create, a short TGI stream, delete, per-session conversations).
Each step can be scripted per request with ``server.on[step] = fn``: ``fn(request)`` returns a
:class:`Reply` (status, headers, raw head lines, body, delay, trickle, stall, close mid-body) or
``None`` for the default answer (``server.default(request)``). Steps: ``settings``, ``create``,
``send``, ``delete``, ``other``; ``"*"`` scripts every step. Every request is recorded.

Accounting: ``created`` lists the conversation ids the server created (an answer carrying an id was
decided), ``delivered`` those whose answer was written completely, ``deletes()`` counts DELETE
requests per id and ``deleted_ok`` the ids a DELETE removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http
import itertools
import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from typing import Literal

__all__ = ["SECRET_PREFIX", "HostileServer", "Reply", "Request", "echo_reply", "padding_headers", "stream_body"]

SECRET_PREFIX = "SECRET-"  # every session cookie value starts with it: tests look for it in errors and logs
COOKIE = "hf-chat"
_CONV = re.compile(r"^/conversation/(.+)$")


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    target: str  # as sent: origin-form ("/path?q") or absolute-form (through a proxy)
    path: str  # the target's path, not percent-decoded
    headers: tuple[tuple[str, str], ...]  # latin-1 decoded
    body: bytes
    step: str
    nth: int  # earlier requests of the same step

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def cookie(self, name: str = COOKIE) -> str | None:
        for part in (self.header("cookie") or "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
        return None

    @property
    def conversation_id(self) -> str | None:
        match = _CONV.match(self.path)
        return match.group(1) if match else None


@dataclasses.dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str | bytes]] = dataclasses.field(default_factory=list)
    body: bytes = b""
    raw_head_lines: list[bytes] = dataclasses.field(default_factory=list)  # sent as is (malformed on purpose)
    delay: float = 0.0  # before anything is written
    trickle: float = 0.0  # seconds between single bytes
    trickle_head: bool = False  # trickle the status line and headers too (else only the body)
    stall: Literal["", "before_head", "after_head"] = ""  # then never finish (see max_answer_seconds)
    close_after: int | None = None  # close the connection after this many body bytes
    hands_out: str | None = None  # the conversation id this answer carries


def stream_body(tokens: tuple[str, ...] = ("Hello", " world")) -> bytes:
    """A well-formed TGI stream: one event per token, then the final event."""
    events: list[dict[str, object]] = [
        {"token": {"id": i, "text": t, "logprob": 0.0, "special": False}, "generated_text": None, "details": None}
        for i, t in enumerate(tokens)
    ]
    events.append({"token": {"id": 0, "text": "</s>", "logprob": 0.0, "special": True},
                   "generated_text": "".join(tokens), "details": None})
    return b"".join(b"data:" + json.dumps(e).encode() + b"\n\n" for e in events)


def padding_headers(n: int, value: bytes = b"v" * 8) -> list[bytes]:
    """``n`` extra header lines (``raw_head_lines``): a head with many headers, as some CDNs send."""
    return [b"X-Pad-%d: %s" % (i, value) for i in range(n)]


def echo_reply(request: Request, status: int = 407) -> Reply:
    """An error page that echoes the request line and every header (as careless proxies do)."""
    lines = [f"{request.method} {request.target} HTTP/1.1", *(f"{k}: {v}" for k, v in request.headers)]
    body = ("<html><body><pre>" + "\n".join(lines) + "</pre></body></html>").encode("latin-1", "replace")
    headers: list[tuple[str, str | bytes]] = [("Content-Type", "text/html")]
    if status == 407:
        headers.append(("Proxy-Authenticate", 'Basic realm="proxy"'))
    return Reply(status, headers, body)


def _step(method: str, path: str) -> str:
    if method == "POST" and path == "/settings":
        return "settings"
    if method == "POST" and path == "/conversation":
        return "create"
    if _CONV.match(path):
        return {"POST": "send", "DELETE": "delete"}.get(method, "other")
    return "other"


class _ClientGone(Exception):
    pass


class HostileServer:
    """See the module docstring. ``with HostileServer() as server: ... server.url ...``."""

    def __init__(self, *, welcome_gate: bool = True, max_answer_seconds: float = 6.0) -> None:
        self.welcome_gate = welcome_gate
        # a stall or trickle "forever" ends here (the connection is closed), so that a client that
        # ignores its own timeouts makes a test fail in seconds instead of hanging the suite
        self.max_answer_seconds = max_answer_seconds
        self.on: dict[str, Callable[[Request], Reply | None]] = {}
        self.requests: list[Request] = []
        self.created: list[str] = []
        self.delivered: list[str] = []
        self.deleted_ok: list[str] = []
        self.sessions: dict[str, bool] = {}  # cookie value -> settings accepted
        self.replace_unknown_sessions = False
        self.conversations: dict[str, str] = {}  # id -> owning session
        self._ids = itertools.count(1)
        self._steps: Counter[str] = Counter()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.port = 0

    # ---------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> HostileServer:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("hostile server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(5)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # our own task, so that stopping cancels it and not the one asyncio's server watches
            task = asyncio.create_task(self._connection(reader, writer))
            tasks.add(task)
            try:
                await task
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, _ClientGone):
                pass
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
            finally:
                tasks.discard(task)
                writer.close()

        server = await asyncio.start_server(accept, "127.0.0.1", 0, limit=1 << 20)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)

    # ---------------------------------------------------------------- accounting
    def count(self, method: str, path: str | None = None) -> int:
        return sum(1 for r in self.requests if r.method == method and (path is None or r.path == path))

    def deletes(self) -> Counter[str]:
        return Counter(r.conversation_id or "" for r in self.requests if r.step == "delete")

    def paths(self) -> set[tuple[str, str]]:
        return {(r.method, r.path) for r in self.requests}

    def forget_sessions(self, *, replace_cookie: bool = False) -> None:
        """The server loses its session store (settings must be sent again); with ``replace_cookie``
        it also answers an unknown session cookie with a new one."""
        assert self._loop is not None

        def forget() -> None:
            self.sessions.clear()
            self.replace_unknown_sessions = replace_cookie

        self._loop.call_soon_threadsafe(forget)

    def new_conversation(self) -> tuple[str, str]:
        """A conversation created out of band (a leftover): (id, session cookie value). Call before
        traffic starts (it touches the server's state from the caller's thread)."""
        session = f"{SECRET_PREFIX}{next(self._ids)}-leftover"
        self.sessions[session] = True
        cid = f"{next(self._ids):024x}"
        self.conversations[cid] = session
        self.created.append(cid)
        return cid, session

    # ---------------------------------------------------------------- the honest h2o server
    def _session(self, request: Request, reply_headers: list[tuple[str, str | bytes]]) -> str:
        sent = request.cookie()
        value = sent or ""
        if sent is None or (value not in self.sessions and self.replace_unknown_sessions):
            value = f"{SECRET_PREFIX}{next(self._ids)}-{'%08x' % (id(self) & 0xFFFFFFFF)}"
            reply_headers.append(("Set-Cookie", f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax"))
        self.sessions.setdefault(value, False)
        return value

    def default(self, request: Request) -> Reply:
        headers: list[tuple[str, str | bytes]] = []
        session = self._session(request, headers)
        if request.step == "settings":
            self.sessions[session] = True
            headers.append(("Location", "/"))
            return Reply(303, headers, b"")
        if request.step in ("create", "send") and self.welcome_gate and not self.sessions[session]:
            return Reply(405, [*headers, ("Content-Type", "application/json")],
                         b'{"error":"You need to accept the welcome modal first"}')
        if request.step == "create":
            new_id = f"{next(self._ids):024x}"
            self.conversations[new_id] = session
            body = json.dumps({"conversationId": new_id}).encode()
            return Reply(200, [*headers, ("Content-Type", "application/json")], body, hands_out=new_id)
        cid = request.conversation_id
        if request.step in ("send", "delete") and (cid is None or self.conversations.get(cid) != session):
            return Reply(404, [*headers, ("Content-Type", "application/json")], b'{"error":"Conversation not found"}')
        if request.step == "send":
            return Reply(200, [*headers, ("Content-Type", "text/event-stream")], stream_body())
        if request.step == "delete":
            assert cid is not None
            del self.conversations[cid]
            self.deleted_ok.append(cid)
            return Reply(200, headers, b"")
        return Reply(404, headers, b"Not Found")

    # ---------------------------------------------------------------- HTTP/1.1
    async def _read_request(self, reader: asyncio.StreamReader, prefix: bytes) -> Request | None:
        try:
            head = prefix + await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = tuple((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line))
        length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
        chunked = any(k.lower() == "transfer-encoding" and "chunked" in v.lower() for k, v in headers)
        if chunked:
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = await reader.readexactly(length)
        path = target
        if "://" in path:  # absolute-form: we are being used as a proxy
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        path = path.split("?", 1)[0].split("#", 1)[0]
        step = _step(method, path)
        request = Request(method, target, path, headers, body, step, self._steps[step])
        self._steps[step] += 1
        self.requests.append(request)
        return request

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        prefix = b""
        while True:
            request = await self._read_request(reader, prefix)
            if request is None:
                return
            script = self.on.get(request.step) or self.on.get("*")
            reply = (script(request) if script else None) or self.default(request)
            if reply.hands_out is not None and reply.hands_out not in self.created:
                self.created.append(reply.hands_out)
            watch = _Watch(reader)
            try:
                complete = await asyncio.wait_for(self._answer(writer, reply, watch), self.max_answer_seconds)
            except (_ClientGone, asyncio.TimeoutError):
                return  # gone, or an answer that "never ends" reached the server's own bound: hang up
            finally:
                prefix = await watch.stop()
            if reply.hands_out is not None and complete:
                self.delivered.append(reply.hands_out)
            if not complete or watch.gone() or (request.header("connection") or "").lower() == "close":
                return

    async def _answer(self, writer: asyncio.StreamWriter, reply: Reply, watch: _Watch) -> bool:
        """Write ``reply``; False when it was cut on purpose (close mid-body)."""
        if reply.delay:
            await watch.wait(reply.delay)
        if reply.stall == "before_head":
            await watch.wait(None)
        try:
            phrase = http.HTTPStatus(reply.status).phrase
        except ValueError:
            phrase = "Whatever"
        head = [f"HTTP/1.1 {reply.status} {phrase}".encode()]
        names = {k.lower() for k, _ in reply.headers}
        for key, value in reply.headers:
            head.append(key.encode() + b": " + (value if isinstance(value, bytes) else value.encode("latin-1")))
        if "content-length" not in names:
            head.append(b"Content-Length: %d" % len(reply.body))
        head.extend(reply.raw_head_lines)
        head_bytes = b"\r\n".join(head) + b"\r\n\r\n"
        await self._write(writer, head_bytes, reply.trickle if reply.trickle_head else 0.0, watch)
        if reply.stall == "after_head":
            await watch.wait(None)
        body = reply.body if reply.close_after is None else reply.body[: reply.close_after]
        await self._write(writer, body, reply.trickle, watch)
        return reply.close_after is None

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, data: bytes, trickle: float, watch: _Watch) -> None:
        if not trickle:
            writer.write(data)
            await writer.drain()
            return
        for i in range(len(data)):
            if watch.gone():
                raise _ClientGone
            writer.write(data[i : i + 1])
            await writer.drain()
            await watch.wait(trickle)


class _Watch:
    """Notices a client that closes its connection while we delay, trickle or stall (a pending
    one-byte read returns ``b""``). A byte that arrives instead (the next request) is handed back."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._read = asyncio.ensure_future(reader.read(1))

    def gone(self) -> bool:
        if not self._read.done() or self._read.cancelled():
            return False
        return self._read.exception() is not None or self._read.result() == b""

    async def wait(self, seconds: float | None) -> None:
        """Sleep ``seconds`` (``None``: forever); raise :class:`_ClientGone` if the client leaves."""
        if self._read.done():
            if self.gone():
                raise _ClientGone
            await asyncio.sleep(seconds if seconds is not None else 3600)
            return
        await asyncio.wait({self._read}, timeout=seconds)
        if self.gone():
            raise _ClientGone

    async def stop(self) -> bytes:
        """Stop watching (the pending read is cancelled and awaited, so the reader is free again);
        the byte read meanwhile, if any."""
        if not self._read.done():
            self._read.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._read
        if self._read.cancelled() or self.gone():
            return b""
        return self._read.result()
