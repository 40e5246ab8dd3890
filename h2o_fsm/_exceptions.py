"""The exception hierarchy of h2o-fsm.

Every error the engine raises about a conversation is an :class:`H2oError`::

    H2oError                      phase, status, conversation_id, cleanup_error
    ├── H2oStatusError            the server answered an error status (4xx/5xx, or an unexpected one)
    │   ├── H2oUsageLimitError    chat-ui's usage limit (too many conversations): never retried
    │   └── H2oDialectError       the answer of a server of the other dialect (.suggested_dialect)
    ├── H2oTransportError         the request could not be completed (connect, read, dropped connection)
    │   └── H2oTimeoutError       one of *our* timeouts fired (a step, the token gap, the deadline)
    ├── H2oProtocolError          the answer broke the protocol (HTML instead of JSON, malformed stream line,
    │   │                         stream ended without its final event, oversized line)
    │   └── H2oLimitError         the stream exceeded a configured limit (bytes, tokens)
    ├── H2oUpstreamError          the model server sent an error event in the stream
    ├── H2oCleanupError           the DELETE of a conversation failed (only raised on its own when
    │                             nothing else failed; otherwise attached as ``cleanup_error``)
    ├── H2oJournalError           a sweep could not read its journal (the server down or slow, the file
    │                             locked or unreadable); the conversations' own journal writes never raise
    └── H2oStateError             misuse: a step asked of a conversation in a state that does not allow it
                                  (also a ``RuntimeError``)

Bad input (messages, parameters, base URL) is refused *before* any request with a plain
``ValueError`` or ``TypeError``; those are not ``H2oError``s.

The caller's own ``asyncio.CancelledError`` and ``TimeoutError`` (from ``asyncio.timeout`` or
``asyncio.wait_for`` around our calls) are never converted: they propagate unchanged, after the
conversation has been deleted.

Lower-level ``httpx`` errors are translated exactly once, at the boundary, with
``raise H2o… from exc``; the original is in ``__cause__``.
"""

from __future__ import annotations

import sys
from typing import ClassVar, Literal

from ._phase import Phase

__all__ = [
    "H2oCleanupError",
    "H2oDialectError",
    "H2oError",
    "H2oJournalError",
    "H2oLimitError",
    "H2oProtocolError",
    "H2oStateError",
    "H2oStatusError",
    "H2oTimeoutError",
    "H2oTransportError",
    "H2oUpstreamError",
    "H2oUsageLimitError",
    "add_note",
]

# What happened to a request (``H2oTransportError.reason``) and which timeout fired: filled in once, by
# the table in ``_failures`` (or by the engine's own timeouts), read by the retry policy and the CLI.
Reason = Literal[
    "refused",  # nothing listens there
    "unreachable",  # name resolution or another connect failure
    "tls",  # handshake or certificate
    "proxy",  # the proxy could not be reached or refused us
    "timeout",  # ``timeout`` says which one
    "disconnected",  # the server hung up before a complete answer head
    "incomplete",  # the body was cut short
    "malformed",  # an answer that cannot be read (bad status line, over the header limits)
    "unsupported",  # URL scheme
    "invalid_request",  # the request could not be sent as given
    "network",  # another read or write failure
    "unexpected",  # anything else
]
TimeoutKind = Literal["connect", "read", "write", "pool", "step", "deadline"]


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``; on Python 3.10, which has no ``add_note``, the note is kept in
    ``__notes__`` all the same (3.11's tracebacks print that list)."""
    if sys.version_info >= (3, 11):
        exc.add_note(note)
        return
    notes = getattr(exc, "__notes__", None)  # pragma: no cover - Python 3.10
    if not isinstance(notes, list):  # pragma: no cover
        notes = []
        exc.__notes__ = notes  # type: ignore[attr-defined]
    notes.append(note)  # pragma: no cover


class H2oError(Exception):
    """Base of every h2o-fsm error.

    Attributes:
        phase: the step that failed (settings, create, send, stream, delete), or ``None``.
        status: the HTTP status of the failing answer, where there was one.
        conversation_id: the server-side conversation id, where one existed.
        detail: what happened, in a few words without the phase (``message`` may start with
            "<phase> failed:"; the CLI shows ``detail`` after its own "<phase> failed").
        cleanup_error: set when deleting the conversation after this error failed too.
    """

    def __init__(
        self,
        message: str,
        *,
        phase: Phase | None = None,
        status: int | None = None,
        conversation_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = message if detail is None else detail
        self.phase = phase
        self.status = status
        self.conversation_id = conversation_id
        self.cleanup_error: H2oError | None = None

    def __str__(self) -> str:
        parts = [self.message]
        ctx = []
        if self.phase is not None:
            ctx.append(f"phase={self.phase.value}")
        if self.status is not None:
            ctx.append(f"status={self.status}")
        if self.conversation_id is not None:
            ctx.append(f"conversation_id={self.conversation_id}")
        if ctx:
            parts.append(f"({', '.join(ctx)})")
        if self.cleanup_error is not None:
            parts.append(f"[cleanup also failed: {self.cleanup_error.message}]")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, phase={self.phase}, status={self.status})"


class H2oStatusError(H2oError):
    """The server answered a step with an error status.

    Attributes:
        body: the first bytes of the error body, decoded leniently (never includes request secrets).
        retry_after: seconds from a ``Retry-After`` header, if the server sent one.
        headers: the answer's headers worth showing (content type and length, location, retry-after;
            a ``set-cookie`` named with ``***``), scrubbed: ``(name, value)`` pairs.
    """

    def __init__(
        self,
        message: str,
        *,
        phase: Phase | None = None,
        status: int | None = None,
        conversation_id: str | None = None,
        body: str = "",
        retry_after: float | None = None,
        detail: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message, phase=phase, status=status, conversation_id=conversation_id, detail=detail)
        self.body = body
        self.retry_after = retry_after
        self.headers = headers


class H2oUsageLimitError(H2oStatusError):
    """The server refuses new conversations until some are deleted (chat-ui's 429 "You have reached the
    maximum number of conversations"). Not a rate limit: never retried; a sweep or deleting old
    conversations helps (``h2o-fsm conversations --delete-all --yes``)."""


class H2oDialectError(H2oStatusError):
    """The server answered as a server of the other dialect does.

    Attributes:
        suggested_dialect: the dialect it looks like (``"h2o"`` or ``"chat-ui"``).
    """

    suggested_dialect: str = ""


class H2oTransportError(H2oError):
    """The request could not be completed: connection refused or dropped, read failure.

    Attributes:
        reason: what happened (``"refused"``, ``"timeout"``, ``"disconnected"``, ``"malformed"``...:
            see ``Reason``), classified once from the lower-level error.
        not_sent: the request provably never reached the server (no connection was made).
        timeout: for a timeout, which one (``"connect"``, ``"read"``, ``"write"``, ``"pool"``, the
            engine's ``"step"`` bound or the conversation's ``"deadline"``), else ``None``.
    """

    default_reason: ClassVar[Reason] = "unexpected"  # when none is given (a timeout's: "timeout")

    def __init__(
        self,
        message: str,
        *,
        phase: Phase | None = None,
        status: int | None = None,
        conversation_id: str | None = None,
        detail: str | None = None,
        reason: Reason | None = None,
        not_sent: bool = False,
        timeout: TimeoutKind | None = None,
    ) -> None:
        super().__init__(message, phase=phase, status=status, conversation_id=conversation_id, detail=detail)
        self.reason: Reason = self.default_reason if reason is None else reason
        self.not_sent = not_sent
        self.timeout: TimeoutKind | None = timeout


class H2oTimeoutError(H2oTransportError):
    """One of the engine's own timeouts fired (per step, between tokens, or the overall deadline)."""

    default_reason: ClassVar[Reason] = "timeout"


class H2oProtocolError(H2oError):
    """The server's answer does not follow the protocol."""


class H2oLimitError(H2oProtocolError):
    """The stream exceeded a configured limit (bytes, tokens or line length)."""


class H2oUpstreamError(H2oError):
    """The model server reported an error inside the stream.

    Attributes:
        error_type: the ``error_type`` field of the event (e.g. ``"overloaded"``), if any.
    """

    def __init__(
        self,
        message: str,
        *,
        phase: Phase | None = None,
        status: int | None = None,
        conversation_id: str | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message, phase=phase, status=status, conversation_id=conversation_id)
        self.error_type = error_type


class H2oCleanupError(H2oError):
    """Deleting the conversation failed. The conversation may still exist on the server."""


class H2oJournalError(H2oError):
    """A sweep could not open or read its journal (Redis or PostgreSQL down or slow, a SQLite file
    locked or unreadable): nothing was swept. The original error is ``__cause__``; no password of the
    journal's URL is in the message or the chain.

    Attributes:
        journal: the journal as it may be shown (its path, or its URL without the password).
    """

    def __init__(self, message: str, *, journal: str, detail: str | None = None) -> None:
        super().__init__(message, detail=detail)
        self.journal = journal


class H2oStateError(H2oError, RuntimeError):
    """A conversation was asked for a step its current state does not allow."""
