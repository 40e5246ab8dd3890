"""The reattach stream's parser (pure): SSE frames of a run's event log, the skip of text already
delivered, the end statuses, reconnects and hostile input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from h2o_fsm._dialects.chatui.resume import ResumeClosed, ResumeEnded, ResumeParser
from h2o_fsm._events import FinalAnswer, StreamError
from h2o_fsm._stream import StreamSyntaxError

TOKENS = ["Hel", "lo, ", "wor", "ld", "!"]
TEXT = "".join(TOKENS)


def frame(seq: int, update: dict[str, object], *, crlf: bool = False) -> bytes:
    nl = "\r\n" if crlf else "\n"
    return f"id: {seq}{nl}event: update{nl}data: {json.dumps(update)}{nl}{nl}".encode()


def log(*, end: str | None = "completed", crlf: bool = False) -> bytes:
    updates: list[dict[str, object]] = [{"type": "status", "status": "started"}]
    updates += [{"type": "stream", "token": t} for t in TOKENS]
    updates += [{"type": "finalAnswer", "text": TEXT, "interrupted": False}, {"type": "title", "title": "Hi"}]
    body = b": heartbeat\n\n" + b"".join(frame(i + 1, u, crlf=crlf) for i, u in enumerate(updates))
    if end is not None:
        body += b"event: end\ndata: " + json.dumps({"status": end}).encode() + b"\n\n"
    return body


def text_of(events: list[object]) -> str:
    return "".join(e for e in events if isinstance(e, str))


@given(skip=st.integers(0, len(TEXT) + 3), cuts=st.lists(st.integers(0, 400), max_size=6), crlf=st.booleans())
def test_any_split_skips_exactly_what_was_delivered(skip: int, cuts: list[int], crlf: bool) -> None:
    raw = log(crlf=crlf)
    parser = ResumeParser(skip=skip)
    events: list[object] = []
    last = 0
    for at in sorted(c % (len(raw) + 1) for c in cuts):
        events += parser.feed(raw[last:at])
        last = at
    events += parser.feed(raw[last:])
    events += parser.close()
    assert text_of(events) == TEXT[skip:]
    final = parser.final
    assert isinstance(final, FinalAnswer) and final.generated_text == TEXT and final.title == "Hi"
    assert parser.end == "completed" and parser.last_id == "8" and parser.skipping == max(0, skip - len(TEXT))


@pytest.mark.parametrize("status", ["gone", "error"])
def test_an_end_without_an_answer_raises(status: str) -> None:
    parser = ResumeParser()
    with pytest.raises(ResumeEnded) as caught:
        parser.feed(b"event: end\ndata: " + json.dumps({"status": status}).encode() + b"\n\n")
    assert caught.value.status == status


def test_an_unknown_or_unreadable_end_is_an_error() -> None:
    for data in (b'{"status": "weird"}', b"not json"):
        with pytest.raises(ResumeEnded) as caught:
            ResumeParser().feed(b"event: end\ndata: " + data + b"\n\n")
        assert caught.value.status == "error"


def test_a_plain_close_asks_for_a_reconnect_from_the_last_event() -> None:
    raw = log(end=None)
    half = raw.index(b'"finalAnswer"')
    parser = ResumeParser(skip=3)
    first = parser.feed(raw[:half])
    with pytest.raises(ResumeClosed):
        parser.close()
    assert parser.last_id == "6"  # the half frame of the final answer is not counted
    parser.reconnect()
    rest = parser.feed(frame(7, {"type": "finalAnswer", "text": TEXT, "interrupted": False}))
    assert text_of(first + rest) == TEXT[3:] and parser.close() == []


def test_an_error_update_and_unknown_frames() -> None:
    parser = ResumeParser()
    events = parser.feed(b"event: other\ndata: {}\n\nretry: 10\n\n" + frame(1, {"type": "status", "status": "error",
                         "message": "boom", "statusCode": 503}))  # fmt: skip
    assert [type(e) for e in events] == [StreamError] and events[0].message == "boom"  # type: ignore[union-attr]
    with pytest.raises(StreamSyntaxError):
        ResumeParser().feed(b"id: 1\nevent: update\ndata: {not json\n\n")
    with pytest.raises(StreamSyntaxError, match="longer"):
        ResumeParser(max_line_bytes=64).feed(b"data: " + b"x" * 100)
    with pytest.raises(ValueError):
        ResumeParser(skip=-1)
