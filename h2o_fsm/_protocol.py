"""Pure protocol logic: input and id validation, prompt formatting and request bodies. No I/O here.

Everything in this module is deterministic apart from the fresh UUIDs of ``send_body`` (which can be
passed in), so it can be tested and fuzzed without a server. Validation runs before any request:
what it accepts serialises with both the standard ``json`` module and ``orjson``, and ids chosen by
the server are only accepted from a safe alphabet, so they are always exactly one path segment.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Final, TypedDict, Union
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "DEFAULT_PARAMETERS",
    "KNOWN_PARAMETERS",
    "KNOWN_ROLES",
    "JSONValue",
    "Message",
    "Messages",
    "Parameters",
    "format_prompt",
    "merge_parameters",
    "normalize_base_url",
    "prompt_text",
    "validate_conversation_id",
    "validate_message_id",
    "validate_messages",
    "validate_model",
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
KNOWN_PARAMETERS: Final = frozenset(_PARAM_TYPES) | frozenset(DEFAULT_PARAMETERS) | _NOT_PARAMETERS
"""The generation parameters text-generation-inference knows (and ``stream``, which is dropped): what a
keyword argument may name in the 2023 dialect (a mapping passed as ``parameters=`` may hold others)."""
# Known integer parameters are unsigned 64-bit on the model server; any int must fit orjson's range.
_UNSIGNED: Final = frozenset({"seed", "top_k", "truncate", "max_new_tokens"})
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
_MAX_DEPTH: Final = 16
MAX_MODEL_CHARS: Final = 256
# Server-chosen ids (chat-ui: 24 hex chars, message ids UUIDs) are used in URL paths: a safe alphabet
# only, so "." / ".." / "%2e" / "?" / "#" / "/" / CR LF / non-ASCII can never reach a URL.
_SAFE_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SHOWN: Final = 40


def _shown(raw: object) -> str:
    """``raw`` escaped (``repr``) and cut to 40 characters: safe to put in an error message."""
    text = repr(raw[: _SHOWN + 1] if isinstance(raw, (str, bytes)) else raw)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _is_utf8(text: str) -> bool:
    """False when ``text`` holds a lone surrogate (it cannot be encoded, so it cannot be sent)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _safe_id(raw: object, what: str) -> str:
    if type(raw) is not str or _SAFE_ID.fullmatch(raw) is None:
        shown = _shown(raw) if raw is None or isinstance(raw, (str, bytes, bool, float)) else type(raw).__name__
        raise ValueError(f"the server sent an unusable {what} {shown} (expected 1-64 of A-Z a-z 0-9 _ -)")
    return raw


def validate_conversation_id(raw: object) -> str:
    """A conversation id from the server, checked: 1-64 characters of ``[A-Za-z0-9_-]``, else ``ValueError``."""
    return _safe_id(raw, "conversation id")


def validate_message_id(raw: object) -> str:
    """A chat-ui message id (a UUID) from the server, checked like a conversation id."""
    return _safe_id(raw, "message id")


def validate_model(model: object) -> str:
    """A model name: a non-blank ``str`` of at most 256 characters, valid UTF-8, no control characters."""
    if not isinstance(model, str):
        raise TypeError(f"model must be a str, not {type(model).__name__}")
    if not model.strip():
        raise ValueError("model must be a non-empty str")
    if len(model) > MAX_MODEL_CHARS:
        raise ValueError(f"model name is longer than {MAX_MODEL_CHARS} characters: {_shown(model)}")
    if not _is_utf8(model) or any(ord(c) < 32 or ord(c) == 127 for c in model):
        raise ValueError(f"model name holds a lone surrogate or a control character: {_shown(model)}")
    return str(model)


def normalize_base_url(url: object) -> str:
    """Check that ``url`` is an absolute http(s) URL and return it without a trailing slash."""
    if not isinstance(url, str):
        raise TypeError(f"base URL must be a str, not {type(url).__name__}")
    parts = urlsplit(url.strip())  # the URL itself is never echoed: it may carry a password
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"base URL must start with http:// or https://, not {parts.scheme[:10]!r}")
    if not parts.hostname:
        raise ValueError("base URL has no host")
    if parts.query or parts.fragment:
        raise ValueError("base URL must not have a query or fragment")
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
            raise ValueError(f"messages[{i}] has unknown role {_shown(role)}; expected one of {sorted(KNOWN_ROLES)}")
        if not isinstance(content, str):
            raise TypeError(f"messages[{i}]['content'] must be a str, not {type(content).__name__}")
        if not _is_utf8(content):  # never echo the text: it is the user's prompt
            raise ValueError(f"messages[{i}]['content'] is not valid UTF-8 (a lone surrogate)")
        out.append({"role": str(role), "content": str(content)})
    # The prompt is empty only when it is one blank message (several always carry "Role:" prefixes).
    if len(out) == 1 and not out[0]["content"].strip():
        raise ValueError("messages contain no text: the server refuses an empty prompt")
    return out


def prompt_text(prompt: object) -> str:
    """The ``inputs`` of a turn: a string as is, or a validated message list formatted."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("prompt is empty: the server refuses an empty prompt")
        if not _is_utf8(prompt):  # never echo the text
            raise ValueError("prompt is not valid UTF-8 (a lone surrogate)")
        return str(prompt)
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


def _check_json(name: str, value: object, depth: int = 0) -> JSONValue:
    """``value`` checked and copied into plain JSON types: what both ``json`` and ``orjson`` can write.

    Finite floats, ints in [-2**63, 2**64-1], strings and keys valid UTF-8, at most 16 levels deep.
    The copy means a caller mutating its list or dict later cannot change what is sent.
    """
    if depth > _MAX_DEPTH:
        raise ValueError(f"parameter {name!r} is nested too deeply")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if not _is_utf8(value):
            raise ValueError(f"parameter {name!r} holds a string that is not valid UTF-8 (a lone surrogate)")
        return str(value)
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValueError(f"parameter {name!r} is out of the 64-bit integer range")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"parameter {name!r} must be a finite number, got {float(value)!r}")
        return float(value)
    if isinstance(value, list):
        return [_check_json(name, item, depth + 1) for item in value]
    if isinstance(value, dict):
        out: dict[str, JSONValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"parameter {name!r} has a non-string key of type {type(key).__name__}")
            if not _is_utf8(key):
                raise ValueError(f"parameter {name!r} has a key that is not valid UTF-8 (a lone surrogate)")
            out[str(key)] = _check_json(name, item, depth + 1)
        return out
    raise TypeError(f"parameter {name!r} must be a JSON value, not {type(value).__name__}")


def merge_parameters(overrides: Mapping[str, object] | None = None) -> Parameters:
    """The default generation parameters with the caller's ``overrides`` merged over them.

    ``stream`` is dropped (it is a field of the request, not a generation parameter). Known
    parameters are type-checked (``bool`` is not accepted where a number is expected); every value
    is checked by :func:`_check_json` and copied (``TypeError``/``ValueError`` before any request).
    """
    params: Parameters = dict(DEFAULT_PARAMETERS)
    if not overrides:
        return params
    for name, value in overrides.items():
        if not isinstance(name, str):
            raise TypeError(f"parameter names must be str, not {type(name).__name__}")
        if not _is_utf8(name):
            raise ValueError("a parameter name is not valid UTF-8 (a lone surrogate)")
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
            if name in _UNSIGNED and not 0 <= value < 2**64:  # type: ignore[operator]
                raise ValueError(f"parameter {name!r} must be >= 0 and < 2**64")
        params[str(name)] = _check_json(name, value)
    return params
