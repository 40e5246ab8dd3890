"""The chat-ui dialect's bodies and answer readers (pure): docs/protocol.md "chat-ui today", create/send/read/stop."""

from __future__ import annotations

import contextlib
import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from h2o_fsm._dialects.chatui.wire import (
    MAX_MESSAGES,
    CreateAnswer,
    WireError,
    create_body,
    parse_conversation,
    parse_create_answer,
    send_data,
    split_system,
    stop_body,
)
from h2o_fsm._phase import Phase
from h2o_fsm._protocol import Message, validate_conversation_id, validate_messages
from h2o_fsm._table import request_of

CID = "65a1b2c3d4e5f60718293a4b"
ROOT = "0b8a6a1e-8f3e-4c3e-9d55-0f1e2d3c4b5a"


def uid() -> str:
    return str(uuid.uuid4())


def superjson(conv: dict[str, object]) -> dict[str, object]:
    return {"json": conv, "meta": {"values": {"createdAt": ["Date"], "updatedAt": ["Date"]}}}


def msg(mid: str, role: str, children: list[str], content: str | None = "x") -> dict[str, object]:
    out: dict[str, object] = {"id": mid, "from": role, "ancestors": [], "children": children}
    if content is not None:
        out["content"] = content
    return out


# ---------------------------------------------------------------- create
def test_create_body_with_and_without_preprompt() -> None:
    assert create_body("m", None) == {"model": "m"}
    assert create_body("m", "Be brief.") == {"model": "m", "preprompt": "Be brief."}
    assert create_body("m", "") == {"model": "m", "preprompt": ""}


def test_split_system_takes_only_a_leading_system_message() -> None:
    msgs: list[Message] = validate_messages(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert split_system(msgs) == ("Be brief.", [{"role": "user", "content": "Hi"}])
    later = validate_messages([{"role": "user", "content": "Hi"}, {"role": "system", "content": "S"}])
    assert split_system(later) == (None, later)
    assert split_system(validate_messages([{"role": "system", "content": "S"}])) == ("S", [])


def test_create_answer_without_the_conversation_field() -> None:
    assert parse_create_answer(json.dumps({"conversationId": CID}).encode()) == CreateAnswer(CID, None)
    raw = json.dumps({"conversationId": CID, "conversation": None}).encode()
    assert parse_create_answer(raw).root_message_id is None


def test_create_answer_with_the_superjson_string() -> None:
    conv = superjson({"_id": CID, "rootMessageId": ROOT, "messages": [msg(ROOT, "system", [])]})
    raw = json.dumps({"conversationId": CID, "conversation": json.dumps(conv)}).encode()
    assert parse_create_answer(raw) == CreateAnswer(CID, ROOT)


def test_create_answer_with_superjson_as_an_object_and_without_a_root() -> None:
    raw = json.dumps({"conversationId": CID, "conversation": superjson({"rootMessageId": ROOT})}).encode()
    assert parse_create_answer(raw).root_message_id == ROOT
    raw = json.dumps({"conversationId": CID, "conversation": json.dumps(superjson({"title": "t"}))}).encode()
    assert parse_create_answer(raw) == CreateAnswer(CID, None)


@pytest.mark.parametrize(
    "raw",
    [
        b"<html><body>502 Bad Gateway</body></html>",
        b"",
        b"[]",
        b'"65a1b2c3d4e5f60718293a4b"',
        b'{"id": "65a1b2c3d4e5f60718293a4b"}',
        b'{"conversationId": ".."}',
        b'{"conversationId": "a/b"}',
        b'{"conversationId": "%2e%2e"}',
        b'{"conversationId": null}',
        b'{"conversationId": 5}',
        b'{"conversationId": "x\\r\\nSet-Cookie: a=b"}',
        b"[" * 100_000,
    ],
)
def test_a_malformed_create_answer_is_a_wire_error(raw: bytes) -> None:
    with pytest.raises(WireError) as info:
        parse_create_answer(raw)
    assert info.value.conversation_id is None
    assert len(str(info.value)) < 200 and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "conversation",
    ["{not json", "[]", json.dumps({"rootMessageId": ROOT}), json.dumps(superjson({"rootMessageId": "../x"})), 7, []],
)
def test_a_malformed_conversation_field_keeps_the_id_for_the_delete(conversation: object) -> None:
    raw = json.dumps({"conversationId": CID, "conversation": conversation}).encode()
    with pytest.raises(WireError) as info:
        parse_create_answer(raw)
    assert info.value.conversation_id == CID


def test_a_wire_error_shows_only_a_short_escaped_snippet() -> None:
    raw = b"<html>" + b"x" * 200 + b"Authorization: Bearer hf_SECRET\r\n</html>"
    with pytest.raises(WireError) as info:
        parse_create_answer(raw)
    assert "SECRET" not in str(info.value) and "'<html>xxx" in str(info.value)


@given(st.binary(max_size=200) | st.text(max_size=100).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_arbitrary_answers_raise_only_wire_errors(raw: bytes) -> None:
    for parse in (parse_create_answer, parse_conversation):
        with contextlib.suppress(WireError):
            parse(raw)


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
json_any = st.recursive(
    json_scalars, lambda v: st.lists(v, max_size=3) | st.dictionaries(st.text(max_size=8), v, max_size=3), max_leaves=10
)


@given(st.fixed_dictionaries({}, optional={"conversationId": json_any | st.just(CID), "conversation": json_any}))
def test_arbitrary_json_create_answers_raise_only_wire_errors(body: dict[str, object]) -> None:
    try:
        answer = parse_create_answer(json.dumps(body).encode())
    except WireError:
        return
    # accepted: the id is the one sent, and a valid one (1-64 of A-Z a-z 0-9 _ -; "0" is one, hypothesis found)
    assert answer.conversation_id == body["conversationId"]
    assert validate_conversation_id(answer.conversation_id) == answer.conversation_id


# ---------------------------------------------------------------- read
def three_turns_with_a_retry() -> tuple[dict[str, object], str]:
    """The conversation chat-ui stores after three turns, the second one retried (a branch)."""
    u1, a1, u2, a2_old, a2, u3, a3 = (uid() for _ in range(7))
    messages = [
        msg(ROOT, "system", [u1], "Be brief."),
        msg(u1, "user", [a1]),
        msg(a1, "assistant", [u2]),
        msg(u2, "user", [a2_old, a2]),
        msg(a2_old, "assistant", []),
        msg(a2, "assistant", [u3]),
        msg(u3, "user", [a3]),
        msg(a3, "assistant", [], content=None),
    ]
    return superjson({"_id": CID, "title": "t", "rootMessageId": ROOT, "messages": messages}), a3


def test_conversation_read_back_ends_at_the_last_child_each_time() -> None:
    conv, last = three_turns_with_a_retry()
    view = parse_conversation(json.dumps(conv).encode())
    assert view.root_message_id == ROOT and view.last_message_id == last
    assert [m.role for m in view.messages][:3] == ["system", "user", "assistant"]
    assert view.messages[0].content == "Be brief." and view.messages[-1].content is None
    assert len(view.messages[3].children) == 2


def test_a_new_conversation_ends_at_its_root() -> None:
    raw = json.dumps(superjson({"rootMessageId": ROOT, "messages": [msg(ROOT, "system", [])]}))
    view = parse_conversation(raw.encode())
    assert view.last_message_id == ROOT == view.root_message_id


def test_a_legacy_conversation_is_a_list() -> None:
    ids = [uid() for _ in range(3)]
    raw = json.dumps({"json": {"messages": [{"id": i, "from": "user", "content": "c"} for i in ids]}}).encode()
    view = parse_conversation(raw)
    assert (view.root_message_id, view.last_message_id) == (ids[0], ids[-1])
    assert all(m.children == () for m in view.messages)


def test_a_bare_object_is_accepted_and_unknown_fields_ignored() -> None:
    raw = json.dumps({"rootMessageId": ROOT, "messages": [msg(ROOT, "system", []) | {"files": [], "x": 1}], "y": 2})
    assert parse_conversation(raw.encode()).last_message_id == ROOT


def test_a_long_linear_history_is_walked_without_recursion() -> None:
    ids = [uid() for _ in range(MAX_MESSAGES)]
    messages = [msg(m, "user", [ids[i + 1]] if i + 1 < len(ids) else []) for i, m in enumerate(ids)]
    view = parse_conversation(json.dumps(superjson({"rootMessageId": ids[0], "messages": messages})).encode())
    assert view.last_message_id == ids[-1]
    too_many = [*messages, msg(uid(), "user", [])]
    with pytest.raises(WireError, match="more than"):
        parse_conversation(json.dumps(superjson({"rootMessageId": ids[0], "messages": too_many})).encode())


A, B = uid(), uid()


@pytest.mark.parametrize(
    ("conv", "match"),
    [
        ({"rootMessageId": ROOT}, "no 'messages'"),
        ({"rootMessageId": ROOT, "messages": {}}, "no 'messages'"),
        ({"messages": []}, "neither"),
        ({"rootMessageId": A, "messages": [msg(ROOT, "system", [])]}, "not among"),
        ({"rootMessageId": ROOT, "messages": [msg(ROOT, "system", [A])]}, "not among"),
        ({"rootMessageId": ROOT, "messages": [msg(ROOT, "system", [A]), msg(A, "user", [ROOT])]}, "cycle"),
        ({"rootMessageId": ROOT, "messages": [msg(ROOT, "system", []), msg(ROOT, "user", [])]}, "two messages"),
        ({"rootMessageId": "..", "messages": [msg(ROOT, "system", [])]}, "unusable message id"),
        ({"rootMessageId": ROOT, "messages": [msg("../x", "system", [])]}, "unusable message id"),
        ({"rootMessageId": ROOT, "messages": [msg(ROOT, "system", ["a/b"])]}, "unusable message id"),
        ({"rootMessageId": ROOT, "messages": [msg(ROOT, "system", "abc")]}, "not a list"),  # type: ignore[arg-type]
        ({"rootMessageId": ROOT, "messages": [{"id": ROOT, "content": "x"}]}, "'from'"),
        ({"rootMessageId": ROOT, "messages": [msg(ROOT, "system", []) | {"content": 3}]}, "content"),
        ({"rootMessageId": ROOT, "messages": ["x"]}, "not an object"),
    ],
)
def test_a_malformed_conversation_is_a_wire_error(conv: dict[str, object], match: str) -> None:
    with pytest.raises(WireError, match=match):
        parse_conversation(json.dumps(superjson(conv)).encode())


@st.composite
def chat_histories(draw: st.DrawFn) -> tuple[list[dict[str, object]], str]:
    """What chat-ui stores after a run of turns and retries, its messages in any order, and the
    message created last (which is, by construction, where the next turn must hang)."""
    nodes: dict[str, dict[str, object]] = {ROOT: msg(ROOT, "system", [])}
    parent_of: dict[str, str] = {}
    end = ROOT

    def add(parent: str, role: str) -> str:
        mid = uid()
        nodes[mid] = msg(mid, role, [])
        nodes[parent]["children"].append(mid)  # type: ignore[attr-defined]
        parent_of[mid] = parent
        return mid

    for action in draw(st.lists(st.sampled_from(["turn", "turn", "retry"]), max_size=12)):
        if action == "retry" and end != ROOT:  # regenerate the last answer: a sibling, now the current branch
            end = add(parent_of[end], "assistant")
        else:
            end = add(add(end, "user"), "assistant")
    return draw(st.permutations(list(nodes.values()))), end


@given(chat_histories())
def test_the_last_message_is_where_the_last_turn_ended(history: tuple[list[dict[str, object]], str]) -> None:
    messages, end = history
    view = parse_conversation(json.dumps(superjson({"rootMessageId": ROOT, "messages": messages})).encode())
    assert view.last_message_id == end


# ---------------------------------------------------------------- send, stop
def test_send_data() -> None:
    data = send_data("Hi", ROOT)
    assert set(data) == {"inputs", "id", "is_retry", "generationId"}
    assert data["inputs"] == "Hi" and data["id"] == ROOT and data["is_retry"] is False
    assert uuid.UUID(str(data["generationId"])).version == 4
    assert send_data("Hi", ROOT)["generationId"] != data["generationId"]
    given_id = uid()
    assert send_data("Hi", ROOT, given_id, is_retry=True) | {} == {
        "inputs": "Hi", "id": ROOT, "is_retry": True, "generationId": given_id,
    }
    json.dumps(data)
    with pytest.raises(ValueError):
        send_data("Hi", "../x")


def test_stop_body_and_paths() -> None:
    gid = uid()
    # the stop point: chat-ui drops a body without seenContentLength (PROTOCOL.md, "abandon")
    assert stop_body(gid) == {"generationId": gid, "seenContentLength": 0}
    assert stop_body(gid, 12) == {"generationId": gid, "seenContentLength": 12}
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError):
            stop_body(gid, bad)  # type: ignore[arg-type]
    # every path comes from the table (the one place requests are written), the id checked again there
    assert request_of(Phase.FETCH, CID) == ("GET", f"/api/v2/conversations/{CID}")
    assert request_of(Phase.STOP, CID) == ("POST", f"/conversation/{CID}/stop-generating")
    for bad in (".", "..", "a?b", "a#b"):
        with pytest.raises(ValueError):
            request_of(Phase.STOP, bad)
        with pytest.raises(ValueError):
            request_of(Phase.FETCH, bad)
