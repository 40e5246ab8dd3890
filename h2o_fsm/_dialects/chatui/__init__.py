"""Today's chat-ui dialect (mid-2024 on): JSON create with a preprompt, a multipart send that hangs
from a parent message of the conversation's tree, a JSON-lines stream, stop-generating when a turn
is abandoned; no generation parameters (the server's model configuration rules).

One package: its bodies and answer readers (``wire``), its parser (``stream``), the reattach stream's
(``resume``), the model and conversation lists (``catalog``, with the usage limit), and here the dialect
the registry holds, with its per-conversation state."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final
from urllib.parse import urlencode

from ..._phase import Phase
from ..._protocol import KNOWN_PARAMETERS, Messages, Parameters, format_prompt, prompt_text, validate_messages
from .. import BaseDialect, Body, DialectState
from .catalog import CATALOG, is_usage_limit
from .resume import ResumeParser
from .stream import JsonLinesParser
from .wire import create_body, parse_conversation, parse_create_answer, send_data, split_system, stop_body

if TYPE_CHECKING:
    from ..._listing_types import CatalogWire
    from ..._stream import Parser, ResumingParser

__all__ = ["CHAT_UI", "ChatUiDialect", "ChatUiState"]


class ChatUiState(DialectState):
    """One conversation's place in chat-ui's message tree, and the generation a stop would name."""

    __slots__ = ("generation_id", "parent_id")

    def __init__(self, preprompt: str | None = None) -> None:
        super().__init__(preprompt)
        self.parent_id: str | None = None  # the message the next turn hangs from
        self.generation_id = ""  # the running turn's id (what stop-generating names)


def _state(state: DialectState) -> ChatUiState:
    assert isinstance(state, ChatUiState)
    return state


class ChatUiDialect(BaseDialect):
    name: str = "chat-ui"
    summary = "today's chat-ui"
    optional_steps: frozenset[Phase] = frozenset({Phase.FETCH, Phase.STOP, Phase.REATTACH})
    settings_by_default = False
    # a 2023 client's form settings: today's chat-ui takes JSON (its request.json() fails: 500, or its schema)
    # (not 400: a 2023 server's own answer to an unknown model)
    signs: Mapping[Phase, frozenset[int]] = {Phase.SETTINGS: frozenset({415, 422, 500})}
    probe: frozenset[int] = frozenset({200})  # GET /api/v2/models: the model list
    emulator: str | None = "h2o_fsm.server._chatui_app:create_chatui_app"
    default_model: str | None = None  # the server's first listed (GET /api/v2/models)
    # the 2023 names are accepted (one code path for both dialects, dialect="auto") but not sent: the
    # server takes none, its model's configuration rules; any other name is a typo (a TypeError)
    parameters: frozenset[str] = KNOWN_PARAMETERS
    catalog: CatalogWire | None = CATALOG  # GET /api/v2/models, the paged conversation list, delete-all

    def new_state(self, preprompt: str | None) -> DialectState:
        return ChatUiState(preprompt)

    def prepare(self, prompt: str | Messages, *, first: bool) -> tuple[str | None, str]:
        if isinstance(prompt, str):
            return None, prompt_text(prompt)
        messages = validate_messages(prompt)
        if not first:  # the conversation exists: a system message can only travel as text
            return None, format_prompt(messages)
        preprompt, rest = split_system(messages)
        if not rest:
            raise ValueError("messages hold only a system message: add the turn's own message")
        return preprompt, format_prompt(rest)

    def settings_body(self, model: str) -> Body:
        return Body(json={"activeModel": model, "welcomeModalSeen": True})

    def create_body(self, state: DialectState, model: str) -> Body:
        return Body(json=create_body(model, state.preprompt))

    def after_create(self, state: DialectState, raw: bytes) -> str:
        answer = parse_create_answer(raw)
        _state(state).parent_id = answer.root_message_id
        return answer.conversation_id

    def skips(self, phase: Phase, state: DialectState) -> bool:
        return phase is Phase.FETCH and _state(state).parent_id is not None  # the create answer named it

    def after_fetch(self, state: DialectState, raw: bytes) -> None:
        _state(state).parent_id = parse_conversation(raw).last_message_id

    def send_body(self, state: DialectState, prompt: str, parameters: Parameters) -> Body:
        st = _state(state)
        if st.parent_id is None:  # pragma: no cover - the fetch step always learns one first
            raise ValueError("no parent message to hang the turn from")
        st.generation_id = str(uuid.uuid4())
        data = json.dumps(send_data(prompt, st.parent_id, st.generation_id), ensure_ascii=False)
        return Body(files={"data": (None, data)})

    def after_turn(self, state: DialectState) -> None:
        _state(state).parent_id = None  # the next turn hangs from the message this one created

    def new_parser(self, max_line_bytes: int) -> Parser:
        return JsonLinesParser(max_line_bytes=max_line_bytes)

    def resume_parser(self, previous: Parser | None, skip: int, max_line_bytes: int) -> ResumingParser:
        seen = previous.answer_chars if isinstance(previous, JsonLinesParser) else 0  # the stop point so far
        return ResumeParser(skip=skip, seen=seen, max_line_bytes=max_line_bytes)

    def usage_limited(self, status: int, body: str) -> bool:  # a 429 saying "maximum number of conversations"
        return is_usage_limit(status, body)

    def stop_body(self, state: DialectState) -> Body:
        """The stop of the running turn at its stop point: the answer text delivered so far (UTF-16 code
        units, as chat-ui counts; none when the turn stopped before its stream)."""
        parser = state.parser
        seen = parser.answer_chars if isinstance(parser, (JsonLinesParser, ResumeParser)) else 0
        return Body(json=stop_body(_state(state).generation_id, seen))

    def stop_body_of(self, generation_id: str) -> Body:
        return Body(json=stop_body(generation_id))

    def reattach_query(self, state: DialectState) -> str:  # the run's log, replayed from the start
        return "?" + urlencode({"generationId": _state(state).generation_id, "fromSeq": "0"})

    def generation(self, state: DialectState) -> str:
        return _state(state).generation_id

    def describe(self, phase: Phase, model: str, prompt: str, parameters: Parameters) -> str:
        if phase is Phase.SETTINGS:
            return f"json activeModel={model!r}"
        if phase is Phase.CREATE:
            return f"json {{'model': {model!r}, 'preprompt': ...}}"
        if phase is Phase.SEND:
            return f"multipart data={{inputs={prompt}, id=<parent message>}}"
        return ""


CHAT_UI: Final = ChatUiDialect()
