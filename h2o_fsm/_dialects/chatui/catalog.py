"""chat-ui's requests outside a conversation's table — the model list, the session's conversation list,
delete-all — and the readers of their answers; the usage-limit answer recognised. Pure: no I/O.

Method and path of each request are written here once (``MODELS``, ``conversations_page``,
``DELETE_ALL``); the client's methods (``_catalog``) send them. Every reader is bounded (at most
:data:`MAX_ITEMS` entries, strings cut to :data:`MAX_TEXT` characters) and validates what reaches a URL
or a model id; anything malformed raises :class:`~h2o_fsm._dialects.chatui.wire.WireError` (its message
safe to show).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..._protocol import validate_conversation_id, validate_model
from .wire import WireError, json_loads

__all__ = [
    "DELETE_ALL",
    "MAX_ITEMS",
    "MAX_TEXT",
    "MODELS",
    "USAGE_LIMIT_WORDS",
    "ConversationSummary",
    "ModelInfo",
    "conversations_page",
    "is_usage_limit",
    "parse_conversation_list",
    "parse_delete_all",
    "parse_models",
]

MODELS: Final = ("GET", "/api/v2/models")
DELETE_ALL: Final = ("DELETE", "/api/v2/conversations")
MAX_ITEMS: Final = 1000
"""Most entries one answer (a model list, a page of conversations) may hold."""
MAX_TEXT: Final = 2000
"""Longest text kept of a server-sent string (a description, a title); the rest is cut."""
MAX_PAGE: Final = 10_000
USAGE_LIMIT_WORDS: Final = "maximum number of conversations"
"""What chat-ui's usage-limit answer says (``"You have reached the maximum number of conversations. Delete
some to continue."``): a 429 with these words is not a rate limit."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model a chat-ui server offers (``GET /api/v2/models``)."""

    id: str
    name: str
    display_name: str
    description: str
    multimodal: bool
    tools: bool
    reasoning: bool


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """One conversation of the session (``GET /api/v2/conversations``); ``updated_at`` as the server wrote it."""

    id: str
    title: str
    model: str
    updated_at: str


def conversations_page(page: int) -> tuple[str, str]:
    """Method and path of page ``page`` (from 0) of the session's conversation list."""
    if isinstance(page, bool) or not isinstance(page, int) or not 0 <= page < MAX_PAGE:
        raise ValueError(f"page must be an int in [0, {MAX_PAGE}), got {page!r}")
    return "GET", f"/api/v2/conversations?p={page}"


def is_usage_limit(status: int, body: str) -> bool:
    """Whether an error answer is chat-ui's usage limit (too many conversations), not a rate limit."""
    return status == 429 and USAGE_LIMIT_WORDS in body.lower()


def _json(raw: bytes, what: str) -> object:
    """The ``json`` value of a superjson answer (or the bare value when there is no wrapper)."""
    if len(raw) > 16 << 20:
        raise WireError(f"{what} is larger than 16 MiB")
    try:
        value = json_loads(raw)
    except (ValueError, RecursionError):
        raise WireError(f"{what} is not valid JSON: {raw[:80]!r}") from None
    if type(value) is dict and "json" in value:
        return value["json"]
    return value


def _text(obj: dict[str, object], key: str, what: str, default: str = "") -> str:
    value = obj.get(key, default)
    if value is None:
        return default
    if type(value) is not str:
        raise WireError(f"{what}: {key!r} is not a string")
    return value[:MAX_TEXT]


def _flag(obj: dict[str, object], key: str) -> bool:
    return obj.get(key) is True


def _items(value: object, what: str) -> list[object]:
    if type(value) is not list:
        raise WireError(f"{what} is not a list")
    if len(value) > MAX_ITEMS:
        raise WireError(f"{what} holds more than {MAX_ITEMS} entries")
    return value


def _model(raw: object, i: int) -> ModelInfo:
    what = f"model {i}"
    if type(raw) is not dict:
        raise WireError(f"{what} is not an object")
    try:
        model_id = validate_model(raw.get("id", raw.get("name")))
    except (TypeError, ValueError) as exc:
        raise WireError(f"{what}: {exc}") from None
    name = _text(raw, "name", what, model_id)
    return ModelInfo(
        id=model_id,
        name=name,
        display_name=_text(raw, "displayName", what, name),
        description=_text(raw, "description", what),
        multimodal=_flag(raw, "multimodal"),
        tools=_flag(raw, "supportsTools"),
        reasoning=_flag(raw, "supportsReasoning"),
    )


def parse_models(raw: bytes) -> tuple[ModelInfo, ...]:
    """Read ``GET /api/v2/models`` (superjson list; the first entry is the server's default model)."""
    return tuple(_model(m, i) for i, m in enumerate(_items(_json(raw, "the model list"), "the model list")))


def _summary(raw: object, i: int) -> ConversationSummary:
    what = f"conversation {i}"
    if type(raw) is not dict:
        raise WireError(f"{what} is not an object")
    try:
        cid = validate_conversation_id(raw.get("_id", raw.get("id")))
    except ValueError as exc:
        raise WireError(f"{what}: {exc}") from None
    return ConversationSummary(cid, _text(raw, "title", what), _text(raw, "model", what),
                               _text(raw, "updatedAt", what))


def parse_conversation_list(raw: bytes) -> tuple[tuple[ConversationSummary, ...], bool]:
    """Read one page of ``GET /api/v2/conversations?p=N``: ``(its conversations, whether more pages follow)``."""
    body = _json(raw, "the conversation list")
    items: object
    if type(body) is list:  # older servers: the list alone
        items, more = body, False
    elif type(body) is dict:
        items, more = body.get("conversations"), body.get("hasMore") is True
    else:
        raise WireError("the conversation list is neither an object nor a list")
    return tuple(_summary(c, i) for i, c in enumerate(_items(items, "the conversation list"))), more


def parse_delete_all(raw: bytes) -> int | None:
    """Read ``DELETE /api/v2/conversations``: how many were deleted, when the server says (else None)."""
    if not raw.strip():
        return None
    body = _json(raw, "the delete-all answer")
    if type(body) is dict:
        body = body.get("deletedCount", body.get("count"))
    return body if type(body) is int and body >= 0 else None
