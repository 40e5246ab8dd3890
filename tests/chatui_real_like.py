"""A small chat-ui server that answers as PROTOCOL.md's "Observed on a real chat-ui server" says, for the
tests of issue 18's fidelity items (the bundled emulator learns these in parallel).

What it does as the real one: errors are HTML pages unless ``Accept`` negotiates to JSON (no header
counts as ``text/html``); the ``hf-chat`` cookie is set ``Secure; SameSite=None`` even over http;
settings are parsed as JSON only (a form → 500); ``GET /api/v2/models`` (superjson, the default
first); create refuses a model not listed (400) and answers the usage limit (429, its own words)
beyond ``max_conversations`` per session; the conversation list is paged (``?p=N``, ``hasMore``);
``DELETE /api/v2/conversations`` deletes the session's all (answer: superjson count); the send is
multipart and streams JSON lines; ``stop-generating`` checks the stop-point schema and records it.

Runs uvicorn on 127.0.0.1 with an ephemeral port in a thread of its own; a context manager.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
import uuid
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODELS = ("meta/llama-default", "other/model-b")
USAGE_LIMIT = "You have reached the maximum number of conversations. Delete some to continue."


@dataclass
class Conv:
    session: str
    model: str
    messages: list[dict[str, object]]
    title: str = "New conversation"


@dataclass
class State:
    conversations: dict[str, Conv] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path+query, Accept
    stops: list[dict[str, object]] = field(default_factory=list)  # valid stop-generating bodies
    stops_discarded: int = 0  # bodies chat-ui's schema would drop (no seenContentLength, say)
    created: int = 0
    deleted: int = 0


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept")
    return accept is not None and ("application/json" in accept or "*/*" in accept)


def build_app(st: State, *, max_conversations: int = 100, page_size: int = 2, tokens: int = 5,
              token_delay: float = 0.0) -> Starlette:
    def session(request: Request) -> tuple[str, bool]:
        sid = request.cookies.get("hf-chat")
        return (sid, False) if sid else (secrets.token_hex(8), True)

    def done(response: Response, sid: str, new: bool) -> Response:
        if new:  # as chat-ui in production does, even over plain http
            response.headers.append("set-cookie", f"hf-chat={sid}; Path=/; HttpOnly; Secure; SameSite=None")
        return response

    def fail(request: Request, status: int, message: str, sid: str, new: bool) -> Response:
        if _wants_json(request):
            return done(JSONResponse({"message": message}, status_code=status), sid, new)
        return done(HTMLResponse(f"<!doctype html><h1>{status}</h1><p>{message}</p>", status_code=status), sid, new)

    def mine(request: Request, sid: str) -> tuple[str, Conv | None]:
        cid = request.path_params["cid"]
        conv = st.conversations.get(cid)
        return cid, conv if conv is not None and conv.session == sid else None

    async def log(request: Request) -> None:
        query = f"?{request.url.query}" if request.url.query else ""
        st.requests.append((request.method, request.url.path + query, request.headers.get("accept")))

    async def settings(request: Request) -> Response:
        await log(request)
        sid, new = session(request)
        try:
            json.loads(await request.body())
        except ValueError:  # the handler calls request.json()
            return fail(request, 500, "Internal Error", sid, new)
        return done(Response(status_code=200), sid, new)

    async def models(request: Request) -> Response:
        await log(request)
        sid, new = session(request)
        listed = [{"id": m, "name": m, "displayName": m.split("/")[-1].title(), "description": f"about {m}",
                   "multimodal": i == 1, "supportsTools": i == 0, "supportsReasoning": False, "unlisted": False,
                   "isRouter": False} for i, m in enumerate(MODELS)]
        return done(JSONResponse({"json": listed, "meta": {}}), sid, new)

    async def create(request: Request) -> Response:
        await log(request)
        sid, new = session(request)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return fail(request, 400, "Invalid request", sid, new)
        if not isinstance(body, dict) or body.get("model") not in MODELS:
            return fail(request, 400, "Invalid request", sid, new)
        if sum(1 for c in st.conversations.values() if c.session == sid) >= max_conversations:
            return fail(request, 429, USAGE_LIMIT, sid, new)
        cid, root = secrets.token_hex(12), str(uuid.uuid4())
        system = {"id": root, "from": "system", "content": body.get("preprompt", ""), "ancestors": [], "children": []}
        st.conversations[cid] = Conv(sid, str(body["model"]), [system])
        st.created += 1
        inner = {"json": {"rootMessageId": root}, "meta": {}}
        return done(JSONResponse({"conversationId": cid, "conversation": json.dumps(inner)}), sid, new)

    async def read(request: Request) -> Response:
        await log(request)
        sid, new = session(request)
        cid, conv = mine(request, sid)
        if conv is None:
            return fail(request, 404, "Conversation not found", sid, new)
        body = {"id": cid, "title": conv.title, "model": conv.model, "rootMessageId": conv.messages[0]["id"],
                "messages": conv.messages}
        return done(JSONResponse({"json": body, "meta": {}}), sid, new)

    async def listing(request: Request) -> Response:
        await log(request)
        sid, new = session(request)
        page = int(request.query_params.get("p", "0"))
        own = [(cid, c) for cid, c in reversed(st.conversations.items()) if c.session == sid]
        chunk = own[page * page_size:(page + 1) * page_size]
        items = [{"_id": cid, "title": c.title, "model": c.model, "updatedAt": "2026-12-01T21:00:00.000Z"}
                 for cid, c in chunk]
        more = (page + 1) * page_size < len(own)
        return done(JSONResponse({"json": {"conversations": items, "hasMore": more}, "meta": {}}), sid, new)

    async def delete_all(request: Request) -> Response:
        await log(request)
        sid, new = session(request)
        gone = [cid for cid, c in st.conversations.items() if c.session == sid]
        for cid in gone:
            del st.conversations[cid]
        st.deleted += len(gone)
        return done(JSONResponse({"json": len(gone), "meta": {}}), sid, new)

    async def send(request: Request) -> Response:
        await log(request)
        sid, new = session(request)
        cid, conv = mine(request, sid)
        if conv is None:
            return fail(request, 404, "Conversation not found", sid, new)
        raw = await request.body()
        head = b"Content-Type: " + request.headers.get("content-type", "").encode() + b"\r\n\r\n"
        parts = list(BytesParser(policy=policy.HTTP).parsebytes(head + raw).iter_parts())  # type: ignore[attr-defined]
        data = json.loads(parts[0].get_payload(decode=True))
        parent = next((m for m in conv.messages if m["id"] == data.get("id")), None)
        if parent is None:
            return fail(request, 500, "An error occurred", sid, new)
        user = {"id": str(uuid.uuid4()), "from": "user", "content": data["inputs"], "children": []}
        answer = "".join(f"w{i} " for i in range(tokens)).strip()
        assistant = {"id": str(uuid.uuid4()), "from": "assistant", "content": answer, "children": []}
        parent["children"].append(user["id"])  # type: ignore[attr-defined]
        user["children"].append(assistant["id"])  # type: ignore[attr-defined]
        conv.messages += [user, assistant]

        async def lines():  # type: ignore[no-untyped-def]
            yield b'{"type":"status","status":"started"}\n'
            for i in range(tokens):
                await asyncio.sleep(token_delay)
                token = f"w{i}" + (" " if i < tokens - 1 else "")
                yield json.dumps({"type": "stream", "token": token.ljust(16, "\x00")}).encode() + b"\n"
            yield json.dumps({"type": "finalAnswer", "text": answer, "interrupted": False}).encode() + b"\n"

        return done(StreamingResponse(lines(), media_type="application/jsonl"), sid, new)

    async def stop(request: Request) -> Response:
        await log(request)
        sid, new = session(request)
        cid, conv = mine(request, sid)
        if conv is None:
            return fail(request, 404, "Conversation not found", sid, new)
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            body = None
        seen = body.get("seenContentLength") if isinstance(body, dict) else None
        if isinstance(body, dict) and isinstance(body.get("generationId"), str) and type(seen) is int and seen >= 0:
            st.stops.append(body)
        else:  # chat-ui's schema drops it: the stop point is lost
            st.stops_discarded += 1
        return done(Response(status_code=200), sid, new)

    async def delete(request: Request) -> Response:
        await log(request)
        sid, new = session(request)
        cid, conv = mine(request, sid)
        if conv is None:
            return fail(request, 404, "Conversation not found", sid, new)
        del st.conversations[cid]
        st.deleted += 1
        return done(Response(status_code=200), sid, new)

    return Starlette(routes=[
        Route("/settings", settings, methods=["POST"]),
        Route("/api/v2/models", models, methods=["GET"]),
        Route("/api/v2/conversations", listing, methods=["GET"]),
        Route("/api/v2/conversations", delete_all, methods=["DELETE"]),
        Route("/api/v2/conversations/{cid}", read, methods=["GET"]),
        Route("/conversation", create, methods=["POST"]),
        Route("/conversation/{cid}", send, methods=["POST"]),
        Route("/conversation/{cid}/stop-generating", stop, methods=["POST"]),
        Route("/conversation/{cid}", delete, methods=["DELETE"]),
    ])


class RealLikeServer:
    """``with RealLikeServer(**options) as srv:`` — ``srv.url``, ``srv.state``."""

    def __init__(self, **options: object) -> None:
        self.state = State()
        self.app = build_app(self.state, **options)  # type: ignore[arg-type]
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RealLikeServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
        self._thread.start()
        for _ in range(500):
            if server.started:
                break
            threading.Event().wait(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(10)

    @property
    def live(self) -> int:
        return len(self.state.conversations)
