"""Today's chat-ui dialect (mid-2024 on): JSON create with a preprompt, a multipart send that hangs
from a parent message of the conversation's tree, a JSON-lines stream, stop-generating when a turn
is abandoned; no generation parameters (the server's model configuration rules)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from .._phase import Phase
from .._protocol import Messages, Parameters, format_prompt, prompt_text, validate_messages
from . import BaseDialect, Body, DialectState
from .chatui_stream import JsonLinesParser
from .chatui_wire import create_body, parse_conversation, parse_create_answer, send_data, split_system, stop_body

if TYPE_CHECKING:
    from .._stream import Parser

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
    optional_steps: frozenset[Phase] = frozenset({Phase.FETCH, Phase.STOP})
    settings_by_default = False
    # a 2023 client's form settings: today's chat-ui takes JSON
    signs: Mapping[Phase, frozenset[int]] = {Phase.SETTINGS: frozenset({400, 415, 422})}
    emulator: str | None = "h2o_fsm.server._chatui_app:create_chatui_app"

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

    def stop_body(self, state: DialectState) -> Body:
        return Body(json=stop_body(_state(state).generation_id))

    def describe(self, phase: Phase, model: str, prompt: str, parameters: Parameters) -> str:
        if phase is Phase.SETTINGS:
            return f"json activeModel={model!r}"
        if phase is Phase.CREATE:
            return f"json {{'model': {model!r}, 'preprompt': ...}}"
        if phase is Phase.SEND:
            return f"multipart data={{inputs={prompt}, id=<parent message>}}"
        return ""


CHAT_UI: Final = ChatUiDialect()
