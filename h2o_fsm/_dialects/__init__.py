"""The seam between the engine and a protocol dialect: what a dialect supplies, and how one is chosen.

The engine (one table, one set of state callbacks) asks its dialect for request bodies, the stream
parser and which optional steps it performs; everything else — cleanup, errors, logs, stepper, trace,
journal, sweep — is the same for every dialect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

if TYPE_CHECKING:
    from .._phase import Phase
    from .._protocol import Messages, Parameters
    from .._stream import Parser

__all__ = ["DIALECTS", "Body", "Dialect", "DialectName", "get_dialect", "wrong_dialect_advice"]

DialectName = Literal["h2o", "chat-ui"]
DIALECTS: tuple[DialectName, ...] = ("h2o", "chat-ui")


class Body(NamedTuple):
    """A request body: JSON, a urlencoded form, or multipart form fields (``files``, httpx's shape)."""

    json: object = None
    form: Mapping[str, str] | None = None
    files: Mapping[str, tuple[None, str]] | None = None


class Dialect(Protocol):
    """What a dialect supplies. Parsing methods raise ``ValueError`` on a malformed answer (its message
    safe to show); the engine turns that into ``H2oProtocolError``."""

    name: DialectName
    optional_steps: frozenset[Phase]
    """The table's optional states this dialect performs (the others are recorded as skipped)."""
    settings_by_default: bool
    welcome_gate: int | None
    """The status meaning "this session has not accepted the settings" (2023: 405), or ``None``."""
    default_model: str | None
    """The model of a client that names none (``None``: the server's default, its first listed)."""
    parameters: frozenset[str]
    """The generation parameters its keyword arguments may name (others are a ``TypeError``)."""
    other_answers: Mapping[tuple[Phase, int], DialectName]
    """Answers (step, status) to this dialect's requests that mean the server speaks another dialect."""

    def prepare(self, prompt: str | Messages, *, first: bool) -> tuple[str | None, str]:
        """Validate a turn's prompt: ``(preprompt for the create step or None, the text to send)``;
        ``first``: the conversation does not exist yet."""
        ...

    def settings_body(self, model: str) -> Body: ...
    def create_body(self, model: str, preprompt: str | None) -> Body: ...
    def parse_create(self, raw: bytes) -> tuple[str, str | None]:
        """``(conversation id, the root message id if the answer carried it)``."""
        ...

    def parse_fetch(self, raw: bytes) -> str:
        """The id of the message the next turn hangs from."""
        ...

    def send_body(self, prompt: str, parameters: Parameters, parent_id: str | None, generation_id: str) -> Body: ...
    def new_parser(self, max_line_bytes: int) -> Parser: ...
    def stop_body(self, generation_id: str, seen_content_length: int = 0) -> Body: ...
    def describe(self, phase: Phase, model: str, prompt: str, parameters: Parameters) -> str:
        """The body of ``phase``'s request in a few words (the stepper's ``describe_next``)."""
        ...


def wrong_dialect_advice(other: str) -> str:
    """What an error says when the server looks like one of dialect ``other``."""
    return f"this looks like a {other} server: use dialect={other!r}"


def get_dialect(name: object) -> Dialect:
    """The dialect called ``name`` (``"h2o"`` or ``"chat-ui"``)."""
    if name == "h2o":
        from .h2o import H2O

        return H2O
    if name == "chat-ui":
        from .chatui import CHAT_UI

        return CHAT_UI
    if not isinstance(name, str):
        raise TypeError(f"dialect must be a str, not {type(name).__name__}")
    raise ValueError(f"unknown dialect {name!r}; expected one of {', '.join(DIALECTS)}")
