"""The seam between the stream reader and a dialect's parser: what a parser is, and how it refuses.

Each dialect's parser lives in its package (the 2023 TGI event stream: ``_dialects.h2o.stream``;
chat-ui's JSON lines: ``_dialects.chatui.stream``); both emit the events of ``_events`` and raise
:class:`StreamSyntaxError` on a stream that breaks their protocol. Pure: no I/O.
"""

from __future__ import annotations

from typing import Final, Protocol

from ._events import Event, FinalAnswer, StreamError

__all__ = ["DEFAULT_MAX_LINE_BYTES", "Event", "FinalAnswer", "Parser", "StreamError", "StreamSyntaxError"]

DEFAULT_MAX_LINE_BYTES: Final = 1 << 20


class StreamSyntaxError(ValueError):
    """The stream broke the protocol. ``text`` holds the offending input, truncated."""

    def __init__(self, message: str, text: str = "") -> None:
        super().__init__(f"{message}: {text!r}" if text else message)
        self.reason = message
        self.text = text


class Parser(Protocol):
    """What the stream reader needs of a dialect's parser."""

    bytes_seen: int

    @property
    def final(self) -> FinalAnswer | None: ...
    def feed(self, data: bytes) -> list[Event]: ...
    def close(self) -> list[Event]: ...
