"""The chat-ui emulator's session-wide routes and the reattach stream: ``GET /api/v2/models``, the paged
conversation list, delete-all, and ``GET /conversation/{id}/stream`` (a run's event log as SSE)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ._chatui_model import StoredChatUiConversation, error_page, fault_answer, iso
from ._chatui_stream import Generation
from ._state import ServerConfig, State

__all__ = ["api_routes", "sse_events"]

Enter = Callable[[Request, "str | None"], Awaitable[tuple[str, bool, "Response | None"]]]
Lookup = Callable[[str, Request], tuple[str, "StoredChatUiConversation | None"]]


def _frame(seq: int, update: dict[str, object]) -> bytes:
    return f"id: {seq}\nevent: update\ndata: {json.dumps(update, separators=(',', ':'))}\n\n".encode()


def _end(status: str) -> bytes:
    return f'event: end\ndata: {{"status":"{status}"}}\n\n'.encode()


async def sse_events(
    run: Generation | None, after: int, config: ServerConfig, cut: int | None = None
) -> AsyncIterator[bytes]:
    """The reattach stream of ``run``: its logged events after seq ``after``, tailed until the run ends,
    then ``event: end``; ``: heartbeat`` comments while waiting; a plain close (no ``end``) after
    ``config.reattach_cap`` seconds, or after ``cut`` events (an injected fault). No run: ``end gone``."""
    if run is None:
        yield _end("gone")
        return
    loop = asyncio.get_running_loop()
    close_at = loop.time() + config.reattach_cap
    sent = 0
    async for item in run.events(after):
        if item is None:
            yield b": heartbeat\n\n"
        else:
            yield _frame(*item)
            sent += 1
        if loop.time() >= close_at or (cut is not None and sent >= cut):
            return
    yield _end(run.status or "error")


def _last_event(request: Request) -> int:
    """Where to resume: ``Last-Event-ID`` wins over ``fromSeq``; anything unreadable is 0."""
    for raw in (request.headers.get("last-event-id"), request.query_params.get("fromSeq")):
        if raw is not None and raw.strip().isdigit():
            return int(raw.strip())
    return 0


def api_routes(st: State, enter: Enter, conversation: Lookup) -> list[Route]:
    """The routes of this module, over the chat-ui app's state, gates and conversation lookup."""
    cfg, acct, finish = st.config, st.accounting, st.finish

    def mine(sid: str) -> list[tuple[str, StoredChatUiConversation]]:
        convs = st.conversations.items()
        return [(cid, c) for cid, c in convs if c.session == sid and isinstance(c, StoredChatUiConversation)]

    async def models(request: Request) -> Response:
        sid, new, answer = await enter(request, None)
        if answer is not None:
            return finish(request, answer, sid, new)
        summaries = [
            {"id": m, "name": m, "displayName": m.rsplit("/", 1)[-1], "description": f"{m} (emulated)",
             "multimodal": False, "supportsTools": False, "supportsReasoning": cfg.reasoning_tokens > 0,
             "unlisted": False, "isRouter": False}
            for m in cfg.models
        ]  # fmt: skip
        return finish(request, JSONResponse({"json": summaries}), sid, new)

    async def listing(request: Request) -> Response:
        sid, new, answer = await enter(request, None)
        if answer is not None:
            return finish(request, answer, sid, new)
        raw = request.query_params.get("p", "0")
        page = int(raw) if raw.isdigit() else 0
        ordered = sorted(mine(sid), key=lambda item: item[1].updated_at, reverse=True)
        size = cfg.page_size
        chunk = ordered[page * size : (page + 1) * size]
        items = [{"_id": cid, "title": c.title, "updatedAt": iso(c.updated_at), "model": c.model} for cid, c in chunk]
        meta = {f"conversations.{i}.updatedAt": ["Date"] for i in range(len(items))}
        body = {"json": {"conversations": items, "hasMore": len(ordered) > (page + 1) * size}, "meta": {"values": meta}}
        return finish(request, JSONResponse(body), sid, new)

    async def delete_all(request: Request) -> Response:
        sid, new, answer = await enter(request, None)
        if answer is not None:
            return finish(request, answer, sid, new)
        gone = mine(sid)
        for cid, _ in gone:  # their runs go on, as with one DELETE
            del st.conversations[cid]
            acct.record_deleted(cid)
        return finish(request, JSONResponse({"json": len(gone)}), sid, new)

    async def reattach(request: Request) -> Response:
        sid, new, answer = await enter(request, None)
        cid, conv = conversation(sid, request)
        fault = st.faults.take("reattach") if answer is None else None
        cut = fault.at_token if fault is not None and fault.kind == "cut" else None
        if answer is None and cut is None:
            answer = await fault_answer(request, fault)
        if answer is not None:
            return finish(request, answer, sid, new, cid)
        if not cfg.reattach:  # a server from before runs: no such route
            return finish(request, error_page(request, 404, "Not found"), sid, new, cid)
        if conv is None:
            return finish(request, error_page(request, 404, "Conversation not found"), sid, new, cid)
        gid = request.query_params.get("generationId")
        run = (conv.runs.get(gid) if gid else conv.generation) if cfg.reattach_runs else None
        acct.record_reattach(found=run is not None)
        body = sse_events(run, _last_event(request), cfg, cut)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return finish(request, StreamingResponse(body, media_type="text/event-stream", headers=headers), sid, new, cid)

    return [
        Route("/api/v2/models", models, methods=["GET"]),
        Route("/api/v2/conversations", listing, methods=["GET"]),
        Route("/api/v2/conversations", delete_all, methods=["DELETE"]),
        Route("/conversation/{cid}/stream", reattach, methods=["GET"]),
    ]
