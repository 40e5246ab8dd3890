"""Incremental parser of chat-ui's JSON-lines answer stream (``MessageUpdate`` objects). Pure: no I/O.

The same interface and events as ``_stream.StreamParser`` (the 2023 dialect's), so the stream
reader does not care which dialect it reads. Per line, one JSON object:

* ``{"type": "stream", "token": ...}`` → the token as a ``str``, every ``\\u0000`` removed (chat-ui
  pads tokens with NULs against length side channels); a token empty after that is skipped;
* ``{"type": "reasoning", "subtype": "stream", "token": ...}`` → kept apart, joined into
  ``FinalAnswer.reasoning`` (NULs removed too);
* ``{"type": "title", "title": ...}`` → ``FinalAnswer.title`` (before or after the final answer);
* ``{"type": "finalAnswer", "text": ..., "interrupted": ...}`` → :class:`FinalAnswer`;
* ``{"type": "status", "status": "error", "message": ..., "statusCode": ...}`` → :class:`StreamError`;
* anything else (``keepAlive``, ``started``, ``finished``, ``routerMetadata``, ``tool``, new types,
  unknown fields) is ignored, as are blank lines and whitespace around a line (the server writes
  4096 spaces after the final answer; ``\\r\\n`` line ends).

Refused with ``StreamSyntaxError`` (offending text truncated): a line that is not a JSON object, a
line (whitespace included) longer than ``max_line_bytes``, a second final answer or an answer token
after it, and a stream that ends with neither a final answer nor an error.
"""

from __future__ import annotations

import json
from typing import Any, Final

from ..._events import Event, FinalAnswer, StreamError
from ..._stream import DEFAULT_MAX_LINE_BYTES, StreamSyntaxError
from .wire import JSONLoader, json_loads

__all__ = ["JsonLinesParser"]

_SNIPPET: Final = 120
_MAX_MESSAGE: Final = 1000
_NUL: Final = "\x00"
_SPACE: Final = " \t\n\r\x0b\x0c"  # ASCII whitespace only, in str and bytes alike
_raw_decode = json.JSONDecoder().raw_decode


def _utf16_units(text: str) -> int:
    """``len(text)`` as JavaScript counts it: characters beyond the BMP are two code units."""
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def _strip(raw: bytes | str) -> bytes | str:
    return raw.strip(_SPACE) if isinstance(raw, str) else raw.strip(_SPACE.encode())


def _snippet(raw: bytes | str) -> str:
    raw = _strip(raw)
    text = raw[: _SNIPPET * 4].decode("utf-8", "replace") if isinstance(raw, bytes) else raw[: _SNIPPET + 1]
    return text if len(text) <= _SNIPPET else text[:_SNIPPET] + "…"


def _stdlib_line(line: str) -> object:
    """The standard library's decoder on one line already decoded: ``json.loads`` minus its per-call
    encoding detection and whitespace regexes (a line with whitespace around takes the slow path)."""
    obj, end = _raw_decode(line)
    if end != len(line):
        raise ValueError("trailing data")
    return obj


def _text_lines(body: bytes) -> list[Any] | None:
    try:
        return body.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        return None


class JsonLinesParser:
    """Turns a chat-ui answer body into :data:`Event` objects. One parser per streamed answer."""

    __slots__ = (
        "_errored", "_final", "_loads", "_max_line", "_pending", "_pending_len", "_reasoning", "_text", "_title",
        "answer_chars", "bytes_seen",
    )

    def __init__(self, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, loads: JSONLoader | None = None) -> None:
        self._pending: list[bytes] = []  # the start of an unfinished line, in pieces (no quadratic joins)
        self._pending_len = 0
        self._final: FinalAnswer | None = None
        self._errored = False
        self._reasoning: list[str] = []
        self._title: str | None = None
        self._max_line = max_line_bytes
        self._loads: JSONLoader = loads or json_loads
        self._text = self._loads is json.loads
        self.bytes_seen = 0
        self.answer_chars = 0
        """Answer text handed out so far, in UTF-16 code units (how chat-ui's ``seenContentLength`` counts)."""

    @property
    def final(self) -> FinalAnswer | None:
        """The final answer, once seen."""
        return self._final

    def feed(self, data: bytes) -> list[Event]:
        """Parse one chunk; return the events it completed (possibly none)."""
        self.bytes_seen += len(data)
        if b"\n" not in data:
            if data:
                self._keep(data)
            return []
        if self._pending:
            self._pending.append(data)
            data = b"".join(self._pending)
            self._pending, self._pending_len = [], 0
        max_line = self._max_line
        cut = data.rindex(b"\n")
        body, tail = data[:cut], data[cut + 1 :]
        if cut > max_line:  # only then can a complete line be too long
            for piece in body.split(b"\n"):
                if len(piece) > max_line:
                    raise StreamSyntaxError(f"stream line longer than {max_line} bytes", _snippet(piece))
        # With the stdlib decoder, decode the chunk's complete lines once and parse them as str
        # (json.loads per line would detect the encoding and run two regexes on each).
        lines: list[Any] | None = _text_lines(body) if self._text else None
        loads: Any = _stdlib_line
        if lines is None:  # bytes, line by line (with the stdlib: a line that is not UTF-8 is reported)
            lines, loads = body.split(b"\n"), self._loads
        events: list[Event] = []
        final = self._final
        for line in lines:
            try:  # JSON allows the padding and a "\r" around the value: no strip on the hot path
                obj = loads(line)
            except (ValueError, RecursionError):
                obj = self._retry(line)
                if obj is None:
                    continue
            if type(obj) is not dict:
                raise StreamSyntaxError("stream line is not a JSON object", _snippet(line))
            if obj.get("type") == "stream":
                token = obj.get("token")
                if type(token) is not str:
                    raise StreamSyntaxError("'stream' update without a string 'token'", _snippet(line))
                token = token.replace(_NUL, "")
                if token:
                    if final is not None:
                        raise StreamSyntaxError("answer token after the finalAnswer", _snippet(line))
                    events.append(token)
                    self.answer_chars += len(token) if token.isascii() else _utf16_units(token)
            else:
                self._update(obj, line, events)
                final = self._final
        if tail:
            self._keep(tail)
        return events

    def close(self) -> list[Event]:
        """Signal the end of the body: parse a last line without a newline; require the final answer."""
        events: list[Event] = []
        if self._pending:
            events = self.feed(b"\n")
            self.bytes_seen -= 1
        if self._final is None and not self._errored:
            raise StreamSyntaxError(
                "stream ended without its finalAnswer (connection dropped, or the run waits on a tool prompt)"
            )
        return events

    def _keep(self, piece: bytes) -> None:
        self._pending.append(piece)
        self._pending_len += len(piece)
        if self._pending_len > self._max_line:  # bound what one line can make us hold, spaces included
            head = b"".join(self._pending)[: _SNIPPET * 4]
            raise StreamSyntaxError(f"stream line longer than {self._max_line} bytes", _snippet(head))

    def _retry(self, line: bytes | str) -> object:
        """The slow path of a line the decoder refused: blank (None), or padded with other whitespace."""
        stripped = _strip(line)
        if not stripped:
            return None
        if stripped != line:
            try:
                return self._loads(stripped.encode("utf-8") if isinstance(stripped, str) else stripped)
            except (ValueError, RecursionError):
                pass
        raise StreamSyntaxError("stream line is not valid JSON", _snippet(line))

    def _update(self, obj: dict[str, object], line: bytes | str, events: list[Event]) -> None:
        """Every update but an answer token (those are handled inline in :meth:`feed`)."""
        kind = obj.get("type")
        if kind == "finalAnswer":
            text = obj.get("text")
            if type(text) is not str:
                raise StreamSyntaxError("'finalAnswer' without a string 'text'", _snippet(line))
            if self._final is not None:
                raise StreamSyntaxError("a second finalAnswer", _snippet(line))
            self._final = FinalAnswer(
                text,
                interrupted=obj.get("interrupted") is True,
                reasoning="".join(self._reasoning),
                title=self._title,
            )
            events.append(self._final)
        elif kind == "status":
            if obj.get("status") == "error":
                message, code = obj.get("message"), obj.get("statusCode")
                self._errored = True
                events.append(
                    StreamError(
                        message[:_MAX_MESSAGE] if type(message) is str else "the server reported an error",
                        None,
                        code if type(code) is int else None,
                    )
                )
        elif kind == "title":
            title = obj.get("title")
            if type(title) is str:
                self._title = title
                if self._final is not None:
                    self._final.title = title
        elif kind == "reasoning":
            token = obj.get("token")
            if obj.get("subtype") == "stream" and type(token) is str:
                self._reasoning.append(token.replace(_NUL, ""))
