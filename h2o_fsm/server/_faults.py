"""Fault injection for the bundled server: what goes wrong, in which phase, how many times."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal, cast, get_args

__all__ = ["PHASES", "Fault", "FaultKind", "FaultPhase", "FaultPlan"]

FaultPhase = Literal["settings", "create", "send", "stream", "delete"]
FaultKind = Literal["status", "html", "stall", "drop", "malformed", "error_event", "create_then_error"]
PHASES: tuple[FaultPhase, ...] = get_args(FaultPhase)
KINDS: tuple[FaultKind, ...] = get_args(FaultKind)

# Which kinds make sense where ("stream" faults fire after `at_token` tokens).
ALLOWED: Mapping[FaultPhase, frozenset[FaultKind]] = {
    "settings": frozenset({"status", "html", "stall"}),
    "create": frozenset({"status", "html", "stall", "create_then_error"}),
    "send": frozenset({"status", "html", "stall"}),
    "stream": frozenset({"stall", "drop", "malformed", "error_event"}),
    "delete": frozenset({"status", "stall"}),
}


@dataclasses.dataclass(frozen=True)
class Fault:
    """One fault.

    * ``status``: answer ``status`` (with ``Retry-After: retry_after`` if given) instead of working.
    * ``html``: answer 200 with an HTML page (a proxy's error page).
    * ``stall``: wait ``seconds`` before answering (in ``stream``: before token ``at_token``).
    * ``drop``: close the connection mid-stream after ``at_token`` tokens.
    * ``malformed``: send a line that is not JSON after ``at_token`` tokens.
    * ``error_event``: send a model-server error event after ``at_token`` tokens, then end.
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


class FaultPlan:
    """Faults waiting to fire, consumed in order per phase. Thread-safe."""

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self._lock = threading.Lock()
        self._pending: list[list[object]] = [[f, f.count] for f in faults]
        self.fired: list[Fault] = []

    def __repr__(self) -> str:
        return f"FaultPlan({[f for f, _ in self._pending]!r})"

    @property
    def faults(self) -> list[Fault]:
        with self._lock:
            return [cast(Fault, f) for f, _ in self._pending]

    def take(self, phase: FaultPhase) -> Fault | None:
        """The next fault for ``phase``, counting it as fired, or ``None``."""
        with self._lock:
            for entry in self._pending:
                fault = cast(Fault, entry[0])
                left = cast(int, entry[1])
                if fault.phase != phase or left == 0:
                    continue
                if left > 0:
                    entry[1] = left - 1
                self.fired.append(fault)
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
