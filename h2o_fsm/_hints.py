"""What an HTTP error status means at each step: the one place these explanations are written.

The engine puts the hint in the error's message; the CLI shows that message and adds advice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ._phase import Phase

__all__ = ["status_hint"]

_ANY_STEP: Final[Mapping[int, str]] = {
    401: "not logged in (this instance needs the browser's session cookies)",
    403: "refused by the server's CSRF gate (Referer/Origin)",
    405: "the session has not accepted the welcome modal (settings not sent)",
    410: "the model is no longer available",
    413: "the request is too large",
    429: "rate limited",
}

_PER_STEP: Final[Mapping[tuple[Phase, int], str]] = {
    (Phase.SETTINGS, 404): "no settings endpoint at this URL (wrong base URL?)",
    (Phase.CREATE, 404): "no conversation endpoint at this URL (wrong base URL?)",
    (Phase.CREATE, 400): "the server refused the request (unknown model?)",
    (Phase.FETCH, 404): "unknown conversation (expired, or another session's)",
    (Phase.SEND, 404): "unknown conversation (expired, or another session's)",
    (Phase.SEND, 400): "the server refused the message (too long, or invalid)",
    (Phase.DELETE, 404): "already gone",
}

_OF_A_CONVERSATION: Final = frozenset({(Phase.FETCH, 404), (Phase.SEND, 404)})
"""Hints about the conversation named by the request: not said of a request naming none (the catalog's
``GET /api/v2/models``, a ``fetch`` too)."""


def status_hint(phase: Phase | None, status: int, *, conversation: bool = True) -> str:
    """A few words on what ``status`` means as the answer of ``phase`` (empty when nothing useful);
    ``conversation``: the request named a conversation."""
    if phase is not None and (conversation or (phase, status) not in _OF_A_CONVERSATION):
        hint = _PER_STEP.get((phase, status))
        if hint is not None:
            return hint
    hint = _ANY_STEP.get(status)
    if hint is not None:
        return hint
    if status >= 500:
        return "the server failed"
    return ""
