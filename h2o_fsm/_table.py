"""The conversation's table: every state with all the engine knows about it, and every transition.

This is the single source of truth, pure data. The machine (``_machine``) is built from it; a turn
is "fire the current state's ``next`` trigger until the machine reaches the state whose answer the
caller ``reads``; after reading, fire ``next`` until it ``rests``"; ending is "fire ``close`` or
``abort``, then ``next`` until a terminal state". The stepper, the step timeouts (``timeout``), the
retry policy (``idempotent``), the stepper's descriptions (``request``), the statuses each request
accepts (``ok``), the skip guards (``skip``), the ending's budget shares (``budget``), the stream's
token gap (``gap``), the ``close``/``abort`` edges (derived from ``ends``), the emulator's fault phases
and the diagrams in ``diagrams/`` are all read from here. Each state's work is one async callback in
``_steps``, named here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Final, Literal
from urllib.parse import quote

from ._phase import Phase
from ._protocol import validate_conversation_id

if TYPE_CHECKING:
    from ._config import Timeouts

__all__ = [
    "DELETE_OK", "SPEC", "STATES", "TRANSITIONS", "VALID_TRIGGERS", "Edge", "StateSpec", "TimeoutKey", "destination",
    "request_line", "request_of", "seconds",
]

TimeoutKey = Literal["settings", "create", "fetch", "send", "token", "delete"]
"""A :class:`~h2o_fsm.Timeouts` field that bounds a step (:func:`seconds` reads it, checked by mypy)."""

_SECONDS: Final[Mapping[TimeoutKey, Callable[[Timeouts], float]]] = {
    "settings": lambda t: t.settings, "create": lambda t: t.create, "fetch": lambda t: t.fetch,
    "send": lambda t: t.send, "token": lambda t: t.token, "delete": lambda t: t.delete,
}


def seconds(timeouts: Timeouts, key: TimeoutKey) -> float:
    """The seconds ``timeouts`` gives ``key``."""
    return float(_SECONDS[key](timeouts))


@dataclasses.dataclass(frozen=True)
class StateSpec:
    """Everything the engine knows about one state.

    Attributes:
        phase: the state.
        on_enter, on_exit: the names of its callbacks in ``_steps`` (entering performs its request).
        doc: what happens in it (shown in the diagrams).
        request: the HTTP request its callback sends (``{id}``: the conversation id), if any.
        timeout: the :class:`~h2o_fsm.Timeouts` field bounding the whole step (wall clock).
        idempotent: its request may be repeated after a server error (the retry policy, ``_retry``).
        next: the trigger fired from here on the happy path.
        reads: the caller reads the answer's stream while the machine rests here.
        rests: a turn ends here; the next turn (or the end) starts from here (``open()`` stops here too).
        idle: what the stepper fires here instead of ``next`` when no prompt is queued.
        needs_prompt: entering this state sends the turn's prompt.
        optional: a dialect may skip its request (the transition is recorded as ``skipped``).
        cleanup: part of the ending, bounded by ``Timeouts.cleanup``; still sent while the client closes.
        owned: its request runs in a task the client owns: a cancelled caller does not wait for it, and
            ``aclose()`` waits for it instead of cutting it short (the create's answer names what to delete).
        ok: the statuses its request accepts (any other is an ``H2oStatusError``).
        skip: the name of its skip guard in ``_steps.SKIP_GUARDS`` (besides "optional and not performed"
            and its dialect's ``skips``): the step runner and the stepper evaluate the same function.
        budget: a cleanup step's share of what is left of the ending's budget (``Timeouts.cleanup``).
        gap: the :class:`~h2o_fsm.Timeouts` field bounding the wait between two reads of its answer
            (the stream's token gap), if not ``timeout``.
        ends: where ``close`` and ``abort`` lead from here (``None``: nothing to clean, ``closed`` or
            ``failed``); ``ends_if`` names the guard without which they lead there instead.
    """

    phase: Phase
    doc: str
    on_enter: str | None = None
    on_exit: str | None = None
    request: str | None = None
    timeout: TimeoutKey | None = None
    idempotent: bool = False
    next: str | None = None
    reads: bool = False
    rests: bool = False
    idle: str | None = None
    needs_prompt: bool = False
    optional: bool = False
    cleanup: bool = False
    owned: bool = False
    ok: Collection[int] = (200,)
    skip: str | None = None
    budget: float = 1.0
    gap: TimeoutKey | None = None
    ends: Phase | None = None
    ends_if: str | None = None


@dataclasses.dataclass(frozen=True)
class Edge:
    trigger: str
    sources: tuple[Phase, ...]
    dest: Phase
    conditions: str | None = None
    unless: str | None = None


P = Phase

# fmt: off
STATES: Final[tuple[StateSpec, ...]] = (
    StateSpec(P.NEW, "nothing sent yet (or attached: its id known)", next="start", rests=True, ends=P.DELETE,
              ends_if="created"),
    StateSpec(P.SETTINGS, "accept the session's settings (skipped when this session sent them)", "settings",
              request="POST /settings", timeout="settings", idempotent=True, next="create", optional=True,
              ok=range(200, 400), skip="settings_sent"),
    StateSpec(P.CREATE, "create the conversation: its id", "create",
              request="POST /conversation", timeout="create", next="fetch", rests=True, owned=True,
              ends=P.DELETE, ends_if="created"),
    StateSpec(P.FETCH, "learn the message the turn hangs from (chat-ui)", "fetch",
              request="GET /api/v2/conversations/{id}", timeout="fetch", idempotent=True, next="send", optional=True,
              ends=P.DELETE),
    StateSpec(P.SEND, "post the turn's prompt", "send", request="POST /conversation/{id}", timeout="send",
              next="stream", needs_prompt=True, gap="token", ends=P.STOP),
    StateSpec(P.STREAM, "the caller reads the answer's stream", "stream", "leave_stream", next="finish", reads=True,
              ends=P.STOP),
    StateSpec(P.REATTACH, "the answer's connection dropped: replay the run, skip what was read (chat-ui)",
              "reattach", "leave_stream", request="GET /conversation/{id}/stream", timeout="send", idempotent=True,
              next="finish", reads=True, optional=True, gap="token", ends=P.STOP),
    StateSpec(P.READY, "answer complete, another turn may be sent", next="fetch", rests=True, idle="close",
              ends=P.DELETE),
    StateSpec(P.STOP, "stop a generation left running (chat-ui)", "stop",
              request="POST /conversation/{id}/stop-generating", timeout="delete", idempotent=True,
              next="stopped", optional=True, cleanup=True, owned=True, ok=(200, 202, 204, 404), skip="nothing_runs",
              budget=0.5),
    StateSpec(P.DELETE, "delete the conversation (retried until Timeouts.cleanup)", "delete",
              request="DELETE /conversation/{id}", timeout="delete", idempotent=True, next="deleted", cleanup=True,
              owned=True, ok=frozenset({200, 202, 204, 404})),  # 404: already gone, or never this session's
    StateSpec(P.CLOSED, "done, nothing left on the server (unless detached on purpose)"),
    StateSpec(P.FAILED, "ended by an error, the conversation deleted if it existed"),
)
# fmt: on

_FORWARD: Final[tuple[Edge, ...]] = (
    Edge("start", (P.NEW,), P.READY, conditions="created"),  # attached: a conversation already on the server
    Edge("start", (P.NEW,), P.SETTINGS),
    Edge("create", (P.SETTINGS,), P.CREATE),
    Edge("fetch", (P.CREATE, P.READY), P.FETCH),
    Edge("send", (P.FETCH,), P.SEND),
    Edge("stream", (P.SEND,), P.STREAM),
    Edge("reattach", (P.STREAM, P.REATTACH), P.REATTACH),
    Edge("finish", (P.STREAM, P.REATTACH), P.READY),
)
_ENDING: Final[tuple[Edge, ...]] = (
    Edge("stopped", (P.STOP,), P.DELETE),
    Edge("deleted", (P.DELETE,), P.CLOSED, unless="has_error"),
    Edge("deleted", (P.DELETE,), P.FAILED),
    Edge("detach", (P.NEW, P.CREATE, P.READY), P.CLOSED, conditions="created"),  # left on the server on purpose
)


def _ending_edges() -> Iterator[Edge]:
    """``close`` and ``abort`` from every state that is not part of the ending, read from ``ends``."""
    for trigger, nothing_left in (("close", P.CLOSED), ("abort", P.FAILED)):
        groups: dict[tuple[Phase, str | None], list[Phase]] = {}
        for spec in STATES:
            if spec.phase.is_terminal or spec.cleanup:
                continue
            groups.setdefault((spec.ends or nothing_left, spec.ends_if), []).append(spec.phase)
        fallbacks: list[Phase] = []
        for (dest, guard), sources in groups.items():
            yield Edge(trigger, tuple(sources), dest, conditions=guard)
            if guard is not None:
                fallbacks += sources
        if fallbacks:
            yield Edge(trigger, tuple(fallbacks), nothing_left)


TRANSITIONS: Final[tuple[Edge, ...]] = (*_FORWARD, *_ending_edges(), *_ENDING)

SPEC: Final[Mapping[Phase, StateSpec]] = {s.phase: s for s in STATES}

# Which triggers each state accepts: checked before firing, so misuse never touches the machine.
VALID_TRIGGERS: Final[Mapping[Phase, frozenset[str]]] = {
    spec.phase: frozenset(e.trigger for e in TRANSITIONS if spec.phase in e.sources) for spec in STATES
}


def request_of(phase: Phase, cid: str | None) -> tuple[str, str]:
    """The method and path ``phase`` sends; ``{id}`` becomes ``cid``, checked again and encoded as one
    path segment (an id from the server never reaches another path)."""
    request = SPEC[phase].request
    if request is None:
        raise ValueError(f"state {phase.value!r} sends no request")
    method, _, path = request.partition(" ")
    if "{id}" in path:
        path = path.replace("{id}", quote(validate_conversation_id(cid), safe=""))
    return method, path


def request_line(phase: Phase, cid: str | None) -> str | None:
    """``phase``'s request as the history and the stepper show it (``{id}`` filled in once known)."""
    request = SPEC[phase].request
    return request.replace("{id}", cid) if request is not None and cid else request


def destination(source: Phase, trigger: str, holds: Callable[[str], bool] | None = None) -> Phase | None:
    """Where ``trigger`` leads from ``source``: the first of its edges whose guard holds, as the machine
    chooses (``holds(name)``: the guard's value now; ``None``: not allowed from here). Without ``holds``
    only an unguarded choice is answered (a guarded edge in the way raises ``ValueError``)."""
    for edge in TRANSITIONS:
        if edge.trigger != trigger or source not in edge.sources:
            continue
        guards = [g for g in (edge.conditions, edge.unless) if g is not None]
        if guards and holds is None:
            raise ValueError(f"{trigger!r} from {source.value!r} depends on {guards[0]!r}: pass holds")
        if holds is None or (
            (edge.conditions is None or holds(edge.conditions)) and (edge.unless is None or not holds(edge.unless))
        ):
            return edge.dest
    return None


DELETE_OK: Final = SPEC[Phase.DELETE].ok
"""Statuses of a DELETE after which the conversation is gone (404: already gone, or never this session's)."""
