"""The pure protocol layer: prompt format, validation, request bodies (no I/O)."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from h2o_fsm._protocol import (
    DEFAULT_PARAMETERS,
    create_body,
    format_prompt,
    merge_parameters,
    normalize_base_url,
    prompt_text,
    send_body,
    settings_form,
    validate_messages,
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
