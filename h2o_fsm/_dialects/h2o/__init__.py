"""The 2023 dialect (gpt-gm.h2o.ai's chat-ui fork): form settings behind a welcome gate, JSON send with
generation parameters, a text-generation-inference event stream.

One package: its bodies (``bodies``), its parser (``stream``), and here the dialect the registry holds,
with its recovery rule (the welcome gate) and its per-conversation state (nothing beyond the base's).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from ..._phase import Phase
from ..._protocol import Messages, Parameters, prompt_text
from ..._protocol import validate_conversation_id as _valid_id
from .. import BaseDialect, Body, DialectState
from .bodies import create_body, send_body, settings_form
from .stream import StreamParser

if TYPE_CHECKING:
    from ..._stream import Parser

__all__ = ["H2O", "WELCOME_GATE", "H2oDialect", "create_body", "send_body", "settings_form"]

WELCOME_GATE: Final = 405
"""The create's status while the session has not accepted the settings (the welcome modal)."""


class H2oDialect(BaseDialect):
    name: str = "h2o"
    summary = "the 2023 H2O server"
    optional_steps: frozenset[Phase] = frozenset({Phase.SETTINGS})
    settings_by_default = True
    # a client of today's chat-ui: the welcome gate refuses its create; no /api/v2 routes (its fetch: 404)
    signs: Mapping[Phase, frozenset[int]] = {Phase.CREATE: frozenset({WELCOME_GATE}), Phase.FETCH: frozenset({404})}
    probe: frozenset[int] = frozenset({404, 405})  # GET /api/v2/models: no such route
    emulator: str | None = "h2o_fsm.server._h2o_app:create_h2o_app"

    def prepare(self, prompt: str | Messages, *, first: bool) -> tuple[str | None, str]:
        return None, prompt_text(prompt)

    def settings_body(self, model: str) -> Body:
        return Body(form=settings_form(model))

    def create_body(self, state: DialectState, model: str) -> Body:
        return Body(json=create_body(model))

    def after_create(self, state: DialectState, raw: bytes) -> str:
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"create answered 200 but not JSON: {raw[:120].decode('utf-8', 'replace')!r}") from exc
        cid = obj.get("conversationId") if isinstance(obj, dict) else None
        if cid is None:
            raise ValueError("create answered without a 'conversationId'")
        return _valid_id(cid)

    def send_body(self, state: DialectState, prompt: str, parameters: Parameters) -> Body:
        return Body(json=send_body(prompt, parameters))

    def renews_session(self, phase: Phase, status: int) -> bool:
        return phase is Phase.CREATE and status == WELCOME_GATE

    def new_parser(self, max_line_bytes: int) -> Parser:
        return StreamParser(max_line_bytes=max_line_bytes)

    def describe(self, phase: Phase, model: str, prompt: str, parameters: Parameters) -> str:
        if phase is Phase.SETTINGS:
            return f"form activeModel={model!r} (+4 fixed fields)"
        if phase is Phase.CREATE:
            return f"json {{'model': {model!r}}}"
        if phase is Phase.SEND:
            return f"json inputs={prompt} parameters={parameters}"
        return ""


H2O: Final = H2oDialect()
