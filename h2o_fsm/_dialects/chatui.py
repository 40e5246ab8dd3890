"""Today's chat-ui dialect (mid-2024 on): JSON create with a preprompt, a multipart send that hangs
from a parent message of the conversation's tree, a JSON-lines stream, stop-generating when a turn
is abandoned; no generation parameters (the server's model configuration rules)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final

from .._phase import Phase
from .._protocol import Messages, Parameters, format_prompt, prompt_text, validate_messages
from . import Body, DialectName
from .chatui_stream import JsonLinesParser
from .chatui_wire import create_body, parse_conversation, parse_create_answer, send_data, split_system, stop_body

if TYPE_CHECKING:
    from .._stream import Parser

__all__ = ["CHAT_UI", "ChatUiDialect"]


class ChatUiDialect:
    name: DialectName = "chat-ui"
    optional_steps: frozenset[Phase] = frozenset({Phase.FETCH, Phase.STOP, Phase.REATTACH})
    settings_by_default = False
    welcome_gate: int | None = None

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

    def create_body(self, model: str, preprompt: str | None) -> Body:
        return Body(json=create_body(model, preprompt))

    def parse_create(self, raw: bytes) -> tuple[str, str | None]:
        answer = parse_create_answer(raw)
        return answer.conversation_id, answer.root_message_id

    def parse_fetch(self, raw: bytes) -> str:
        return parse_conversation(raw).last_message_id

    def send_body(self, prompt: str, parameters: Parameters, parent_id: str | None, generation_id: str) -> Body:
        if parent_id is None:  # pragma: no cover - the fetch step always learns one first
            raise ValueError("no parent message to hang the turn from")
        data = json.dumps(send_data(prompt, parent_id, generation_id), ensure_ascii=False)
        return Body(files={"data": (None, data)})

    def new_parser(self, max_line_bytes: int) -> Parser:
        return JsonLinesParser(max_line_bytes=max_line_bytes)

    def stop_body(self, generation_id: str) -> Body:
        return Body(json=stop_body(generation_id))

    def describe(self, phase: Phase, model: str, prompt: str, parameters: Parameters) -> str:
        if phase is Phase.SETTINGS:
            return f"json activeModel={model!r}"
        if phase is Phase.CREATE:
            return f"json {{'model': {model!r}, 'preprompt': ...}}"
        if phase is Phase.SEND:
            return f"multipart data={{inputs={prompt}, id=<parent message>}}"
        return ""


CHAT_UI: Final = ChatUiDialect()
