"""The 2023 dialect (gpt-gm.h2o.ai's chat-ui fork): form settings behind a welcome gate, JSON send with
generation parameters, a text-generation-inference event stream."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from .._phase import Phase
from .._protocol import DEFAULT_MODEL, KNOWN_PARAMETERS, JSONValue, Messages, Parameters, prompt_text
from .._protocol import validate_conversation_id as _valid_id
from .._stream import StreamParser
from . import Body, DialectName

if TYPE_CHECKING:
    from .._stream import Parser

__all__ = ["H2O", "H2oDialect", "create_body", "send_body", "settings_form"]


def settings_form(model: str) -> dict[str, str]:
    """Form fields of ``POST /settings``."""
    return {
        "ethicsModalAccepted": "true",
        "shareConversationsWithModelAuthors": "true",
        "ethicsModalAcceptedAt": "",
        "activeModel": model,
        "searchEnabled": "true",
    }


def create_body(model: str) -> dict[str, str]:
    """JSON body of ``POST /conversation``."""
    return {"model": model}


def send_body(
    prompt: str,
    parameters: Mapping[str, JSONValue],
    *,
    message_id: str | None = None,
    response_id: str | None = None,
) -> dict[str, JSONValue]:
    """JSON body of ``POST /conversation/{id}``."""
    return {
        "inputs": prompt,
        "parameters": dict(parameters),
        "stream": True,
        "options": {
            "id": message_id or str(uuid.uuid4()),
            "response_id": response_id or str(uuid.uuid4()),
            "is_retry": False,
            "use_cache": False,
            "web_search_id": "",
        },
    }


class H2oDialect:
    name: DialectName = "h2o"
    optional_steps: frozenset[Phase] = frozenset({Phase.SETTINGS})
    settings_by_default = True
    welcome_gate: int | None = 405
    default_model: str | None = DEFAULT_MODEL
    parameters: frozenset[str] = KNOWN_PARAMETERS
    # today's chat-ui: form settings fail its request.json() (500) or its schema
    other_answers: Mapping[tuple[Phase, int], DialectName] = {
        (Phase.SETTINGS, status): "chat-ui" for status in (400, 415, 422, 500)
    }

    def prepare(self, prompt: str | Messages, *, first: bool) -> tuple[str | None, str]:
        return None, prompt_text(prompt)

    def settings_body(self, model: str) -> Body:
        return Body(form=settings_form(model))

    def create_body(self, model: str, preprompt: str | None) -> Body:
        return Body(json=create_body(model))

    def parse_create(self, raw: bytes) -> tuple[str, str | None]:
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"create answered 200 but not JSON: {raw[:120].decode('utf-8', 'replace')!r}") from exc
        cid = obj.get("conversationId") if isinstance(obj, dict) else None
        if cid is None:
            raise ValueError("create answered without a 'conversationId'")
        return _valid_id(cid), None

    def parse_fetch(self, raw: bytes) -> str:  # pragma: no cover - the 2023 dialect skips the fetch step
        raise ValueError("the 2023 dialect has no fetch step")

    def send_body(self, prompt: str, parameters: Parameters, parent_id: str | None, generation_id: str) -> Body:
        return Body(json=send_body(prompt, parameters))

    def new_parser(self, max_line_bytes: int) -> Parser:
        return StreamParser(max_line_bytes=max_line_bytes)

    def stop_body(self, generation_id: str, seen_content_length: int = 0) -> Body:  # pragma: no cover - no stop
        return Body()

    def describe(self, phase: Phase, model: str, prompt: str, parameters: Parameters) -> str:
        if phase is Phase.SETTINGS:
            return f"form activeModel={model!r} (+4 fixed fields)"
        if phase is Phase.CREATE:
            return f"json {{'model': {model!r}}}"
        if phase is Phase.SEND:
            return f"json inputs={prompt} parameters={parameters}"
        return ""


H2O: Final = H2oDialect()
