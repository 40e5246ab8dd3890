"""The conversation's table: every state with all the engine knows about it, and every transition.

This is the single source of truth, pure data. The machine (``_machine``) is built from it; a turn
is "fire the current state's ``next`` trigger until the machine reaches the state whose answer the
caller ``reads``; after reading, fire ``next`` until it ``rests``"; ending is "fire ``close`` or
``abort``, then ``next`` until a terminal state". The stepper, the step timeouts (``timeout``), the
retry policy (``idempotent``), the stepper's descriptions (``request``), the optional steps a dialect
may skip, the emulator's fault phases and the diagrams in ``diagrams/`` are all read from here. Each
state's work is one async callback in ``_steps``, named here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Final
from urllib.parse import quote

from ._phase import Phase
from ._protocol import validate_conversation_id

__all__ = [
    "SPEC", "STATES", "TRANSITIONS", "VALID_TRIGGERS", "Edge", "StateSpec", "destination", "request_line", "request_of",
]


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
    """

    phase: Phase
    doc: str
    on_enter: str | None = None
    on_exit: str | None = None
    request: str | None = None
    timeout: str | None = None
    idempotent: bool = False
    next: str | None = None
    reads: bool = False
    rests: bool = False
    idle: str | None = None
    needs_prompt: bool = False
    optional: bool = False
    cleanup: bool = False
    owned: bool = False


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
    StateSpec(P.NEW, "nothing sent yet", next="start", rests=True),
    StateSpec(P.SETTINGS, "accept the session's settings (skipped when this session sent them)", "settings",
              request="POST /settings", timeout="settings", idempotent=True, next="create", optional=True),
    StateSpec(P.CREATE, "create the conversation: its id", "create",
              request="POST /conversation", timeout="create", next="fetch", rests=True, owned=True),
    StateSpec(P.FETCH, "learn the message the turn hangs from (chat-ui)", "fetch",
              request="GET /api/v2/conversations/{id}", timeout="fetch", idempotent=True, next="send", optional=True),
    StateSpec(P.SEND, "post the turn's prompt", "send", request="POST /conversation/{id}", timeout="send",
              next="stream", needs_prompt=True),
    StateSpec(P.STREAM, "the caller reads the answer's stream", "stream", "leave_stream", next="finish", reads=True),
    StateSpec(P.REATTACH, "the answer's connection dropped: replay the run, skip what was read (chat-ui)",
              "reattach", "leave_stream", request="GET /conversation/{id}/stream", timeout="send", idempotent=True,
              next="finish", reads=True, optional=True),
    StateSpec(P.READY, "answer complete, another turn may be sent", next="fetch", rests=True, idle="close"),
    StateSpec(P.STOP, "stop a generation left running (chat-ui)", "stop",
              request="POST /conversation/{id}/stop-generating", timeout="delete", idempotent=True,
              next="stopped", optional=True, cleanup=True, owned=True),
    StateSpec(P.DELETE, "delete the conversation (retried until Timeouts.cleanup)", "delete",
              request="DELETE /conversation/{id}", timeout="delete", idempotent=True, next="deleted", cleanup=True,
              owned=True),
    StateSpec(P.CLOSED, "done, nothing left on the server"),
    StateSpec(P.FAILED, "ended by an error, the conversation deleted if it existed"),
)

TRANSITIONS: Final[tuple[Edge, ...]] = (
    Edge("start", (P.NEW,), P.SETTINGS),
    Edge("create", (P.SETTINGS,), P.CREATE),
    Edge("fetch", (P.CREATE, P.READY), P.FETCH),
    Edge("send", (P.FETCH,), P.SEND),
    Edge("stream", (P.SEND,), P.STREAM),
    Edge("reattach", (P.STREAM, P.REATTACH), P.REATTACH),
    Edge("finish", (P.STREAM, P.REATTACH), P.READY),
    Edge("close", (P.NEW, P.SETTINGS), P.CLOSED),
    Edge("close", (P.CREATE, P.FETCH, P.READY), P.DELETE),
    Edge("close", (P.SEND, P.STREAM, P.REATTACH), P.STOP),
    Edge("abort", (P.NEW, P.SETTINGS), P.FAILED),
    Edge("abort", (P.CREATE,), P.DELETE, conditions="created"),
    Edge("abort", (P.CREATE,), P.FAILED),
    Edge("abort", (P.FETCH, P.READY), P.DELETE),
    Edge("abort", (P.SEND, P.STREAM, P.REATTACH), P.STOP),
    Edge("stopped", (P.STOP,), P.DELETE),
    Edge("deleted", (P.DELETE,), P.CLOSED, unless="has_error"),
    Edge("deleted", (P.DELETE,), P.FAILED),
)
# fmt: on

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


def destination(source: Phase, trigger: str) -> Phase | None:
    """Where ``trigger`` leads from ``source`` when its first edge's guard holds (``None``: not allowed)."""
    for edge in TRANSITIONS:
        if edge.trigger == trigger and source in edge.sources:
            return edge.dest
    return None
