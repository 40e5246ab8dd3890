"""The 2023 dialect's parser: the text-generation-inference event stream, incremental. Pure: no I/O.

Feed it the body's bytes as they arrive, in chunks of any size; it returns the events completed by
each chunk: a ``str`` per token to show, a :class:`FinalAnswer`, or a :class:`StreamError`. It accepts
``data:`` with or without a space, ``\\n`` or ``\\r\\n`` line ends, lines split across chunks, blank
lines, ``:`` keep-alive comments, the other SSE fields (``event:``, ``id:``, ``retry:``) and unknown
JSON fields. It refuses a line that is not JSON, a line longer than ``max_line_bytes``, and a stream
that ends without its final event, with :class:`StreamSyntaxError` carrying the offending text
truncated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from ... import _json
from ..._events import Event, FinalAnswer, StreamError
from ..._stream import DEFAULT_MAX_LINE_BYTES, StreamSyntaxError

__all__ = ["StreamParser"]

_SNIPPET: Final = 120
_IGNORED_FIELDS: Final = (b"event:", b"id:", b"retry:")

_JSONLoader = Callable[[bytes], object]


def _snippet(raw: bytes) -> str:
    text = raw[: _SNIPPET * 4].decode("utf-8", "replace")
    return text if len(text) <= _SNIPPET else text[:_SNIPPET] + "…"


class StreamParser:
    """Turns body bytes into :data:`Event` objects. One parser per streamed answer."""

    __slots__ = ("_buf", "_errored", "_final", "_loads", "_max_line", "bytes_seen")

    def __init__(self, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, loads: _JSONLoader | None = None) -> None:
        self._buf = b""
        self._final: FinalAnswer | None = None
        self._errored = False
        self._max_line = max_line_bytes
        self._loads: _JSONLoader = loads or _json.loads
        self.bytes_seen = 0

    @property
    def final(self) -> FinalAnswer | None:
        """The final event, once seen."""
        return self._final

    def feed(self, data: bytes) -> list[Event]:
        """Parse one chunk; return the events it completed (possibly none)."""
        self.bytes_seen += len(data)
        if self._buf:
            data = self._buf + data
        if b"\n" not in data:
            self._buf = data
            if len(data) > self._max_line:
                raise StreamSyntaxError(f"stream line longer than {self._max_line} bytes", _snippet(data))
            return []
        lines = data.split(b"\n")
        self._buf = lines.pop()
        if len(self._buf) > self._max_line:
            raise StreamSyntaxError(f"stream line longer than {self._max_line} bytes", _snippet(self._buf))
        events: list[Event] = []
        line_ = self._line
        for line in lines:
            if line and line != b"\r":  # half of the lines are the blank separators: skip them here
                line_(line, events)
        return events

    def close(self) -> list[Event]:
        """Signal the end of the body: parse a last line without a newline; require the final event."""
        events: list[Event] = []
        if self._buf:
            line, self._buf = self._buf, b""
            self._line(line, events)
        if self._final is None and not self._errored:
            raise StreamSyntaxError("stream ended without its final event (connection dropped?)")
        return events

    def _line(self, line: bytes, events: list[Event]) -> None:
        # The common case first: a data line. A trailing "\r" needs no stripping there (JSON allows
        # trailing whitespace); only the rare lines below look at it.
        if line[:5] != b"data:":
            if line[-1:] == b"\r":
                line = line[:-1]
            if not line or line[:1] == b":" or line.startswith(_IGNORED_FIELDS):
                return
            raise StreamSyntaxError("unexpected line in stream", _snippet(line))
        if len(line) > self._max_line:
            raise StreamSyntaxError(f"stream line longer than {self._max_line} bytes", _snippet(line))
        payload = line[5:]
        try:
            obj = self._loads(payload)
        except (ValueError, RecursionError) as exc:
            raise StreamSyntaxError("stream line is not valid JSON", _snippet(payload)) from exc
        if type(obj) is not dict:
            raise StreamSyntaxError("stream event is not a JSON object", _snippet(payload))
        if self._final is not None:
            raise StreamSyntaxError("event after the final event", _snippet(payload))
        token = obj.get("token")
        if token is not None:
            if type(token) is not dict:
                raise StreamSyntaxError("'token' is not an object", _snippet(payload))
            if not token.get("special"):
                text = token.get("text")
                if type(text) is not str:
                    raise StreamSyntaxError("token without text", _snippet(payload))
                events.append(text)
            generated = obj.get("generated_text")
            if generated is not None:
                if type(generated) is not str:
                    raise StreamSyntaxError("'generated_text' is not a string", _snippet(payload))
                details = obj.get("details")
                self._final = FinalAnswer(generated, details if type(details) is dict else None)
                events.append(self._final)
            return
        error = obj.get("error")
        if error is not None:
            error_type = obj.get("error_type")
            self._errored = True
            events.append(StreamError(str(error), error_type if type(error_type) is str else None))
            return
        raise StreamSyntaxError("event has neither 'token' nor 'error'", _snippet(payload))
