"""The "chat-ui" dialect of the emulator (chat-ui as it is today: docs/protocol.md's second half), as a Starlette app.

Gates: the ``hf-chat`` session, the CSRF gate (form, multipart and text POSTs need a same-host
``Origin`` → else 403; JSON is not checked), optional login (401). Routes: JSON settings (200, no
welcome gate), create with a root system message (and the ``conversation`` superjson field unless
configured off), ``GET /api/v2/conversations/{id}``, multipart send whose ``id`` must be a message
of the conversation, ``stop-generating``, DELETE. Errors are JSON ``{"message": ...}``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import time
import uuid
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ._accounting import MessageRecord, TurnRecord
from ._chatui_stream import Generation, Message
from ._state import AbsoluteForm, Conversation, State, apply_request_fault, error, generate

__all__ = ["create_chatui_app", "form_fields", "superjson"]

_FORM_TYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded", "text/plain"})
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_INVALID = "Invalid request"


@dataclasses.dataclass
class _ChatUiConversation(Conversation):
    preprompt: str = ""
    title: str = "New Chat"
    messages: list[Message] = dataclasses.field(default_factory=list)
    created_at: float = dataclasses.field(default_factory=time.time)
    generation: Generation | None = None

    @property
    def root(self) -> str:
        return self.messages[0].id

    def close(self) -> None:
        if self.generation is not None:
            self.generation.stop()

    def find(self, message_id: object) -> Message | None:
        return next((m for m in self.messages if m.id == message_id), None)


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"


def superjson(cid: str, conv: _ChatUiConversation) -> dict[str, object]:
    """The conversation as ``GET /api/v2/conversations/{id}`` serves it (superjson: ``json`` + ``meta``)."""
    return {
        "json": {
            "id": cid,
            "title": conv.title,
            "model": conv.model,
            "preprompt": conv.preprompt,
            "rootMessageId": conv.root,
            "messages": [m.as_json() for m in conv.messages],
            "createdAt": _iso(conv.created_at),
            "updatedAt": _iso(time.time()),
        },
        "meta": {"values": {"createdAt": ["Date"], "updatedAt": ["Date"]}},
    }


def form_fields(content_type: str, body: bytes) -> dict[str, str] | None:
    """The text fields of a ``multipart/form-data`` body, or ``None`` if it is not one."""
    if content_type.split(";", maxsplit=1)[0].strip().lower() != "multipart/form-data":
        return None
    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    parsed = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not isinstance(parsed, EmailMessage) or not parsed.is_multipart():
        return None
    fields: dict[str, str] = {}
    for part in parsed.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = payload.decode("utf-8", "replace")
    return fields


def _send_problem(data: object) -> str | None:
    if not isinstance(data, dict):
        return "the data part must be a JSON object"
    inputs = data.get("inputs")
    if not isinstance(inputs, str) or not inputs.strip():
        return "inputs must be a non-empty string"
    if data.get("is_retry", False) is not False:
        return "is_retry is not emulated"
    for key in ("id", "generationId"):
        value = data.get(key)
        if value is not None and not (isinstance(value, str) and _UUID.match(value)):
            return f"{key} must be a UUID"
    return None


def create_chatui_app(st: State, routes: list[Route]) -> Starlette:
    """The chat-ui dialect's app over ``st``; ``routes`` are added (the accounting view)."""
    cfg = st.config
    acct = st.accounting
    finish = st.finish

    def fail(status: int, message: str) -> Response:
        return error(status, message, as_json=True, key="message")

    def gate(request: Request) -> Response | None:
        if request.method == "POST":
            content_type = request.headers.get("content-type", "").split(";", maxsplit=1)[0].strip().lower()
            if content_type in _FORM_TYPES:
                origin = request.headers.get("origin")
                if not origin:
                    return fail(403, "Non-JSON form requests need to have an origin")
                if urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
                    return fail(403, "Invalid referer for POST request")
        if request.method != "GET" and not st.logged_in(request):
            return fail(401, "You have to be logged in.")
        return None

    async def enter(request: Request, phase: str) -> tuple[str, bool, Response | None]:
        """Session, gates, then the phase's injected fault: (session, new, an answer to give now)."""
        sid, new = st.session_of(request)
        blocked = gate(request)
        if blocked is not None:
            return sid, new, blocked
        return sid, new, await apply_request_fault(st.faults.take(phase), as_json=True, key="message")

    def conversation(sid: str, request: Request) -> tuple[str, _ChatUiConversation | None]:
        cid = request.path_params["cid"]
        conv = st.owned(sid, cid)
        return cid, conv if isinstance(conv, _ChatUiConversation) else None

    async def index(request: Request) -> Response:
        sid, new = st.session_of(request)
        return finish(request, HTMLResponse("<!doctype html><title>h2o-fsm chat-ui emulator</title>"), sid, new)

    async def settings(request: Request) -> Response:
        sid, new, answer = await enter(request, "settings")
        if answer is not None:
            return finish(request, answer, sid, new)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return finish(request, fail(400, _INVALID), sid, new)
        if not isinstance(body, dict):
            return finish(request, fail(400, _INVALID), sid, new)
        model = body.get("activeModel")
        st.sessions[sid].active_model = model if isinstance(model, str) else None
        st.sessions[sid].settings_accepted = True
        return finish(request, Response(status_code=200), sid, new)

    async def create(request: Request) -> Response:
        sid, new = st.session_of(request)
        blocked = gate(request)
        if blocked is not None:
            return finish(request, blocked, sid, new)
        fault = st.faults.take("create")
        injected = await apply_request_fault(fault, as_json=True, key="message")
        if injected is not None:
            return finish(request, injected, sid, new)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return finish(request, fail(400, _INVALID), sid, new)
        model = body.get("model") if isinstance(body, dict) else None
        preprompt = body.get("preprompt", "") if isinstance(body, dict) else None
        if not isinstance(model, str) or model not in cfg.models or not isinstance(preprompt, str):
            return finish(request, fail(400, _INVALID), sid, new)
        cid = secrets.token_hex(12)
        root = Message(str(uuid.uuid4()), "system", preprompt, [])
        conv = st.conversations[cid] = _ChatUiConversation(sid, model, preprompt, messages=[root])
        failed = fault is not None and fault.kind == "create_then_error"
        acct.record_created(cid, answered_error=failed)
        acct.record_message(cid, MessageRecord(root.id, "system", preprompt, None))
        if fault is not None and failed:
            return finish(request, fail(fault.status, "injected fault: created, then failed"), sid, new, cid)
        answer: dict[str, object] = {"conversationId": cid}
        if cfg.conversation_field:
            answer["conversation"] = json.dumps(superjson(cid, conv), separators=(",", ":"))
        return finish(request, JSONResponse(answer), sid, new, cid)

    async def fetch(request: Request) -> Response:
        sid, new, answer = await enter(request, "fetch")
        cid, conv = conversation(sid, request)
        if answer is not None:
            return finish(request, answer, sid, new, cid)
        if conv is None:
            return finish(request, fail(404, "Conversation not found"), sid, new, cid)
        return finish(request, JSONResponse(superjson(cid, conv)), sid, new, cid)

    async def send(request: Request) -> Response:
        sid, new, answer = await enter(request, "send")
        cid, conv = conversation(sid, request)
        if answer is not None:
            return finish(request, answer, sid, new, cid)
        if conv is None:
            return finish(request, fail(404, "Conversation not found"), sid, new, cid)
        fields = form_fields(request.headers.get("content-type", ""), await request.body())
        try:
            data = json.loads(fields["data"]) if fields is not None and "data" in fields else None
        except ValueError:
            data = None
        if data is None or _send_problem(data) is not None:
            return finish(request, fail(400, _INVALID), sid, new, cid)
        parent = conv.find(data.get("id"))
        if parent is None:
            answer = JSONResponse({"message": "An error occurred", "errorId": str(uuid.uuid4())}, status_code=500)
            return finish(request, answer, sid, new, cid)
        turn = _add_turn(cid, conv, parent, data["inputs"])
        fault = st.faults.take("stream")
        history = [(m.role, m.content) for m in (*map(conv.find, turn.ancestors), turn) if m is not None]
        history = [h for h in history if h != ("system", "")]
        title = None
        if conv.title == "New Chat" and cfg.title != "none":
            title = conv.title = " ".join(data["inputs"].split()[:5])[:40]
        reasoning = generate([*history, ("reasoning", "")], cfg.reasoning_tokens) if cfg.reasoning_tokens else []
        assistant = conv.messages[-1]
        tokens = generate(history, cfg.max_tokens)
        generation = Generation(
            cfg, acct, cid, assistant, tokens=tokens, reasoning=reasoning, title=title, fault=fault
        ).start()
        conv.generation = generation
        response = StreamingResponse(generation.body(), media_type="application/jsonl")
        return finish(request, response, sid, new, cid)

    def _add_turn(cid: str, conv: _ChatUiConversation, parent: Message, inputs: str) -> Message:
        """Hang the user's message from ``parent`` and an empty assistant message from it."""
        branched = parent is not conv.messages[-1]
        user = Message(str(uuid.uuid4()), "user", inputs.replace("\r\n", "\n"), [*parent.ancestors, parent.id])
        assistant = Message(str(uuid.uuid4()), "assistant", "", [*user.ancestors, user.id])
        parent.children.append(user.id)
        user.children.append(assistant.id)
        conv.messages += [user, assistant]
        acct.record_message(cid, MessageRecord(user.id, "user", user.content, parent.id))
        acct.record_message(cid, MessageRecord(assistant.id, "assistant", "", user.id))
        acct.record_turn(cid, TurnRecord(parent.id, user.id, assistant.id, branched))
        return user

    async def stop(request: Request) -> Response:
        sid, new, answer = await enter(request, "stop")
        cid, conv = conversation(sid, request)
        if answer is not None:
            return finish(request, answer, sid, new, cid)
        if conv is None:
            return finish(request, fail(404, "Conversation not found"), sid, new, cid)
        running = conv.generation is not None and conv.generation.running
        if conv.generation is not None and running:
            conv.generation.stop()
        acct.record_stop(hit_running=running)
        return finish(request, Response(status_code=200), sid, new, cid)

    async def delete(request: Request) -> Response:
        sid, new, answer = await enter(request, "delete")
        cid, conv = conversation(sid, request)
        if answer is not None:
            acct.record_delete_fault(cid)
            return finish(request, answer, sid, new, cid)
        if conv is None:
            acct.record_delete_unknown(cid)
            return finish(request, fail(404, "Conversation not found"), sid, new, cid)
        conv.close()
        del st.conversations[cid]
        acct.record_deleted(cid)
        return finish(request, Response(status_code=200), sid, new, cid)

    async def models(request: Request) -> Response:  # the list the client's default model comes from
        sid, new = st.session_of(request)
        listed = [{"id": m, "name": m, "displayName": m, "description": "", "multimodal": False,
                   "supportsTools": False, "supportsReasoning": False, "unlisted": False} for m in cfg.models]
        return finish(request, JSONResponse({"json": listed, "meta": {}}), sid, new)

    return Starlette(
        middleware=[Middleware(AbsoluteForm)],
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/settings", settings, methods=["POST"]),
            Route("/conversation", create, methods=["POST"]),
            Route("/api/v2/models", models, methods=["GET"]),
            Route("/api/v2/conversations/{cid}", fetch, methods=["GET"]),
            Route("/conversation/{cid}", send, methods=["POST"]),
            Route("/conversation/{cid}/stop-generating", stop, methods=["POST"]),
            Route("/conversation/{cid}", delete, methods=["DELETE"]),
            *routes,
        ],
    )
