"""Incremental parser of chat-ui's reattach stream (``GET /conversation/{id}/stream``, SSE). Pure: no I/O.

The same interface and events as the answer's parser (``stream.JsonLinesParser``), so the
stream reader reads a reattached answer like the first one. Frames (blank-line separated):

* ``id: <seq>`` / ``event: update`` / ``data: <MessageUpdate JSON>`` → that update, read by a
  :class:`JsonLinesParser` (tokens, reasoning, title, ``finalAnswer``, ``status: error``);
* ``event: end`` / ``data: {"status": ...}`` → terminal: ``completed``/``interrupted`` after the final
  answer end the read; anything else (``gone``, ``error``, an end before the final answer) raises
  :class:`~h2o_fsm._stream.ResumeEnded` (the seam's, as :class:`~h2o_fsm._stream.ResumeClosed`);
* ``: heartbeat`` comments, ``retry:`` and unknown fields are ignored; ``\\r\\n`` line ends accepted.

The log is replayed from the start, and its events are not the answer's lines (keepAlive is not
logged, tokens are coalesced), so the text already delivered is skipped by characters (``skip``),
never by sequence numbers. ``last_id`` is the newest ``id:`` seen: after a plain close (:meth:`close`
raises :class:`ResumeClosed`) the caller reconnects with ``Last-Event-ID`` and calls :meth:`reconnect`,
which drops the half frame of the connection that ended.
"""

from __future__ import annotations

import json
from typing import Final

from ..._events import Event, FinalAnswer
from ..._stream import DEFAULT_MAX_LINE_BYTES, ResumeClosed, ResumeEnded, StreamSyntaxError
from .stream import JsonLinesParser

__all__ = ["END_STATUSES", "ResumeClosed", "ResumeEnded", "ResumeParser"]

END_STATUSES: Final = frozenset({"completed", "interrupted", "error", "gone"})
_SNIPPET: Final = 120


class ResumeParser:
    """Turns reattach-stream bytes into :data:`Event` objects, skipping the first ``skip`` characters
    of answer text (what the caller already got). One parser per reattached answer, across reconnects."""

    __slots__ = ("_buf", "_data", "_event", "_id", "_inner", "_max_line", "_seen", "_skip", "bytes_seen", "end",
                 "last_id")

    def __init__(self, *, skip: int = 0, seen: int = 0, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        """``skip``: characters the caller already got; ``seen``: the same text in UTF-16 code units (the stop
        point reached before the reattach, :attr:`answer_chars` while that text is replayed)."""
        if skip < 0 or seen < 0:
            raise ValueError("skip and seen must be >= 0")
        self._inner = JsonLinesParser(max_line_bytes=max_line_bytes)
        self._skip = skip
        self._seen = seen
        self._max_line = max_line_bytes
        self._buf = b""
        self._event = ""
        self._id: str | None = None
        self._data: list[bytes] = []
        self.bytes_seen = 0
        self.last_id: str | None = None
        self.end: str | None = None

    @property
    def final(self) -> FinalAnswer | None:
        return self._inner.final

    @property
    def answer_chars(self) -> int:
        """Answer text delivered so far, in UTF-16 code units (chat-ui's stop point), across the reattach:
        the replay counts it once past what the caller already had."""
        return self._inner.answer_chars if not self._skip else self._seen

    @property
    def skipping(self) -> int:
        """Characters of already-delivered text still to skip."""
        return self._skip

    def reconnect(self) -> None:
        """A new connection: forget the half frame of the one that ended (``last_id`` stays)."""
        self._buf, self._event, self._id, self._data = b"", "", None, []
        self.bytes_seen = 0

    def feed(self, data: bytes) -> list[Event]:
        self.bytes_seen += len(data)
        buf = self._buf + data if self._buf else data
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        if len(self._buf) > self._max_line:
            raise StreamSyntaxError(f"reattach line longer than {self._max_line} bytes", _snippet(self._buf))
        events: list[Event] = []
        for line in lines:
            if len(line) > self._max_line:
                raise StreamSyntaxError(f"reattach line longer than {self._max_line} bytes", _snippet(line))
            self._line(line[:-1] if line.endswith(b"\r") else line, events)
        return events

    def close(self) -> list[Event]:
        """The connection ended: fine after the final answer; else :class:`ResumeClosed` (reconnect)."""
        if self.final is not None:
            return []
        raise ResumeClosed("the reattach stream closed before the final answer")

    def _line(self, line: bytes, events: list[Event]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line.startswith(b":"):
            return
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            self._id = value.decode("utf-8", "replace")

    def _dispatch(self, events: list[Event]) -> None:
        data, event, frame_id = b"\n".join(self._data), self._event, self._id
        self._event, self._id, self._data = "", None, []
        if frame_id is not None:
            self.last_id = frame_id
        if not data and event != "end":
            return
        if event == "end":
            self._ended(data)
            return
        if event not in ("", "message", "update"):
            return  # a kind of frame we do not know: ignored, as unknown updates are
        for ev in self._inner.feed(data + b"\n"):
            if type(ev) is str and self._skip:
                if len(ev) <= self._skip:
                    self._skip -= len(ev)
                    continue
                rest, self._skip = ev[self._skip :], 0
                events.append(rest)
            else:
                events.append(ev)

    def _ended(self, data: bytes) -> None:
        try:
            obj = json.loads(data.decode("utf-8", "replace"))
        except ValueError:
            obj = None
        status = obj.get("status") if isinstance(obj, dict) else None
        self.end = status if isinstance(status, str) and status in END_STATUSES else "error"
        if self.final is None or self.end in ("gone", "error"):
            raise ResumeEnded(self.end)


def _snippet(raw: bytes) -> str:
    text = raw[: _SNIPPET * 4].decode("utf-8", "replace")
    return text if len(text) <= _SNIPPET else text[:_SNIPPET] + "…"
