"""The incremental stream parser (pure): every rule of docs/protocol.md step 4."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from h2o_fsm._dialects.h2o.stream import StreamParser
from h2o_fsm._events import FinalAnswer, StreamError
from h2o_fsm._stream import StreamSyntaxError


def event(text: str, *, special: bool = False, final: str | None = None) -> bytes:
    payload = {"token": {"id": 1, "text": text, "logprob": -0.1, "special": special}, "generated_text": final}
    return b"data:" + json.dumps(payload).encode()


STREAM = (
    event("Hello") + b"\n\n" + event(" world") + b"\n\n" + event("</s>", special=True, final="Hello world") + b"\n\n"
)


def parse(data: bytes, chunks: list[int] | None = None) -> list[object]:
    parser = StreamParser()
    out: list[object] = []
    if chunks is None:
        out += parser.feed(data)
    else:
        pos = 0
        for size in chunks:
            out += parser.feed(data[pos : pos + size])
            pos += size
        out += parser.feed(data[pos:])
    out += parser.close()
    return out


def texts(events: list[object]) -> list[str]:
    return [e for e in events if isinstance(e, str)]


def test_tokens_and_final() -> None:
    events = parse(STREAM)
    assert texts(events) == ["Hello", " world"]
    final = events[-1]
    assert isinstance(final, FinalAnswer) and final.generated_text == "Hello world"


def test_data_with_space_and_crlf_and_no_trailing_newline() -> None:
    data = STREAM.replace(b"data:", b"data: ").replace(b"\n", b"\r\n").rstrip()
    assert texts(parse(data)) == ["Hello", " world"]


def test_comments_blank_lines_sse_fields_and_unknown_fields_are_ignored() -> None:
    extra = b'data:{"token":{"id":1,"text":"A","special":false},"generated_text":null,"index":0,"top_tokens":[]}\n'
    data = b": keep-alive\n\nevent: message\nid: 3\nretry: 10\n" + extra + STREAM
    assert texts(parse(data)) == ["A", "Hello", " world"]


def test_error_event_is_an_event_not_a_crash() -> None:
    data = event("Hi") + b'\n\ndata:{"error":"overloaded","error_type":"overloaded"}\n\n'
    events = parse(data)
    assert isinstance(events[-1], StreamError)
    assert events[-1].message == "overloaded" and events[-1].error_type == "overloaded"


def test_malformed_json_is_a_protocol_error_with_truncated_text() -> None:
    parser = StreamParser()
    with pytest.raises(StreamSyntaxError) as info:
        parser.feed(b"data:{not json" + b"x" * 1000 + b"\n")
    assert "not valid JSON" in str(info.value)
    assert len(info.value.text) < 200


def test_stream_without_final_event_is_an_error() -> None:
    parser = StreamParser()
    parser.feed(event("Hi") + b"\n\n")
    with pytest.raises(StreamSyntaxError, match="final event"):
        parser.close()


def test_html_instead_of_events_is_an_error() -> None:
    with pytest.raises(StreamSyntaxError, match="unexpected line"):
        StreamParser().feed(b"<html><body>Bad Gateway</body></html>\n")


def test_oversized_line_is_refused_without_buffering_forever() -> None:
    parser = StreamParser(max_line_bytes=1024)
    parser.feed(b"data:" + b"a" * 1000)
    with pytest.raises(StreamSyntaxError, match="longer than"):
        parser.feed(b"a" * 100)


def test_deep_json_is_refused() -> None:
    with pytest.raises(StreamSyntaxError):
        StreamParser().feed(b"data:" + b"[" * 100_000 + b"\n")


def test_non_object_event_and_event_after_final() -> None:
    with pytest.raises(StreamSyntaxError):
        StreamParser().feed(b"data:[1,2]\n")
    parser = StreamParser()
    parser.feed(STREAM)
    with pytest.raises(StreamSyntaxError, match="after the final"):
        parser.feed(event("late") + b"\n")


def test_last_token_of_a_length_stop_is_kept() -> None:
    # With finish_reason=length the final event's token is a normal token.
    data = event("A") + b"\n\n" + event("B", final="AB") + b"\n\n"
    events = parse(data)
    assert texts(events) == ["A", "B"]
    assert isinstance(events[-1], FinalAnswer)


@given(st.lists(st.integers(min_value=0, max_value=40), max_size=30))
def test_any_chunking_gives_the_same_events(chunks: list[int]) -> None:
    assert repr(parse(STREAM, chunks)) == repr(parse(STREAM))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_syntax_errors(data: bytes) -> None:
    parser = StreamParser(max_line_bytes=256)
    try:
        parser.feed(data)
        parser.close()
    except StreamSyntaxError:
        pass


token_texts = st.lists(st.text(max_size=8), max_size=20)


@given(
    texts_=token_texts,
    space=st.booleans(),
    crlf=st.booleans(),
    comments=st.lists(st.sampled_from([b": keep-alive", b"event: message", b"id: 7", b"retry: 100"]), max_size=3),
    data=st.data(),
)
def test_generated_streams_parse_to_their_tokens(
    texts_: list[str], space: bool, crlf: bool, comments: list[bytes], data: st.DataObject
) -> None:
    """Any stream docs/protocol.md allows — either data prefix, either line end, comments and other SSE
    fields anywhere, the last line with or without its newline, any chunking — gives its tokens."""
    nl = b"\r\n" if crlf else b"\n"
    prefix = b"data: " if space else b"data:"
    ascii_only = data.draw(st.booleans())  # raw UTF-8 split across chunks must survive too
    lines: list[bytes] = []
    for t in texts_:
        if comments and data.draw(st.booleans()):
            lines.append(data.draw(st.sampled_from(comments)))
        event = {"token": {"id": 1, "text": t, "special": False}, "generated_text": None}
        lines.append(prefix + json.dumps(event, ensure_ascii=ascii_only).encode())
        lines.append(b"")
    final = {"token": {"id": 2, "text": "</s>", "special": True}, "generated_text": "".join(texts_), "details": None}
    lines.append(prefix + json.dumps(final, ensure_ascii=ascii_only).encode())
    body = nl.join(lines) + (nl if data.draw(st.booleans()) else b"")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=10)))
    parser = StreamParser()
    events: list[object] = []
    pos = 0
    for cut in cuts:
        events += parser.feed(body[pos:cut])
        pos = cut
    events += parser.feed(body[pos:])
    events += parser.close()
    assert [e for e in events if isinstance(e, str)] == texts_
    assert isinstance(events[-1], FinalAnswer) and events[-1].generated_text == "".join(texts_)
