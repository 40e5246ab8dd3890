"""Pure protocol logic: input validation, prompt formatting and request bodies. No I/O here.

Everything in this module is deterministic apart from the fresh UUIDs of ``send_body`` (which can be
passed in), so it can be tested and fuzzed without a server.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Final, TypedDict, Union
from urllib.parse import urlsplit

__all__ = [
    "ALREADY_GONE",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "DEFAULT_PARAMETERS",
    "DELETED",
    "KNOWN_ROLES",
    "JSONValue",
    "Message",
    "Messages",
    "Parameters",
    "conversation_path",
    "create_body",
    "format_prompt",
    "merge_parameters",
    "normalize_base_url",
    "prompt_text",
    "send_body",
    "settings_form",
    "validate_messages",
]

DEFAULT_BASE_URL: Final = "https://gpt-gm.h2o.ai"
DEFAULT_MODEL: Final = "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1"
KNOWN_ROLES: Final = frozenset({"system", "user", "assistant"})

JSONValue = Union[str, int, float, bool, None, list["JSONValue"], dict[str, "JSONValue"]]  # noqa: UP007 (recursive alias)
Parameters = dict[str, JSONValue]


Messages = Sequence[Mapping[str, object]]
"""What the public API accepts as a message list: ``[{"role": "user", "content": "Hi"}, ...]``."""


class Message(TypedDict):
    """One chat message, as the old provider took them: ``{"role": ..., "content": ...}``."""

    role: str
    content: str


DEFAULT_PARAMETERS: Final[Mapping[str, JSONValue]] = {
    "temperature": 0.4,
    "truncate": 2048,
    "max_new_tokens": 1024,
    "do_sample": True,
    "repetition_penalty": 1.2,
    "return_full_text": False,
}

# Types of the generation parameters text-generation-inference knows. Unknown names are passed
# through (newer model servers add parameters), but must still be JSON values.
_NUMBER = (int, float)
_PARAM_TYPES: Final[Mapping[str, tuple[type, ...]]] = {
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "typical_p": _NUMBER,
    "repetition_penalty": _NUMBER,
    "top_k": (int,),
    "truncate": (int,),
    "max_new_tokens": (int,),
    "seed": (int,),
    "do_sample": (bool,),
    "return_full_text": (bool,),
    "watermark": (bool,),
    "details": (bool,),
    "stop": (list,),
}
# Keys that belong to the request, never to ``parameters`` (defect 5 of the old provider).
_NOT_PARAMETERS: Final = frozenset({"stream"})


def normalize_base_url(url: object) -> str:
    """Check that ``url`` is an absolute http(s) URL and return it without a trailing slash."""
    if not isinstance(url, str):
        raise TypeError(f"base URL must be a str, not {type(url).__name__}")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"base URL must start with http:// or https://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"base URL has no host: {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"base URL must not have a query or fragment: {url!r}")
    return url.strip().rstrip("/")


def validate_messages(messages: object) -> list[Message]:
    """Check the shape of a message list; return it as a list. Raises ``TypeError``/``ValueError``."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of {{'role', 'content'}} dicts, not {type(messages).__name__}")
    if not messages:
        raise ValueError("messages is empty: give at least one message")
    out: list[Message] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise TypeError(f"messages[{i}] must be a dict with 'role' and 'content', not {type(msg).__name__}")
        for key in ("role", "content"):
            if key not in msg:
                raise ValueError(f"messages[{i}] has no {key!r}")
        role, content = msg["role"], msg["content"]
        if not isinstance(role, str):
            raise TypeError(f"messages[{i}]['role'] must be a str, not {type(role).__name__}")
        if role not in KNOWN_ROLES:
            raise ValueError(f"messages[{i}] has unknown role {role!r}; expected one of {sorted(KNOWN_ROLES)}")
        if not isinstance(content, str):
            raise TypeError(f"messages[{i}]['content'] must be a str, not {type(content).__name__}")
        out.append({"role": role, "content": content})
    # The prompt is empty only when it is one blank message (several always carry "Role:" prefixes).
    if len(out) == 1 and not out[0]["content"].strip():
        raise ValueError("messages contain no text: the server refuses an empty prompt")
    return out


def prompt_text(prompt: object) -> str:
    """The ``inputs`` of a turn: a string as is, or a validated message list formatted."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("prompt is empty: the server refuses an empty prompt")
        return prompt
    return format_prompt(validate_messages(prompt))


def format_prompt(messages: Sequence[Message]) -> str:
    """The old provider's prompt format.

    One message → its content as is. Several → ``"<Role>: <content>"`` lines joined by ``\\n``,
    then ``\\nAssistant:``.
    """
    if len(messages) == 1:
        return messages[0]["content"]
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


def _check_json(name: str, value: object, depth: int = 0) -> None:
    if depth > 16:
        raise ValueError(f"parameter {name!r} is nested too deeply")
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"parameter {name!r} must be a finite number, got {value!r}")
        return
    if isinstance(value, list):
        for item in value:
            _check_json(name, item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"parameter {name!r} has a non-string key {key!r}")
            _check_json(name, item, depth + 1)
        return
    raise TypeError(f"parameter {name!r} must be a JSON value, not {type(value).__name__}")


def merge_parameters(overrides: Mapping[str, object] | None = None) -> Parameters:
    """The default generation parameters with the caller's ``overrides`` merged over them.

    ``stream`` is dropped (it is a field of the request, not a generation parameter). Known
    parameters are type-checked (``bool`` is not accepted where a number is expected).
    """
    params: Parameters = dict(DEFAULT_PARAMETERS)
    if not overrides:
        return params
    for name, value in overrides.items():
        if not isinstance(name, str):
            raise TypeError(f"parameter names must be str, not {type(name).__name__}")
        if name in _NOT_PARAMETERS:
            continue
        expected = _PARAM_TYPES.get(name)
        if expected is not None:
            bad_bool = isinstance(value, bool) and bool not in expected
            if bad_bool or not isinstance(value, expected):
                names = " or ".join(t.__name__ for t in expected)
                raise TypeError(f"parameter {name!r} must be {names}, not {type(value).__name__}")
            if name == "stop" and not all(isinstance(s, str) for s in value):  # type: ignore[attr-defined]
                raise TypeError("parameter 'stop' must be a list of str")
            if name in ("max_new_tokens", "truncate") and value <= 0:  # type: ignore[operator]
                raise ValueError(f"parameter {name!r} must be positive, got {value!r}")
            if name == "temperature" and value < 0:  # type: ignore[operator]
                raise ValueError(f"parameter 'temperature' must be >= 0, got {value!r}")
        _check_json(name, value)
        params[name] = value  # type: ignore[assignment]  # checked by _check_json
    return params


def settings_form(model: str) -> dict[str, str]:
    """Form fields of ``POST /settings``."""
    return {
        "ethicsModalAccepted": "true",
        "shareConversationsWithModelAuthors": "true",
        "ethicsModalAcceptedAt": "",
        "activeModel": model,
        "searchEnabled": "true",
    }


def create_body(model: str) -> dict[str, str]:
    """JSON body of ``POST /conversation``."""
    return {"model": model}


def send_body(
    prompt: str,
    parameters: Mapping[str, JSONValue],
    *,
    message_id: str | None = None,
    response_id: str | None = None,
) -> dict[str, JSONValue]:
    """JSON body of ``POST /conversation/{id}``."""
    return {
        "inputs": prompt,
        "parameters": dict(parameters),
        "stream": True,
        "options": {
            "id": message_id or str(uuid.uuid4()),
            "response_id": response_id or str(uuid.uuid4()),
            "is_retry": False,
            "use_cache": False,
            "web_search_id": "",
        },
    }


DELETED: Final = frozenset({200, 202, 204})
"""Statuses of a DELETE that removed the conversation; 404 means it was already gone."""
ALREADY_GONE: Final = 404


def conversation_path(conversation_id: str) -> str:
    """Path of one conversation (send and delete)."""
    return f"/conversation/{conversation_id}"


_SAFE_ID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def validate_conversation_id(raw: object) -> str:
    """A server-chosen id, checked before it goes into a URL path: 1–64 characters of ``[A-Za-z0-9_-]``
    (chat-ui's are 24 hex digits). Raises ``ValueError`` showing the id truncated."""
    if not isinstance(raw, str) or not 0 < len(raw) <= 64 or not _SAFE_ID.issuperset(raw):
        shown = repr(raw)[:40]
        raise ValueError(f"the server sent an unusable conversation id: {shown}")
    return raw
