"""The chat-ui dialect's request bodies and answer readers (create, send, stop, read), pure: no I/O.

What docs/protocol.md ("chat-ui today") says, as functions of bytes and values:

* create: :func:`create_body` (``{"model", "preprompt"}``; :func:`split_system` turns a leading
  system message into the preprompt) and :func:`parse_create_answer` (the conversation id, and the
  root message id when the ``conversation`` field carries it);
* read: :func:`parse_conversation` reads ``GET /api/v2/conversations/{id}`` (superjson) into a
  :class:`ConversationView`, whose ``last_message_id`` is where the next turn hangs;
* send: :func:`send_data` is the JSON of the multipart part ``data``;
* abandon: :func:`stop_body`.

Every id that comes from the server is validated (``_protocol.validate_*``) before it can reach a
URL. Anything malformed raises :class:`WireError`, whose message is safe to show: short escaped
snippets of the body, never a header, cookie or prompt.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from ... import _json
from ..._protocol import Message, validate_conversation_id, validate_message_id

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_MESSAGES",
    "ConversationView",
    "CreateAnswer",
    "MessageView",
    "WireError",
    "create_body",
    "json_loads",
    "parse_conversation",
    "parse_create_answer",
    "send_data",
    "split_system",
    "stop_body",
]

MAX_BODY_BYTES: Final = 16 << 20
"""Largest answer body these readers parse (a long conversation read back is a few MiB at most)."""
MAX_MESSAGES: Final = 10_000
"""Most messages a conversation read back may hold (bounds the walk to its last message)."""
_SNIPPET: Final = 80

JSONLoader = Callable[[bytes], object]

json_loads: JSONLoader = _json.loads  # orjson when installed; both raise a ValueError subclass on bad input


class WireError(ValueError):
    """A chat-ui answer broke the protocol. The message is safe to show (short escaped snippets).

    ``conversation_id`` is set when the id was read before the rest failed: the conversation exists
    on the server and must still be deleted.
    """

    def __init__(self, message: str, *, conversation_id: str | None = None) -> None:
        super().__init__(message)
        self.conversation_id = conversation_id


@dataclass(frozen=True, slots=True)
class CreateAnswer:
    """What ``POST /conversation`` answered: the id, and the root message id when the server sent it."""

    conversation_id: str
    root_message_id: str | None


@dataclass(frozen=True, slots=True)
class MessageView:
    """One message of a conversation read back (``from`` is ``role``); ``content`` None when absent."""

    id: str
    role: str
    content: str | None
    children: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ConversationView:
    """A conversation read back: its message tree, and the end of its linear history."""

    root_message_id: str
    messages: tuple[MessageView, ...]
    last_message_id: str


def _snippet(raw: bytes | str) -> str:
    text = raw[: _SNIPPET * 4].decode("utf-8", "replace") if isinstance(raw, bytes) else raw[: _SNIPPET + 1]
    return repr(text if len(text) <= _SNIPPET else text[:_SNIPPET] + "…")


def _load(raw: bytes | str, what: str) -> object:
    if len(raw) > MAX_BODY_BYTES:
        raise WireError(f"{what} is larger than {MAX_BODY_BYTES} bytes")
    try:
        return json_loads(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
    except (ValueError, RecursionError):
        raise WireError(f"{what} is not valid JSON: {_snippet(raw)}") from None


def _object(raw: bytes | str, what: str) -> dict[str, object]:
    obj = _load(raw, what)
    if type(obj) is not dict:
        raise WireError(f"{what} is not a JSON object: {_snippet(raw)}")
    return obj


def _superjson(value: object, what: str) -> dict[str, object]:
    """The ``json`` object of a superjson value (given as an object, or as a string holding one)."""
    obj = _object(value, what) if isinstance(value, str) else value
    inner = obj.get("json") if type(obj) is dict else None
    if type(inner) is not dict:
        raise WireError(f"{what} is not superjson (no 'json' object)")
    return inner


def _id(check: Callable[[object], str], raw: object, cid: str | None = None) -> str:
    try:
        return check(raw)
    except ValueError as exc:
        raise WireError(str(exc), conversation_id=cid) from None


# ---------------------------------------------------------------- create
def split_system(messages: Sequence[Message]) -> tuple[str | None, list[Message]]:
    """A leading system message becomes the preprompt; the rest is what the first turn sends.

    ``messages`` are validated ones (``_protocol.validate_messages``). Only the first message is
    looked at: a system message later on stays part of the prompt. ``rest`` may be empty.
    """
    if messages and messages[0]["role"] == "system":
        return messages[0]["content"], list(messages[1:])
    return None, list(messages)


def create_body(model: str, preprompt: str | None) -> dict[str, str]:
    """JSON body of ``POST /conversation``; no ``preprompt`` key when there is none."""
    return {"model": model} if preprompt is None else {"model": model, "preprompt": preprompt}


def parse_create_answer(raw: bytes) -> CreateAnswer:
    """Read the 200 answer of ``POST /conversation``: ``{"conversationId", "conversation"?}``.

    ``conversation`` (servers since 2026-07) is a superjson string (an object is accepted too) whose
    ``json`` holds ``rootMessageId``; without it (older servers, or no ``rootMessageId`` in it) the
    root is None: read it with ``GET /api/v2/conversations/{id}``. A malformed ``conversation``
    raises :class:`WireError` carrying the (valid) ``conversation_id``, so it can still be deleted.
    """
    body = _object(raw, "the create answer")
    if "conversationId" not in body:
        raise WireError(f"the create answer has no 'conversationId': {_snippet(raw)}")
    cid = _id(validate_conversation_id, body["conversationId"])
    conversation = body.get("conversation")
    if conversation is None:
        return CreateAnswer(cid, None)
    try:
        inner = _superjson(conversation, "the create answer's 'conversation'")
    except WireError as exc:
        raise WireError(str(exc), conversation_id=cid) from None
    root = inner.get("rootMessageId")
    return CreateAnswer(cid, None if root is None else _id(validate_message_id, root, cid))


# ---------------------------------------------------------------- read
def _message(raw: object, i: int) -> MessageView:
    if type(raw) is not dict:
        raise WireError(f"messages[{i}] is not an object")
    mid = _id(validate_message_id, raw.get("id"))
    role, content, children = raw.get("from"), raw.get("content"), raw.get("children", ())
    if type(role) is not str:
        raise WireError(f"messages[{i}] has no 'from' string")
    if content is not None and type(content) is not str:
        raise WireError(f"messages[{i}]['content'] is not a string")
    if children is None:
        children = ()
    if type(children) not in (list, tuple):
        raise WireError(f"messages[{i}]['children'] is not a list")
    return MessageView(mid, role, content, tuple(_id(validate_message_id, c) for c in children))


def parse_conversation(raw: bytes) -> ConversationView:
    """Read ``GET /api/v2/conversations/{id}`` (superjson; a bare object is accepted too).

    ``last_message_id`` is the end of the linear history: from the root, the last child each time.
    A conversation without ``rootMessageId`` (stored before chat-ui's message tree) is a list: its
    root is its first message and its end its last one, as chat-ui itself converts it.
    """
    body = _object(raw, "the conversation")
    conv = _superjson(body, "the conversation") if "json" in body else body
    items = conv.get("messages")
    if type(items) is not list:
        raise WireError("the conversation has no 'messages' list")
    if len(items) > MAX_MESSAGES:
        raise WireError(f"the conversation has more than {MAX_MESSAGES} messages")
    messages = tuple(_message(m, i) for i, m in enumerate(items))
    by_id = {m.id: m for m in messages}
    if len(by_id) != len(messages):
        raise WireError("the conversation holds two messages with one id")
    root = conv.get("rootMessageId")
    if root is None:
        if not messages:
            raise WireError("the conversation has neither a 'rootMessageId' nor messages")
        return ConversationView(messages[0].id, messages, messages[-1].id)
    root = _id(validate_message_id, root)
    if root not in by_id:
        raise WireError(f"the conversation's root message {root!r} is not among its messages")
    last, seen = root, {root}
    while by_id[last].children:  # at most len(messages) steps: every step visits a new message
        child = by_id[last].children[-1]
        if child not in by_id:
            raise WireError(f"message {last!r} has a child {child!r} that is not among the messages")
        if child in seen:
            raise WireError(f"the conversation's message tree has a cycle at {child!r}")
        seen.add(child)
        last = child
    return ConversationView(root, messages, last)


# ---------------------------------------------------------------- send, stop
def send_data(
    prompt: str, parent_id: str, generation_id: str | None = None, is_retry: bool = False
) -> dict[str, object]:
    """JSON of the multipart part ``data`` of ``POST /conversation/{id}``; ``parent_id`` is where the turn hangs.

    ``generationId`` is a fresh uuid4 unless given (the same one goes to :func:`stop_body`).
    """
    return {
        "inputs": prompt,
        "id": validate_message_id(parent_id),
        "is_retry": is_retry,
        "generationId": generation_id or str(uuid.uuid4()),
    }


def stop_body(generation_id: str, seen_content_length: int = 0) -> dict[str, object]:
    """JSON body of ``POST /conversation/{id}/stop-generating``: the run, and the stop point (the answer's
    characters the client delivered, counted as chat-ui's JavaScript does: UTF-16 code units), where
    the server clamps the stored answer. Without ``seenContentLength`` chat-ui ignores the body."""
    if isinstance(seen_content_length, bool) or not isinstance(seen_content_length, int) or seen_content_length < 0:
        raise ValueError(f"seen_content_length must be an int >= 0, got {seen_content_length!r}")
    return {"generationId": generation_id, "seenContentLength": seen_content_length}
