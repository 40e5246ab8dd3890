"""A dialect defined outside the package: the proof that the registry is open (issue 15, item 1).

"toy" speaks a protocol of its own on the table's paths: ``POST /conversation`` answers
``{"id": ...}``, ``POST /conversation/{id}`` takes ``{"say": prompt}`` and streams lines
``+<text>`` (a token) and ``=<whole answer>`` (the end); ``DELETE /conversation/{id}`` answers 204;
a create while the server "forgot" the session answers 419, which the dialect recovers from (its
recovery rule). :func:`toy_app` is its server, a small Starlette app; nothing of ``h2o_fsm`` is
edited for it: it is registered from here (:func:`register_toy`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from h2o_fsm._dialects import BaseDialect, Body, DialectState, register, unregister
from h2o_fsm._events import Event, FinalAnswer
from h2o_fsm._phase import Phase
from h2o_fsm._protocol import Messages, Parameters, prompt_text, validate_conversation_id
from h2o_fsm._stream import StreamSyntaxError

FORGOT = 419  # the toy server's "who are you?": settings again, then create again


class ToyState(DialectState):
    __slots__ = ("turns",)

    def __init__(self, preprompt: str | None = None) -> None:
        super().__init__(preprompt)
        self.turns = 0


class ToyParser:
    def __init__(self, max_line_bytes: int) -> None:
        self._buf = b""
        self._final: FinalAnswer | None = None
        self._max = max_line_bytes
        self.bytes_seen = 0

    @property
    def final(self) -> FinalAnswer | None:
        return self._final

    def feed(self, data: bytes) -> list[Event]:
        self.bytes_seen += len(data)
        *lines, self._buf = (self._buf + data).split(b"\n")
        if len(self._buf) > self._max:
            raise StreamSyntaxError("toy line too long")
        events: list[Event] = []
        for line in lines:
            text = line.decode()
            if text.startswith("+"):
                events.append(text[1:])
            elif text.startswith("="):
                self._final = FinalAnswer(text[1:])
                events.append(self._final)
            elif text:
                raise StreamSyntaxError("not a toy line", text[:40])
        return events

    def close(self) -> list[Event]:
        if self._final is None:
            raise StreamSyntaxError("toy stream ended without its '=' line")
        return []


class ToyDialect(BaseDialect):
    name = "toy"
    summary = "a test-only toy protocol"
    optional_steps = frozenset({Phase.SETTINGS})
    settings_by_default = False
    signs: Mapping[Phase, frozenset[int]] = {Phase.CREATE: frozenset({FORGOT})}

    def new_state(self, preprompt: str | None) -> DialectState:
        return ToyState(preprompt)

    def prepare(self, prompt: str | Messages, *, first: bool) -> tuple[str | None, str]:
        return None, prompt_text(prompt)

    def settings_body(self, model: str) -> Body:
        return Body(json={"model": model})

    def create_body(self, state: DialectState, model: str) -> Body:
        return Body(json={"model": model})

    def after_create(self, state: DialectState, raw: bytes) -> str:
        return validate_conversation_id(json.loads(raw)["id"])

    def send_body(self, state: DialectState, prompt: str, parameters: Parameters) -> Body:
        assert isinstance(state, ToyState)
        state.turns += 1
        return Body(json={"say": prompt, "turn": state.turns})

    def renews_session(self, phase: Phase, status: int) -> bool:
        return phase is Phase.CREATE and status == FORGOT

    def new_parser(self, max_line_bytes: int) -> ToyParser:
        return ToyParser(max_line_bytes)

    def describe(self, phase: Phase, model: str, prompt: str, parameters: Parameters) -> str:
        return f"toy say={prompt}" if phase is Phase.SEND else ""


TOY = ToyDialect()


def register_toy() -> ToyDialect:
    register(TOY, replace=True)
    return TOY


def unregister_toy() -> None:
    unregister(TOY.name)


def toy_app(log: list[tuple[str, str, Any]], *, forget_first_create: bool = False) -> Starlette:
    """The toy protocol's server; ``log`` gets ``(method, path, body)`` per request."""
    live: set[str] = set()
    forgot = [forget_first_create]

    async def create(request: Request) -> Response:
        log.append(("POST", request.url.path, await request.json()))
        if forgot[0]:
            forgot[0] = False
            return Response(status_code=FORGOT)
        cid = uuid.uuid4().hex[:24]
        live.add(cid)
        return JSONResponse({"id": cid})

    async def settings(request: Request) -> Response:
        log.append(("POST", request.url.path, await request.json()))
        return Response(status_code=204)

    async def conversation(request: Request) -> Response:
        cid = request.path_params["cid"]
        if request.method == "DELETE":
            log.append(("DELETE", request.url.path, None))
            if cid not in live:
                return Response(status_code=404)
            live.discard(cid)
            return Response(status_code=204)
        body = await request.json()
        log.append(("POST", request.url.path, body))
        if cid not in live:
            return Response(status_code=404)
        words = [f"{w} " for w in str(body["say"]).split()][::-1]

        async def lines() -> AsyncIterator[bytes]:
            for w in words:
                yield f"+{w}\n".encode()
            yield ("=" + "".join(words) + "\n").encode()

        return StreamingResponse(lines(), media_type="text/plain")

    app = Starlette(routes=[
        Route("/settings", settings, methods=["POST"]),
        Route("/conversation", create, methods=["POST"]),
        Route("/conversation/{cid}", conversation, methods=["POST", "DELETE"]),
    ])
    app.state.live = live
    return app
