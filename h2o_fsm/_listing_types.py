"""What a client asks its server outside conversations, dialect-neutral: the public records of a model
list and of a conversation list, and :class:`CatalogWire`, the requests and readers a dialect that has
such lists supplies (its registry entry's ``catalog``; chat-ui's is ``_dialects/chatui/catalog``). Pure:
no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["CatalogWire", "ConversationSummary", "ModelInfo", "Request"]

Request = tuple[str, str]
"""Method and path (with its query) of one request."""


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


class CatalogWire(Protocol):
    """A dialect's requests outside a conversation's table and the readers of their answers; a reader
    raises ``ValueError`` on a malformed answer (its message safe to show), bounded whatever the server sends."""

    @property
    def models_request(self) -> Request:
        """The model list's request (its answer: :meth:`parse_models`)."""
        ...

    @property
    def delete_all_request(self) -> Request:
        """The request deleting every conversation of the session (its answer: :meth:`parse_delete_all`)."""
        ...

    def conversations_page(self, page: int) -> Request:
        """The request of page ``page`` (from 0) of the session's conversation list."""
        ...

    def parse_models(self, raw: bytes) -> tuple[ModelInfo, ...]:
        """The models, the server's default first."""
        ...

    def parse_conversation_list(self, raw: bytes) -> tuple[tuple[ConversationSummary, ...], bool]:
        """One page: ``(its conversations, whether more pages follow)``."""
        ...

    def parse_delete_all(self, raw: bytes) -> int | None:
        """How many were deleted, when the server says (else ``None``)."""
        ...
