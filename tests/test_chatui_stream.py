"""chat-ui's JSON-lines stream parser (pure): every rule of docs/protocol.md "stream: the body of send"."""

from __future__ import annotations

import contextlib
import inspect
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from h2o_fsm._dialects.chatui.stream import JsonLinesParser
from h2o_fsm._dialects.h2o.stream import StreamParser
from h2o_fsm._events import Event, FinalAnswer, StreamError
from h2o_fsm._stream import StreamSyntaxError

PAD = " " * 4096


def line(obj: dict[str, object], *, ascii_only: bool = True) -> bytes:
    return json.dumps(obj, ensure_ascii=ascii_only).encode()


def tok(text: str) -> bytes:
    return line({"type": "stream", "token": text + "\x00" * max(0, 16 - len(text))})


STARTED = line({"type": "status", "status": "started"})
KEEPALIVE = line({"type": "status", "status": "keepAlive"})
FINISHED = line({"type": "status", "status": "finished"})
ROUTER = line({"type": "routerMetadata", "route": "casual", "model": "m", "provider": "p"})

# The example of docs/protocol.md, as chat-ui writes it (4096 spaces and no newline before "finished").
STREAM = (
    b"\n".join([
        STARTED, KEEPALIVE, ROUTER,
        line({"type": "reasoning", "subtype": "stream", "token": "Think"}),
        line({"type": "reasoning", "subtype": "status", "status": "thinking"}),
        line({"type": "reasoning", "subtype": "stream", "token": "ing.\x00\x00"}),
        tok("Hello"), KEEPALIVE, tok("! How"), tok(" can I help?"),
        line({"type": "title", "title": "Greeting"}),
        line({"type": "finalAnswer", "text": "Hello! How can I help?", "interrupted": False}),
    ])
    + b"\n" + PAD.encode() + FINISHED + b"\n"
)


def parse(data: bytes, cuts: list[int] | None = None, **kw: object) -> tuple[list[Event], JsonLinesParser]:
    parser = JsonLinesParser(**kw)  # type: ignore[arg-type]
    out: list[Event] = []
    pos = 0
    for cut in sorted(cuts or []):
        out += parser.feed(data[pos:cut])
        pos = max(pos, cut)
    out += parser.feed(data[pos:])
    out += parser.close()
    return out, parser


def texts(events: list[Event]) -> list[str]:
    return [e for e in events if isinstance(e, str)]


def test_the_protocol_example() -> None:
    events, parser = parse(STREAM)
    assert texts(events) == ["Hello", "! How", " can I help?"]
    final = events[-1]
    assert isinstance(final, FinalAnswer) and final is parser.final
    assert final.generated_text == "Hello! How can I help?" and final.interrupted is False
    assert final.reasoning == "Thinking." and final.title == "Greeting" and final.details is None
    assert parser.bytes_seen == len(STREAM)


def test_nul_padding_is_removed_and_all_nul_tokens_skipped() -> None:
    body = b"\n".join([
        line({"type": "stream", "token": "a\x00b\x00"}),
        line({"type": "stream", "token": "\x00" * 16}),
        line({"type": "stream", "token": ""}),
        line({"type": "finalAnswer", "text": "ab"}),
    ])
    events, _ = parse(body)
    assert texts(events) == ["ab"]


def test_a_title_after_the_final_answer_updates_it_and_interrupted_is_reported() -> None:
    body = b"\n".join([
        line({"type": "title", "title": "first"}),
        tok("Hi"),
        line({"type": "finalAnswer", "text": "Hi", "interrupted": True}),
        line({"type": "title", "title": "second"}),
        KEEPALIVE,
        line({"type": "title", "title": 5}),  # not a string: ignored
        FINISHED,
    ])
    events, parser = parse(body)
    assert parser.final is not None and parser.final.title == "second" and parser.final.interrupted is True
    assert events[-1] is parser.final


def test_unknown_types_fields_and_untyped_objects_are_ignored() -> None:
    body = b"\n".join([
        line({"type": "tool", "subtype": "call", "uuid": "x", "call": {}}),
        line({"type": "file", "name": "a.png", "sha": "0"}),
        line({"type": "elicitation", "whatever": [1, 2]}),
        line({"type": "brand-new-type"}),
        line({"no": "type"}),
        line({"type": "status", "status": "something-new", "message": "x"}),
        line({"type": "stream", "token": "A", "extra": {"nested": True}}),
        line({"type": "reasoning", "token": "no subtype: not reasoning text"}),
        line({"type": "finalAnswer", "text": "A", "interrupted": "yes", "future": 1}),
    ])
    events, parser = parse(body)
    assert texts(events) == ["A"]
    assert parser.final is not None and parser.final.interrupted is False and parser.final.reasoning == ""


@pytest.mark.parametrize(
    "sep", [b"\n", b"\r\n", b"\n\n", b"\r\n\r\n", b"\n" + PAD.encode(), b"   \t\r\n\t ", b"\n\x0c\x0b \n"]
)
def test_whitespace_around_lines_is_tolerated(sep: bytes) -> None:
    body = sep.join([STARTED, tok("x"), line({"type": "finalAnswer", "text": "x"}), FINISHED]) + sep
    events, _ = parse(body)
    assert texts(events) == ["x"] and isinstance(events[-1], FinalAnswer)


def test_a_last_line_without_a_newline_is_parsed_at_close() -> None:
    body = tok("x") + b"\n" + PAD.encode() + line({"type": "finalAnswer", "text": "x"})
    parser = JsonLinesParser()
    assert parser.feed(body) == ["x"]
    assert parser.final is None
    events = parser.close()
    assert isinstance(events[0], FinalAnswer) and parser.final is events[0]


def test_an_error_status_is_an_event_with_its_message_and_code() -> None:
    body = tok("Hi") + b"\n" + line({"type": "status", "status": "error", "message": "Overloaded", "statusCode": 503})
    events, parser = parse(body)  # close() does not complain: the error is the stream's end
    err = events[-1]
    assert isinstance(err, StreamError)
    assert (err.message, err.error_type, err.status) == ("Overloaded", None, 503)
    assert parser.final is None


def test_an_error_status_without_message_or_with_odd_fields() -> None:
    events, _ = parse(line({"type": "status", "status": "error", "statusCode": "503"}))
    err = events[-1]
    assert isinstance(err, StreamError) and err.status is None and err.message
    events, _ = parse(line({"type": "status", "status": "error", "message": "m" * 10_000, "statusCode": True}))
    err = events[-1]
    assert isinstance(err, StreamError) and err.status is None and len(err.message) <= 1000


@pytest.mark.parametrize(
    "body",
    [b"", tok("Hi"), tok("Hi") + b"\n" + KEEPALIVE + b"\n" + FINISHED + b"\n", b"\n\n   \n", PAD.encode()],
)
def test_a_stream_without_its_final_answer_is_an_error(body: bytes) -> None:
    parser = JsonLinesParser()
    parser.feed(body)
    with pytest.raises(StreamSyntaxError, match="without its finalAnswer"):
        parser.close()


def test_a_stream_cut_mid_line_is_an_error() -> None:
    full = tok("Hi") + b"\n" + line({"type": "finalAnswer", "text": "Hi"})
    parser = JsonLinesParser()
    parser.feed(full[:-5])
    with pytest.raises(StreamSyntaxError):
        parser.close()


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html><body>502 Bad Gateway</body></html>\n", "not valid JSON"),
        (b"data:" + line({"type": "stream", "token": "x"}) + b"\n", "not valid JSON"),
        (b'{"type":"stream","token":"x"\n', "not valid JSON"),
        (b"[1, 2]\n", "not a JSON object"),
        (b'"text"\n', "not a JSON object"),
        (b"null\n", "not a JSON object"),
        (b'{"type":"stream","token":7}\n', "string 'token'"),
        (b'{"type":"stream"}\n', "string 'token'"),
        (b'{"type":"finalAnswer"}\n', "string 'text'"),
        (b"[" * 100_000 + b"\n", "JSON"),
        (b'{"type":"finalAnswer","text":"a"}\n{"type":"finalAnswer","text":"a"}\n', "second finalAnswer"),
        (b'{"type":"finalAnswer","text":"a"}\n{"type":"stream","token":"late"}\n', "after the finalAnswer"),
    ],
)
def test_protocol_violations_are_syntax_errors(body: bytes, match: str) -> None:
    with pytest.raises(StreamSyntaxError, match=match):
        JsonLinesParser().feed(body)


def test_the_offending_text_is_truncated() -> None:
    with pytest.raises(StreamSyntaxError) as info:
        JsonLinesParser().feed(b"{not json" + b"x" * 5000 + b"\n")
    assert info.value.text.startswith("{not json") and len(info.value.text) <= 121


@pytest.mark.parametrize("filler", [b"a", b" "])
def test_an_oversized_line_is_refused_whether_it_arrives_whole_or_in_pieces(filler: bytes) -> None:
    with pytest.raises(StreamSyntaxError, match="longer than 1024"):
        JsonLinesParser(max_line_bytes=1024).feed(filler * 2000 + b"\n")
    parser = JsonLinesParser(max_line_bytes=1024)
    parser.feed(filler * 1000)
    with pytest.raises(StreamSyntaxError, match="longer than 1024"):
        for _ in range(10):
            parser.feed(filler * 10)


def test_a_long_line_in_many_small_chunks_is_joined_once() -> None:
    text = "y" * 200_000
    body = line({"type": "finalAnswer", "text": text}) + b"\n"
    parser = JsonLinesParser()
    for i in range(0, len(body), 7):
        parser.feed(body[i : i + 7])
    parser.close()
    assert parser.final is not None and parser.final.generated_text == text


def _shape(fn: object) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]  # type: ignore[arg-type]


def test_same_interface_as_the_2023_parser() -> None:
    for name in ("__init__", "feed", "close"):
        assert _shape(getattr(JsonLinesParser, name)) == _shape(getattr(StreamParser, name))
    assert isinstance(JsonLinesParser.final, property)
    assert JsonLinesParser().bytes_seen == 0


def other_decoder(raw: bytes) -> object:
    return json.loads(raw)


DECODERS = [None, json.loads, other_decoder]  # the default (orjson), the stdlib's str path, any other callable


@pytest.mark.parametrize("loads", DECODERS)
def test_every_decoder_gives_the_same_events(loads: object) -> None:
    a, _ = parse(STREAM)
    b, _ = parse(STREAM, loads=loads)
    assert repr(a) == repr(b)


@pytest.mark.parametrize("loads", DECODERS)
@pytest.mark.parametrize(
    "bad", [b"\xff\xfe{}", b'{"type":"stream","token":"\xc3"}', "\u00a0".encode() + STARTED, b"{} {}", b"{}x"]
)
def test_every_decoder_refuses_the_same_lines(loads: object, bad: bytes) -> None:
    with pytest.raises(StreamSyntaxError, match="not valid JSON"):
        JsonLinesParser(loads=loads).feed(tok("ok") + b"\n" + bad + b"\n")  # type: ignore[arg-type]


@given(st.lists(st.integers(0, len(STREAM)), max_size=40), st.sampled_from(DECODERS))
def test_any_chunking_gives_the_same_events(cuts: list[int], loads: object) -> None:
    events, parser = parse(STREAM, cuts, loads=loads)
    whole, whole_parser = parse(STREAM)
    assert repr(events) == repr(whole)
    assert parser.final is not None and whole_parser.final is not None
    assert (parser.final.title, parser.final.reasoning) == (whole_parser.final.title, whole_parser.final.reasoning)


@given(st.binary(max_size=300), st.sampled_from(DECODERS))
def test_arbitrary_bytes_never_raise_anything_but_syntax_errors(data: bytes, loads: object) -> None:
    parser = JsonLinesParser(max_line_bytes=256, loads=loads)  # type: ignore[arg-type]
    with contextlib.suppress(StreamSyntaxError):
        parser.feed(data)
        parser.close()


NOISE = [
    KEEPALIVE, STARTED, ROUTER, b"", b"   ", line({"type": "tool", "subtype": "result"}), line({"type": "x"}),
    line({"type": "reasoning", "subtype": "status", "status": "..."}), line({"note": "no type"}),
]


@given(
    tokens=st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=20), max_size=25),
    reasoning=st.lists(st.text(max_size=8), max_size=4),
    title_at=st.sampled_from(["none", "before", "after"]),
    crlf=st.booleans(),
    interrupted=st.booleans(),
    error=st.booleans(),
    data=st.data(),
)
def test_generated_streams_parse_to_their_tokens(  # noqa: PLR0917
    tokens: list[str], reasoning: list[str], title_at: str, crlf: bool, interrupted: bool, error: bool,
    data: st.DataObject,
) -> None:
    """Any stream the protocol allows — NUL padding, raw UTF-8, noise and padding anywhere, either line
    end, the title before or after the final answer, the last line with or without its newline, an
    error instead of the final answer, any chunking — gives its tokens and its final answer."""
    ascii_only = data.draw(st.booleans())
    loads = data.draw(st.sampled_from(DECODERS))

    def noise() -> list[bytes]:
        return data.draw(st.lists(st.sampled_from(NOISE), max_size=2))

    lines: list[bytes] = [*noise()]
    lines += [line({"type": "reasoning", "subtype": "stream", "token": r}, ascii_only=ascii_only) for r in reasoning]
    if title_at == "before":
        lines.append(line({"type": "title", "title": "T"}))
    for t in tokens:
        lines += noise()
        padded = t + "\x00" * data.draw(st.integers(0, 16))
        lines.append(data.draw(st.sampled_from(["", PAD, "\t"])).encode() + line(
            {"type": "stream", "token": padded}, ascii_only=ascii_only
        ))
    answer = "".join(tokens)
    if error:
        lines.append(line({"type": "status", "status": "error", "message": "boom", "statusCode": 500}))
    else:
        lines.append(line({"type": "finalAnswer", "text": answer, "interrupted": interrupted}, ascii_only=ascii_only))
        lines += noise()
        if title_at == "after":
            lines.append(line({"type": "title", "title": "T"}))
        lines.append(PAD.encode() + FINISHED)
    nl = b"\r\n" if crlf else b"\n"
    body = nl.join(lines) + (nl if data.draw(st.booleans()) else b"")
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=12))
    events, parser = parse(body, cuts, loads=loads)
    assert texts(events) == [t.replace("\x00", "") for t in tokens if t.replace("\x00", "")]
    if error:
        assert isinstance(events[-1], StreamError) and events[-1].status == 500 and parser.final is None
        return
    final = parser.final
    assert final is not None and final in events
    assert final.generated_text == answer and final.interrupted is interrupted
    assert final.reasoning == "".join(reasoning).replace("\x00", "")
    assert final.title == (None if title_at == "none" else "T")
