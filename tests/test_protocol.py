"""The pure protocol layer: prompt format, validation, request bodies (no I/O)."""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from h2o_fsm._dialects.h2o.bodies import create_body, send_body, settings_form
from h2o_fsm._protocol import (
    DEFAULT_PARAMETERS,
    format_prompt,
    merge_parameters,
    normalize_base_url,
    prompt_text,
    validate_conversation_id,
    validate_message_id,
    validate_messages,
    validate_model,
)


def test_single_message_is_sent_as_is() -> None:
    assert format_prompt([{"role": "user", "content": "Hello, how are you?"}]) == "Hello, how are you?"


def test_several_messages_use_the_old_format() -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert format_prompt(msgs) == "System: Be brief.\nUser: Hi\nAssistant:"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([], ValueError),
        ("hello", TypeError),
        (None, TypeError),
        ([{"role": "user"}], ValueError),
        ([{"content": "x"}], ValueError),
        ([{"role": "wizard", "content": "x"}], ValueError),
        ([{"role": "user", "content": 3}], TypeError),
        ([{"role": 1, "content": "x"}], TypeError),
        (["hi"], TypeError),
        ([{"role": "user", "content": "   "}], ValueError),
    ],
)
def test_bad_messages_are_refused(messages: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        validate_messages(messages)


def test_prompt_text_refuses_an_empty_string() -> None:
    with pytest.raises(ValueError, match="empty"):
        prompt_text("  ")


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"temperature": "hot"}, TypeError),
        ({"temperature": True}, TypeError),
        ({"max_new_tokens": 1.5}, TypeError),
        ({"max_new_tokens": 0}, ValueError),
        ({"temperature": -1}, ValueError),
        ({"do_sample": 1}, TypeError),
        ({"stop": "x"}, TypeError),
        ({"stop": [1]}, TypeError),
        ({"custom": object()}, TypeError),
        ({"custom": float("nan")}, ValueError),
    ],
)
def test_bad_parameters_are_refused(params: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        merge_parameters(params)


def test_parameters_merge_over_defaults_and_drop_stream() -> None:
    merged = merge_parameters({"temperature": 0.5, "stream": False, "top_k": 5})
    assert merged["temperature"] == 0.5
    assert merged["top_k"] == 5
    assert "stream" not in merged  # defect 5 of the old provider
    assert merged["max_new_tokens"] == DEFAULT_PARAMETERS["max_new_tokens"]


@pytest.mark.parametrize("url", ["ftp://x", "gpt-gm.h2o.ai", "file:///etc/passwd", "http://", "http://h/?q=1"])
def test_bad_base_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        normalize_base_url(url)


def test_base_url_type_and_trailing_slash() -> None:
    with pytest.raises(TypeError):
        normalize_base_url(123)
    assert normalize_base_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"


def test_request_bodies() -> None:
    assert settings_form("m")["activeModel"] == "m"
    assert settings_form("m")["ethicsModalAccepted"] == "true"
    assert create_body("m") == {"model": "m"}
    body = send_body("hi", merge_parameters({"temperature": 0.1}))
    assert body["inputs"] == "hi" and body["stream"] is True
    assert "stream" not in body["parameters"]  # type: ignore[operator]
    options = body["options"]
    assert isinstance(options, dict)
    uuid.UUID(str(options["id"]))
    uuid.UUID(str(options["response_id"]))
    json.dumps(body)


roles = st.sampled_from(["system", "user", "assistant"])
texts = st.text(min_size=1).filter(lambda s: s.strip())


@given(st.lists(st.fixed_dictionaries({"role": roles, "content": texts}), min_size=2, max_size=6))
def test_prompt_format_property(messages: list[dict[str, str]]) -> None:
    prompt = format_prompt(validate_messages(messages))
    assert prompt.endswith("\nAssistant:")
    for msg in messages:
        assert f"{msg['role'].capitalize()}: {msg['content']}" in prompt


@given(st.dictionaries(st.sampled_from(["temperature", "top_p", "repetition_penalty"]), st.floats(0, 5)))
def test_numeric_parameters_property(params: dict[str, float]) -> None:
    merged = merge_parameters(params)
    for key, value in params.items():
        assert merged[key] == value


# ---------------------------------------------------------------- server-chosen ids (issue 10, item 5)
SAFE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


@pytest.mark.parametrize("cid", ["65a1b2c3d4e5f60718293a4b", "a", "A_b-9", "x" * 64, "baf1d596-06e6-499e-aa63-af0ad301bf17"])
def test_safe_ids_are_accepted(cid: str) -> None:
    assert validate_conversation_id(cid) == cid
    assert validate_message_id(cid) == cid


@pytest.mark.parametrize(
    "cid",
    [".", "..", "%2e%2e", "?x=1", "#frag", "a/b", "a\\b", "a\r\nX-Evil: 1", "é", "", " ", "a b", "a.b", "x" * 65,
     "a\x00", "ａ", None, 123, 1.5, True, b"abc", ["a"], {"id": "a"}],
)
def test_unsafe_ids_are_refused(cid: object) -> None:
    with pytest.raises(ValueError, match="unusable conversation id") as info:
        validate_conversation_id(cid)
    assert "\r" not in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="unusable message id"):
        validate_message_id(cid)


def test_a_huge_int_id_is_refused_by_its_type_name() -> None:
    with pytest.raises(ValueError, match="unusable conversation id int"):
        validate_conversation_id(10**5000)  # its repr would itself raise


def test_a_refused_id_is_shown_escaped_and_truncated() -> None:
    with pytest.raises(ValueError) as info:
        validate_conversation_id("../" + "A" * 5000 + "\r\n")
    message = str(info.value)
    assert "'../AAAA" in message and "A" * 41 not in message and len(message) < 160


@given(st.text(max_size=80))
def test_an_accepted_id_is_always_one_clean_path_segment(raw: str) -> None:
    try:
        cid = validate_conversation_id(raw)
    except ValueError:
        assert not raw or len(raw) > 64 or any(c not in SAFE_ALPHABET for c in raw)
        return
    assert cid == raw and 1 <= len(cid) <= 64
    assert quote(cid, safe="") == cid and cid not in (".", "..")


@given(st.text(alphabet=SAFE_ALPHABET, min_size=1, max_size=64))
def test_every_id_of_the_safe_alphabet_is_accepted(raw: str) -> None:
    assert validate_conversation_id(raw) == raw


# ---------------------------------------------------------------- validation before any request (issue 10, item 8)
@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"seed": 2**64}, ValueError),
        ({"seed": -1}, ValueError),
        ({"top_k": -1}, ValueError),
        ({"truncate": 2**64}, ValueError),
        ({"temperature": 1e400}, ValueError),
        ({"top_p": float("-inf")}, ValueError),
        ({"custom": 2**64}, ValueError),
        ({"custom": -(2**63) - 1}, ValueError),
        ({"custom": [1, {"x": float("nan")}]}, ValueError),
        ({"custom": "a\ud800b"}, ValueError),
        ({"custom": {"\udfff": 1}}, ValueError),
        ({"custom": {1: 1}}, TypeError),
        ({"\ud800": 1}, ValueError),
        ({"stop": ["ok", "\ud800"]}, ValueError),
        ({"custom": (1, 2)}, TypeError),
        ({"custom": b"bytes"}, TypeError),
    ],
)
def test_values_json_or_orjson_cannot_write_are_refused(params: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        merge_parameters(params)


def test_integer_limits_that_both_encoders_accept() -> None:
    merged = merge_parameters({"seed": 2**64 - 1, "custom": [-(2**63), 2**64 - 1]})
    assert merged["seed"] == 2**64 - 1
    assert orjson.loads(orjson.dumps(merged)) == json.loads(json.dumps(merged, allow_nan=False))


def test_parameters_are_copied_so_later_mutation_changes_nothing() -> None:
    stop = ["</s>"]
    nested = {"a": [1, 2]}
    merged = merge_parameters({"stop": stop, "custom": nested})
    stop.append("\ud800")
    nested["a"].append(float("nan"))
    assert merged["stop"] == ["</s>"] and merged["custom"] == {"a": [1, 2]}


class _MyInt(int):
    def __repr__(self) -> str:  # pragma: no cover - never called
        raise AssertionError


def test_subclasses_of_json_types_become_plain_values() -> None:
    merged = merge_parameters({"seed": _MyInt(3), "custom": _MyInt(4)})
    assert type(merged["seed"]) is int and type(merged["custom"]) is int


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(alphabet=st.characters())
    | st.binary(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(alphabet=st.characters()), inner, max_size=4)
    | st.tuples(inner),
    max_leaves=12,
)


@given(st.dictionaries(st.text(alphabet=st.characters(), max_size=8), json_values, max_size=4))
def test_what_is_accepted_is_written_by_both_json_and_orjson(params: dict[str, object]) -> None:
    try:
        merged = merge_parameters(params)
    except (TypeError, ValueError):
        return
    text = json.dumps(merged, allow_nan=False, ensure_ascii=False).encode("utf-8")
    assert json.loads(text) == orjson.loads(orjson.dumps(merged))


def test_prompts_with_lone_surrogates_are_refused_without_echoing_them() -> None:
    secret = "SECRET-PROMPT \ud800"
    with pytest.raises(ValueError, match="UTF-8") as info:
        prompt_text(secret)
    assert "SECRET" not in str(info.value)
    msgs = [{"role": "user", "content": "fine"}, {"role": "user", "content": secret}]
    with pytest.raises(ValueError, match=r"messages\[1\]") as info:
        prompt_text(msgs)
    assert "SECRET" not in str(info.value)


def test_an_unknown_role_is_shown_truncated() -> None:
    with pytest.raises(ValueError, match="unknown role") as info:
        validate_messages([{"role": "r" * 10_000, "content": "x"}])
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(
    ("model", "error"),
    [(None, TypeError), (3, TypeError), ("", ValueError), ("  ", ValueError), ("m" * 257, ValueError),
     ("bad\ud800", ValueError), ("a\nb", ValueError), ("a\x00", ValueError)],
)
def test_bad_model_names_are_refused(model: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        validate_model(model)


def test_good_model_names() -> None:
    for model in ("meta-llama/Llama-3.3-70B-Instruct", "m" * 256, "模型/ü"):
        assert validate_model(model) == model
