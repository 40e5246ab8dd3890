"""Fault injection for the bundled server: what goes wrong, in which phase, how many times."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Literal, NamedTuple, get_args

from .._dialects import DIALECTS, DialectName, get_dialect
from .._phase import Phase
from .._table import SPEC, STATES

__all__ = [
    "DIALECTS", "PHASES", "DialectName", "Fault", "FaultKind", "FaultPhase", "FaultPlan", "Injected",
    "StreamWire", "phases_of", "stream_fault",
]

FaultPhase = str
"""One of :data:`PHASES` (checked when a :class:`Fault` is built)."""

# The fault phases, in protocol order, read from the machine's table: every state that sends a request
# or reads the answer's stream. Everything below derives from it.
PHASES: tuple[FaultPhase, ...] = tuple(s.phase.value for s in STATES if s.request is not None or s.reads)

FaultKind = Literal["status", "html", "stall", "drop", "cut", "malformed", "error_event", "create_then_error"]
KINDS: tuple[FaultKind, ...] = get_args(FaultKind)

# Which kinds make sense where ("stream" faults fire after `at_token` tokens). A phase not listed is a
# plain request: it can answer an error status, an HTML page or stall.
_REQUEST_KINDS: frozenset[FaultKind] = frozenset({"status", "html", "stall"})
_SPECIAL_KINDS: Mapping[FaultPhase, frozenset[FaultKind]] = {
    "create": _REQUEST_KINDS | {"create_then_error"},
    "stream": frozenset({"stall", "drop", "cut", "malformed", "error_event"}),
    "reattach": _REQUEST_KINDS | {"cut"},
    "stop": frozenset({"status", "stall"}),
    "delete": frozenset({"status", "stall"}),
}
ALLOWED: Mapping[FaultPhase, frozenset[FaultKind]] = {p: _SPECIAL_KINDS.get(p, _REQUEST_KINDS) for p in PHASES}



def phases_of(dialect: str) -> tuple[FaultPhase, ...]:
    """The fault phases a server of ``dialect`` has a route for (a fault elsewhere never fires): every
    phase but the optional ones the dialect does not perform (settings: any client may ask for them)."""
    performs = get_dialect(dialect).optional_steps | {Phase.SETTINGS}
    return tuple(p for p in PHASES if not SPEC[Phase(p)].optional or Phase(p) in performs)


@dataclasses.dataclass(frozen=True)
class Fault:
    """One fault.

    * ``status``: answer ``status`` (with ``Retry-After: retry_after`` if given) instead of working.
    * ``html``: answer 200 with an HTML page (a proxy's error page).
    * ``stall``: wait ``seconds`` before answering (in ``stream``: before token ``at_token``).
    * ``drop``: close the connection mid-stream after ``at_token`` tokens (chat-ui: the run ends too).
    * ``cut``: close the answer's connection after ``at_token`` tokens (mid-line) while the run goes on
      (chat-ui; the 2023 server has no runs: there it is a ``drop``); in ``reattach``: close the
      reattach stream without ``end`` after ``at_token`` events.
    * ``malformed``: send a line that is not JSON after ``at_token`` tokens.
    * ``error_event``: send an error event after ``at_token`` tokens, then end (h2o: TGI's
      ``{"error", "error_type"}``; chat-ui: ``{"type":"status","status":"error","statusCode": status}``).
    * ``create_then_error``: create the conversation, then answer ``status`` (default 500) anyway.

    ``count`` is how many requests the fault hits (``-1``: all of them).
    """

    phase: FaultPhase
    kind: FaultKind
    status: int = 500
    retry_after: float | None = None
    seconds: float = 1.0
    at_token: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"unknown fault phase {self.phase!r}; expected one of {PHASES}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {KINDS}")
        if self.kind not in ALLOWED[self.phase]:
            raise ValueError(f"fault kind {self.kind!r} does not apply to phase {self.phase!r}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"fault status must be an HTTP status, got {self.status}")
        if self.count == 0 or self.count < -1:
            raise ValueError("fault count must be >= 1, or -1 for always")
        if self.seconds < 0 or self.at_token < 0:
            raise ValueError("fault seconds and at_token must be >= 0")

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> Fault:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault field(s): {sorted(unknown)}")
        return cls(**data)  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


class StreamWire(NamedTuple):
    """How a dialect's stream writes the faults that end it: a line that is not JSON, an error event."""

    malformed: bytes
    error_event: Callable[[Fault], bytes]


class Injected(NamedTuple):
    """What a stream does before a token when a fault fires there (both apps read this, one meaning
    per kind): wait ``stall`` seconds and go on, ``drop`` the connection, or write ``last`` and end.
    ``cut``: a server with runs (chat-ui) cuts only the connection and goes on generating; one without
    (2023) drops it (``drop`` is set too)."""

    stall: float = 0.0
    drop: bool = False
    last: bytes | None = None
    cut: bool = False


def stream_fault(fault: Fault | None, index: int, tokens: int, wire: StreamWire) -> Injected | None:
    """The fault of a stream of ``tokens`` tokens that fires before token ``index`` (``index == tokens``:
    before the final event; ``at_token`` past the end fires there), or ``None``."""
    if fault is None or index != min(fault.at_token, tokens):
        return None
    if fault.kind == "stall":
        return Injected(stall=fault.seconds)
    if fault.kind == "drop":
        return Injected(drop=True)
    if fault.kind == "cut":
        return Injected(drop=True, cut=True)
    if fault.kind == "malformed":
        return Injected(last=wire.malformed)
    if fault.kind == "error_event":
        return Injected(last=wire.error_event(fault))
    return None


@dataclasses.dataclass
class _Pending:
    fault: Fault
    left: int  # requests it still hits (-1: always)


class FaultPlan:
    """Faults waiting to fire, consumed in order per phase. Thread-safe.

    ``add``/``extend`` append faults to a plan in use (a running server sees them at its next request);
    ``fired`` lists the faults that fired, in order.
    """

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self._lock = threading.Lock()
        self._pending: list[_Pending] = [_Pending(f, f.count) for f in faults]
        self._fired: list[Fault] = []

    def __repr__(self) -> str:
        return f"FaultPlan({self.faults!r})"

    @property
    def faults(self) -> list[Fault]:
        """Every fault of the plan (fired or not), in order."""
        with self._lock:
            return [p.fault for p in self._pending]

    @property
    def fired(self) -> list[Fault]:
        """The faults that fired so far, one entry per request they hit."""
        with self._lock:
            return list(self._fired)

    def add(self, fault: Fault) -> FaultPlan:
        """Append one fault (it fires ``fault.count`` times); returns the plan."""
        if not isinstance(fault, Fault):
            raise TypeError(f"FaultPlan.add takes a Fault, not {type(fault).__name__}")
        with self._lock:
            self._pending.append(_Pending(fault, fault.count))
        return self

    def extend(self, faults: Iterable[Fault]) -> FaultPlan:
        """Append several faults, in order; returns the plan."""
        for fault in faults:
            self.add(fault)
        return self

    def take(self, phase: FaultPhase) -> Fault | None:
        """The next fault for ``phase``, counting it as fired, or ``None``."""
        with self._lock:
            for entry in self._pending:
                fault, left = entry.fault, entry.left
                if fault.phase != phase or left == 0:
                    continue
                if left > 0:
                    entry.left = left - 1
                self._fired.append(fault)
                return fault
        return None

    @classmethod
    def from_data(cls, data: object) -> FaultPlan:
        """From ``[{...}, ...]`` or ``{"faults": [{...}, ...]}``."""
        if isinstance(data, Mapping):
            data = data.get("faults", [])
        if not isinstance(data, list):
            raise ValueError("a fault plan is a list of faults, or a mapping with a 'faults' list")
        faults = []
        for item in data:
            if not isinstance(item, Mapping):
                raise ValueError(f"a fault is a mapping, not {type(item).__name__}")
            faults.append(Fault.from_mapping(item))
        return cls(faults)

    @classmethod
    def from_file(cls, path: str | Path) -> FaultPlan:
        """Load a plan from a ``.json`` or ``.toml`` file (``[[faults]]`` tables)."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib

                return cls.from_data(tomllib.loads(text))
            raise ValueError("TOML fault files need Python 3.11+ (tomllib); use JSON")
        return cls.from_data(json.loads(text))

