"""The registry of protocol dialects, and the seam between the engine and one dialect.

The engine (one table, one set of state callbacks) asks its dialect for request bodies, the stream
parser (and the reattach stream's), which optional steps it performs, its ``catalog`` (the model and
conversation lists' requests and readers, if it has them), and calls a few hooks (after the create, building a send,
after a turn, on a status it can recover from) with the conversation's :class:`DialectState`, the one
object a dialect keeps per conversation; everything else — cleanup, errors, logs, stepper, trace,
journal, sweep — is the same for every dialect.

Every place that depends on the dialect reads it from here: the client (:func:`get_dialect`), the
CLI (:func:`names`, each dialect's ``summary`` and ``signs``), the emulator (each dialect's
``emulator`` factory), the fault plans and the testing kit (``optional_steps``). A dialect is one
object registered with :func:`register` — the two built in below, or one of the host's own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, Protocol

from .._protocol import DEFAULT_MODEL, KNOWN_PARAMETERS

if TYPE_CHECKING:
    from .._listing_types import CatalogWire, Request
    from .._phase import Phase
    from .._protocol import Messages, Parameters
    from .._stream import Parser, ResumingParser

__all__ = [
    "AUTO", "DEFAULT_DIALECT", "DIALECTS", "PROBE", "BaseDialect", "Body", "Dialect", "DialectName", "DialectState",
    "chosen", "detected", "emulator_app", "get_dialect", "names", "register", "suggested", "unregister", "usage_limit",
    "with_catalog", "wrong_dialect_advice",
]

DialectName = Literal["h2o", "chat-ui"]
"""The built-in dialects' names (a registered dialect may have any other)."""
DEFAULT_DIALECT: Final = "h2o"


class Body(NamedTuple):
    """A request body: JSON, a urlencoded form, or multipart form fields (``files``, httpx's shape)."""

    json: object = None
    form: Mapping[str, str] | None = None
    files: Mapping[str, tuple[None, str]] | None = None


class DialectState:
    """What a dialect keeps per conversation (a dialect subclasses it; the 2023 one keeps nothing).
    ``preprompt``: the system message the first turn gave (for the create), or ``None``; ``parser``: the
    running turn's answer parser (the dialect's own, set by the stream step, ``None`` until the turn's
    stream starts): what it counted (chat-ui's stop point) is the dialect's to read."""

    __slots__ = ("parser", "preprompt")

    def __init__(self, preprompt: str | None = None) -> None:
        self.preprompt = preprompt
        self.parser: Parser | None = None


class Dialect(Protocol):
    """What a dialect supplies. Parsing methods raise ``ValueError`` on a malformed answer (its message
    safe to show); the engine turns that into ``H2oProtocolError``."""

    name: str
    summary: str
    """A few words for the CLI's help (``--dialect``)."""
    optional_steps: frozenset[Phase]
    """The table's optional states this dialect performs (the others are recorded as skipped)."""
    settings_by_default: bool
    signs: Mapping[Phase, frozenset[int]]
    """Statuses a client of another dialect gets from a server of this one (the CLI's advice, and the
    engine's :class:`~h2o_fsm.H2oDialectError`, never retried)."""
    probe: frozenset[int]
    """Statuses a server of this dialect answers ``GET /api/v2/models`` with (``dialect="auto"``'s one
    request; 200: a model list)."""
    emulator: str | None
    """``"module:function"`` of the bundled emulator's app factory ``(State, routes) -> Starlette``."""
    default_model: str | None
    """The model of a client that names none (``None``: the server's default, its first listed)."""
    parameters: frozenset[str]
    """The generation parameters its keyword arguments may name (others are a ``TypeError``)."""
    catalog: CatalogWire | None
    """Its model list, conversation list and delete-all (``None``: it has none; the client says so)."""

    def new_state(self, preprompt: str | None) -> DialectState:
        """The state of a new conversation whose first turn gave ``preprompt``."""
        ...

    def prepare(self, prompt: str | Messages, *, first: bool) -> tuple[str | None, str]:
        """Validate a turn's prompt: ``(preprompt for the create step or None, the text to send)``;
        ``first``: the conversation does not exist yet."""
        ...

    def settings_body(self, model: str) -> Body: ...
    def create_body(self, state: DialectState, model: str) -> Body: ...
    def after_create(self, state: DialectState, raw: bytes) -> str:
        """The conversation id the create's answer ``raw`` names (and whatever else ``state`` keeps)."""
        ...

    def skips(self, phase: Phase, state: DialectState) -> bool:
        """Whether an optional step this dialect performs has nothing to do now."""
        ...

    def after_fetch(self, state: DialectState, raw: bytes) -> None: ...
    def send_body(self, state: DialectState, prompt: str, parameters: Parameters) -> Body: ...
    def after_turn(self, state: DialectState) -> None:
        """The turn's answer was read to its end."""
        ...

    def stop_body(self, state: DialectState) -> Body:
        """The body stopping the running turn of the conversation ``state`` is of."""
        ...

    def stop_body_of(self, generation_id: str) -> Body:
        """A stop body naming only ``generation_id`` (a sweep's: no state, the stop point unknown)."""
        ...

    def reattach_query(self, state: DialectState) -> str:
        """The query of the ``reattach`` step's request (``"?…"``): which run to read again."""
        ...

    def generation(self, state: DialectState) -> str:
        """The running turn's generation id a stop would name, ``""`` if none (a journal records it
        so that a sweep can stop, with :meth:`stop_body_of`, the generation of a process that died
        mid-answer)."""
        ...

    def renews_session(self, phase: Phase, status: int) -> bool:
        """Whether ``status`` in ``phase`` means the server forgot the session: the engine accepts the
        settings again and repeats the request once (2023: the welcome gate's 405 on create)."""
        ...

    def new_parser(self, max_line_bytes: int) -> Parser: ...
    def resume_parser(self, previous: Parser | None, skip: int, max_line_bytes: int) -> ResumingParser:
        """The reattach stream's parser, skipping the ``skip`` characters of answer text already delivered
        (``previous``: the answer's own parser, whose stop point the new one carries on from)."""
        ...

    def usage_limited(self, status: int, body: str) -> bool:
        """Whether an error answer is this dialect's usage limit (retrying cannot help), not its status's."""
        ...

    def describe(self, phase: Phase, model: str, prompt: str, parameters: Parameters) -> str:
        """The body of ``phase``'s request in a few words (the stepper's ``describe_next``)."""
        ...


def wrong_dialect_advice(other: str) -> str:
    """What an error says when the server looks like one of dialect ``other``."""
    return f"this looks like a {other} server: use dialect={other!r}"


class BaseDialect:
    """The hooks a dialect may leave out, as no-ops (subclass it and set ``name``; the rest is
    :class:`Dialect`'s: ``prepare``, the bodies, ``after_create``, ``new_parser``, ``describe``)."""

    name: str = ""
    summary: str = ""
    optional_steps: frozenset[Phase] = frozenset()
    settings_by_default = False
    signs: Mapping[Phase, frozenset[int]] = {}
    probe: frozenset[int] = frozenset()
    emulator: str | None = None
    default_model: str | None = DEFAULT_MODEL
    parameters: frozenset[str] = KNOWN_PARAMETERS
    catalog: CatalogWire | None = None

    def new_state(self, preprompt: str | None) -> DialectState:
        return DialectState(preprompt)

    def skips(self, phase: Phase, state: DialectState) -> bool:
        return False

    def after_fetch(self, state: DialectState, raw: bytes) -> None:
        raise ValueError(f"the {self.name} dialect has no fetch step")

    def after_turn(self, state: DialectState) -> None:
        return None

    def stop_body(self, state: DialectState) -> Body:
        return Body()

    def stop_body_of(self, generation_id: str) -> Body:
        return Body()

    def reattach_query(self, state: DialectState) -> str:
        raise ValueError(f"the {self.name} dialect has no reattach step")

    def generation(self, state: DialectState) -> str:
        return ""

    def renews_session(self, phase: Phase, status: int) -> bool:
        return False

    def resume_parser(self, previous: Parser | None, skip: int, max_line_bytes: int) -> ResumingParser:
        raise ValueError(f"the {self.name} dialect has no reattach step")

    def usage_limited(self, status: int, body: str) -> bool:
        return False


_REGISTRY: dict[str, Dialect] = {}
AUTO: Final = "auto"
"""The dialect a client names to have it detected (:func:`chosen`, :func:`detected`)."""
PROBE: Final[Request] = ("GET", "/api/v2/models")
"""``dialect="auto"``'s one request (each dialect's ``probe``: the statuses its server answers it with)."""


def register(dialect: Dialect, *, replace: bool = False) -> Dialect:
    """Add ``dialect`` to the registry under ``dialect.name``; returns it."""
    name = dialect.name
    if not isinstance(name, str) or not name or name == AUTO:
        raise ValueError(f"a dialect needs a non-empty name other than 'auto', not {name!r}")
    if name in _REGISTRY and not replace and _REGISTRY[name] is not dialect:
        raise ValueError(f"a dialect named {name!r} is already registered")
    _REGISTRY[name] = dialect
    return dialect


def unregister(name: str) -> None:
    """Remove the dialect registered as ``name`` (a host's; the built-in ones stay)."""
    if name in DIALECTS:
        raise ValueError(f"the built-in dialect {name!r} cannot be removed")
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """The registered dialects' names, the built-in ones first."""
    return tuple(_REGISTRY)


def chosen(name: object) -> Dialect | None:
    """The dialect a client names: ``None`` for :data:`AUTO` (detected later), else :func:`get_dialect`'s."""
    return None if name == AUTO else get_dialect(name)


def get_dialect(name: object) -> Dialect:
    """The dialect registered as ``name`` (``"h2o"``, ``"chat-ui"`` or one registered by the host)."""
    if not isinstance(name, str):
        raise TypeError(f"dialect must be a str, not {type(name).__name__}")
    dialect = _REGISTRY.get(name)
    if dialect is None:
        raise ValueError(f"unknown dialect {name!r}; expected one of {', '.join(_REGISTRY)}")
    return dialect


def suggested(phase: Phase | None, status: int | None, current: str | None) -> str | None:
    """The registered dialect whose server answers ``status`` in ``phase`` to a client of ``current``."""
    if phase is None or status is None or current not in _REGISTRY:
        return None
    for name, dialect in _REGISTRY.items():
        if name != current and status in dialect.signs.get(phase, ()):
            return name
    return None


def detected(status: int) -> str | None:
    """The registered dialect whose server answers ``status`` to ``dialect="auto"``'s probe
    (``GET /api/v2/models``), or ``None``: the answer tells none."""
    return next((name for name, dialect in _REGISTRY.items() if status in dialect.probe), None)


def usage_limit(status: int, body: str) -> bool:
    """Whether an error answer is a registered dialect's usage limit (whichever dialect the client speaks)."""
    return any(dialect.usage_limited(status, body) for dialect in _REGISTRY.values())


def with_catalog() -> tuple[str, ...]:
    """The registered dialects that have a model list (a ``catalog``)."""
    return tuple(name for name, dialect in _REGISTRY.items() if dialect.catalog is not None)


def emulator_app(name: str) -> Callable[..., Any]:
    """The emulator's app factory of dialect ``name`` (imported now: it needs the ``server`` extra)."""
    target = get_dialect(name).emulator
    if target is None:
        raise ValueError(f"the bundled emulator does not speak the {name!r} dialect")
    module, _, attr = target.partition(":")
    factory: Callable[..., Any] = getattr(importlib.import_module(module), attr)
    return factory


def _register_builtins() -> None:
    from .chatui import CHAT_UI
    from .h2o import H2O

    register(H2O)
    register(CHAT_UI)


_register_builtins()
DIALECTS: Final[tuple[DialectName, ...]] = ("h2o", "chat-ui")
"""The built-in dialects (:func:`names` lists the registered ones)."""
