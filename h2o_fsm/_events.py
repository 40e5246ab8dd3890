"""What a stream parser reports: answer tokens (plain ``str``), the final answer, an error event. Pure.

Both dialects' parsers (``_dialects.h2o.stream.StreamParser`` for the 2023 TGI event stream, the chat-ui JSON-lines
parser) emit this one vocabulary, so the stream reader does not depend on the dialect:

* ``str`` — a piece of answer text to show (no object per token);
* :class:`FinalAnswer` — the answer is complete (the whole text, and what else the server said);
* :class:`StreamError` — the server reported an error inside the stream; the turn fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Union

__all__ = ["Event", "FinalAnswer", "StreamError"]


class FinalAnswer:
    """The end of one answer.

    Attributes:
        generated_text: the whole answer as the server sent it in its final event.
        details: the 2023 dialect's generation details (``finish_reason``, ...), if sent.
        interrupted: chat-ui: the run was stopped before the model finished.
        reasoning: chat-ui: the reasoning tokens, kept apart from the answer text.
        title: chat-ui: the title the server gave the conversation, if it sent one.
    """

    __slots__ = ("details", "generated_text", "interrupted", "reasoning", "title")

    def __init__(
        self,
        generated_text: str,
        details: Mapping[str, object] | None = None,
        *,
        interrupted: bool = False,
        reasoning: str = "",
        title: str | None = None,
    ) -> None:
        self.generated_text = generated_text
        self.details = details
        self.interrupted = interrupted
        self.reasoning = reasoning
        self.title = title

    @property
    def finish_reason(self) -> str | None:
        reason = self.details.get("finish_reason") if self.details else None
        return reason if isinstance(reason, str) else None

    def __repr__(self) -> str:
        return f"FinalAnswer({self.generated_text!r}, details={self.details!r}, interrupted={self.interrupted})"


class StreamError:
    """An error event inside the stream (TGI's ``ErrorResponse``; chat-ui's ``status: error``)."""

    __slots__ = ("error_type", "message", "status")

    def __init__(self, message: str, error_type: str | None = None, status: int | None = None) -> None:
        self.message = message
        self.error_type = error_type
        self.status = status

    def __repr__(self) -> str:
        return f"StreamError({self.message!r}, error_type={self.error_type!r}, status={self.status!r})"


Event = Union[str, FinalAnswer, StreamError]  # noqa: UP007
"""One parsed event: answer text is a plain ``str``."""
