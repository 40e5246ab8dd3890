"""The "chat-ui" dialect of the emulator (chat-ui as it is today: docs/protocol.md's second half), as a Starlette app.

Gates: the ``hf-chat`` session (set ``Secure; SameSite=None`` even over plain http, as a real server
does), the CSRF gate (form, multipart and text POSTs need a same-host ``Origin`` → else 403; JSON is
not checked), optional login (401). Routes: JSON-only settings (200, no welcome gate; a form body is
a 500), create with a root system message (the ``conversation`` superjson field unless configured
off; 429 past ``ServerConfig.max_conversations``), ``GET /api/v2/conversations/{id}``, multipart send
whose ``id`` must be a message of the conversation (each generation a run of its own),
``stop-generating`` (with its stop point), DELETE (which does not stop a running generation), and
the routes of ``_chatui_api`` (models, the list, delete-all, reattach). Errors are SvelteKit's: JSON
``{"message": ...}`` when ``Accept`` negotiates to JSON, else an HTML page.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ._accounting import MessageRecord, TurnRecord
from ._chatui_api import api_routes
from ._chatui_model import (
    StoredChatUiConversation,
    error_page,
    fault_answer,
    form_fields,
    send_problem,
    stop_point,
    superjson,
)
from ._chatui_stream import Generation, StoredMessage
from ._state import AbsoluteForm, State, generate

__all__ = ["create_chatui_app", "form_fields", "superjson"]

_FORM_TYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded", "text/plain"})
_INVALID = "Invalid request"
USAGE_LIMIT = "You have reached the maximum number of conversations. Delete some to continue."


def create_chatui_app(st: State, routes: list[Route]) -> Starlette:
    """The chat-ui dialect's app over ``st``; ``routes`` are added (the accounting view)."""
    cfg = st.config
    acct = st.accounting
    finish = st.finish
    st.cookie_secure = cfg.secure_cookie is not False  # a real chat-ui sets Secure even over http
    st.cookie_samesite = "none" if st.cookie_secure else "lax"

    def gate(request: Request) -> Response | None:
        if request.method == "POST":
            content_type = request.headers.get("content-type", "").split(";", maxsplit=1)[0].strip().lower()
            if content_type in _FORM_TYPES:
                origin = request.headers.get("origin")
                if not origin:
                    return error_page(request, 403, "Non-JSON form requests need to have an origin")
                if urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
                    return error_page(request, 403, "Invalid referer for POST request")
        if request.method != "GET" and not st.logged_in(request):
            return error_page(request, 401, "You have to be logged in.")
        return None

    async def enter(request: Request, phase: str | None) -> tuple[str, bool, Response | None]:
        """Session, gates, then the phase's injected fault: (session, new, an answer to give now)."""
        sid, new = st.session_of(request)
        blocked = gate(request)
        if blocked is not None or phase is None:
            return sid, new, blocked
        return sid, new, await fault_answer(request, st.faults.take(phase))

    def conversation(sid: str, request: Request) -> tuple[str, StoredChatUiConversation | None]:
        cid = request.path_params["cid"]
        conv = st.owned(sid, cid)
        return cid, conv if isinstance(conv, StoredChatUiConversation) else None

    async def index(request: Request) -> Response:
        sid, new = st.session_of(request)
        return finish(request, HTMLResponse("<!doctype html><title>h2o-fsm chat-ui emulator</title>"), sid, new)

    async def settings(request: Request) -> Response:
        sid, new, answer = await enter(request, "settings")
        if answer is not None:
            return finish(request, answer, sid, new)
        try:  # the handler calls request.json(): a form body (the 2023 dialect) is an internal error
            body = json.loads(await request.body())
        except ValueError:
            return finish(request, error_page(request, 500, "Internal Error"), sid, new)
        if not isinstance(body, dict):
            return finish(request, error_page(request, 400, _INVALID), sid, new)
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
        injected = await fault_answer(request, fault)
        if injected is not None:
            return finish(request, injected, sid, new)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return finish(request, error_page(request, 400, _INVALID), sid, new)
        model = body.get("model") if isinstance(body, dict) else None
        preprompt = body.get("preprompt", "") if isinstance(body, dict) else None
        if not isinstance(model, str) or model not in cfg.models or not isinstance(preprompt, str):
            return finish(request, error_page(request, 400, _INVALID), sid, new)
        limit = cfg.max_conversations
        if limit is not None and sum(c.session == sid for c in st.conversations.values()) >= limit:
            return finish(request, error_page(request, 429, USAGE_LIMIT), sid, new)
        cid = secrets.token_hex(12)
        root = StoredMessage(str(uuid.uuid4()), "system", preprompt, [])
        conv = st.conversations[cid] = StoredChatUiConversation(sid, model, preprompt, messages=[root])
        failed = fault is not None and fault.kind == "create_then_error"
        acct.record_created(cid, answered_error=failed)
        acct.record_message(cid, MessageRecord(root.id, "system", preprompt, None))
        if fault is not None and failed:
            refused = error_page(request, fault.status, "injected fault: created, then failed")
            return finish(request, refused, sid, new, cid)
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
            return finish(request, error_page(request, 404, "Conversation not found"), sid, new, cid)
        return finish(request, JSONResponse(superjson(cid, conv)), sid, new, cid)

    async def send(request: Request) -> Response:
        sid, new, answer = await enter(request, "send")
        cid, conv = conversation(sid, request)
        if answer is not None:
            return finish(request, answer, sid, new, cid)
        if conv is None:
            return finish(request, error_page(request, 404, "Conversation not found"), sid, new, cid)
        fields = form_fields(request.headers.get("content-type", ""), await request.body())
        try:
            data = json.loads(fields["data"]) if fields is not None and "data" in fields else None
        except ValueError:
            data = None
        if data is None or send_problem(data) is not None:
            return finish(request, error_page(request, 400, _INVALID), sid, new, cid)
        parent = conv.find(data.get("id"))
        if parent is None:
            answer = error_page(request, 500, "An error occurred", errorId=str(uuid.uuid4()))
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
        generation_id = data.get("generationId") or str(uuid.uuid4())
        run = Generation(cfg, acct, cid, assistant, tokens=tokens, reasoning=reasoning, title=title, fault=fault,
                         generation_id=generation_id)  # fmt: skip
        conv.add_run(run.start())
        response = StreamingResponse(run.body(), media_type="application/jsonl")
        return finish(request, response, sid, new, cid)

    def _add_turn(cid: str, conv: StoredChatUiConversation, parent: StoredMessage, inputs: str) -> StoredMessage:
        """Hang the user's message from ``parent`` and an empty assistant message from it."""
        branched = parent is not conv.messages[-1]
        user = StoredMessage(str(uuid.uuid4()), "user", inputs.replace("\r\n", "\n"), [*parent.ancestors, parent.id])
        assistant = StoredMessage(str(uuid.uuid4()), "assistant", "", [*user.ancestors, user.id])
        parent.children.append(user.id)
        user.children.append(assistant.id)
        conv.messages += [user, assistant]
        conv.updated_at = time.time()
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
            return finish(request, error_page(request, 404, "Conversation not found"), sid, new, cid)
        try:
            point = stop_point(json.loads(await request.body()))
        except ValueError:  # parsed leniently: the stop succeeds, its point is lost
            point = None
        run = conv.runs.get(point[0]) if point is not None else None
        running = [r for r in conv.runs.values() if r.running]
        for r in running:
            r.stop(point[1] if point is not None and r is run else None)
        if run is not None and not running:  # finished already: the stored answer is still clamped
            run.stop(point[1] if point is not None else None)
        acct.record_stop(hit_running=bool(running), seen=point[1] if point is not None else None)
        return finish(request, Response(status_code=200), sid, new, cid)

    async def delete(request: Request) -> Response:
        sid, new, answer = await enter(request, "delete")
        cid, conv = conversation(sid, request)
        if answer is not None:
            acct.record_delete_fault(cid)
            return finish(request, answer, sid, new, cid)
        if conv is None:
            acct.record_delete_unknown(cid)
            return finish(request, error_page(request, 404, "Conversation not found"), sid, new, cid)
        del st.conversations[cid]  # its runs go on: only stop-generating stops a generation
        acct.record_deleted(cid)
        return finish(request, Response(status_code=200), sid, new, cid)

    return Starlette(
        middleware=[Middleware(AbsoluteForm)],
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/settings", settings, methods=["POST"]),
            Route("/conversation", create, methods=["POST"]),
            *api_routes(st, enter, conversation),
            Route("/api/v2/conversations/{cid}", fetch, methods=["GET"]),
            Route("/conversation/{cid}", send, methods=["POST"]),
            Route("/conversation/{cid}/stop-generating", stop, methods=["POST"]),
            Route("/conversation/{cid}", delete, methods=["DELETE"]),
            *routes,
        ],
    )
