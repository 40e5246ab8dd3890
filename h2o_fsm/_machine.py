"""The conversation machine: the one table of states and transitions, and the machine built from it.

This table is the single source of truth. The engine runs it (through ``transitions``), the
diagrams in ``diagrams/`` are drawn from it (``h2o-fsm diagram``), and nothing else defines a
transition.

Callback order of one transition (transitions' own order, run strictly in sequence here):

1. ``prepare_event``  – ``Conversation._prepare``: start the clock, forget the last status.
2. conditions         – ``created`` / ``has_error`` guards from the table.
3. ``on_exit`` of the source state – ``STREAM`` closes the response body.
4. ``on_enter`` of the destination – performs the HTTP step of that state (``SETTINGS``,
   ``CREATE``, ``SEND``, ``DELETE``); ``STREAM`` is then read by the consumer while the machine rests in it.
5. ``finalize_event`` – ``Conversation._finalize``: append the history record and log the transition;
   it runs also when a callback raised.

Deviations from transitions 0.9.3 that we need (see ``_Machine``):

* callbacks of one list run one after the other in the caller's task (0.9.3 gathers them);
* outside cancellation (``task.cancel()``, ``asyncio.timeout``) propagates (0.9.3 returns ``False``);
* no class-level registry of running tasks: one conversation can never cancel or block another.

One machine serves every conversation: conversations are not registered with it (no per-model
bindings, nothing to remove); events are fired with ``MACHINE.events[name].trigger(conversation)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Final, cast

from transitions.extensions.asyncio import (
    AsyncCondition,
    AsyncEventData,
    AsyncMachine,
    AsyncState,
    AsyncTransition,
)

from ._phase import Phase

if TYPE_CHECKING:  # these aliases exist only in transitions' stubs
    from transitions.core import Callback
    from transitions.extensions.asyncio import AsyncCallback

__all__ = ["MACHINE", "STATES", "TRANSITIONS", "VALID_TRIGGERS", "Edge", "StateSpec"]


@dataclasses.dataclass(frozen=True)
class StateSpec:
    phase: Phase
    doc: str
    on_enter: str | None = None
    on_exit: str | None = None


@dataclasses.dataclass(frozen=True)
class Edge:
    trigger: str
    sources: tuple[Phase, ...]
    dest: Phase
    conditions: str | None = None
    unless: str | None = None
    doc: str = ""


P = Phase

STATES: Final[tuple[StateSpec, ...]] = (
    StateSpec(P.NEW, "nothing sent yet"),
    StateSpec(P.SETTINGS, "POST /settings (skipped when the session already sent them)", "_enter_settings"),
    StateSpec(P.CREATE, "POST /conversation → conversationId", "_enter_create"),
    StateSpec(P.SEND, "POST /conversation/ID with the turn's prompt", "_enter_send"),
    StateSpec(P.STREAM, "the consumer reads the event stream", "_enter_stream", "_exit_stream"),
    StateSpec(P.READY, "answer complete, another turn may be sent"),
    StateSpec(P.DELETE, "DELETE /conversation/ID (shielded, bounded, retried)", "_enter_delete"),
    StateSpec(P.CLOSED, "done, nothing left on the server"),
    StateSpec(P.FAILED, "ended by an error, the conversation deleted if it existed"),
)

TRANSITIONS: Final[tuple[Edge, ...]] = (
    Edge("start", (P.NEW,), P.SETTINGS),
    Edge("create", (P.SETTINGS,), P.CREATE),
    Edge("send", (P.CREATE, P.READY), P.SEND),
    Edge("stream", (P.SEND,), P.STREAM),
    Edge("finish", (P.STREAM,), P.READY, doc="final event"),
    Edge("close", (P.NEW, P.SETTINGS), P.CLOSED),
    Edge("close", (P.CREATE, P.SEND, P.STREAM, P.READY), P.DELETE),
    Edge("abort", (P.NEW, P.SETTINGS), P.FAILED),
    Edge("abort", (P.CREATE,), P.DELETE, conditions="created"),
    Edge("abort", (P.CREATE,), P.FAILED),
    Edge("abort", (P.SEND, P.STREAM, P.READY), P.DELETE),
    Edge("deleted", (P.DELETE,), P.CLOSED, unless="has_error"),
    Edge("deleted", (P.DELETE,), P.FAILED),
)

# Which triggers each state accepts: checked before firing, so misuse never touches the machine.
VALID_TRIGGERS: Final[dict[Phase, frozenset[str]]] = {
    spec.phase: frozenset(e.trigger for e in TRANSITIONS if spec.phase in e.sources) for spec in STATES
}


class _State(AsyncState):
    """Same enter/exit callbacks, without transitions' two stdlib log calls per enter and exit."""

    async def enter(self, event_data: AsyncEventData) -> None:  # type: ignore[override]  # as the stub
        await event_data.machine.callbacks(self.on_enter, event_data)

    async def exit(self, event_data: AsyncEventData) -> None:  # type: ignore[override]  # as the stub
        await event_data.machine.callbacks(self.on_exit, event_data)


class _Transition(AsyncTransition):
    """transitions' execution order, unchanged (prepare → conditions → before_state_change → before →
    on_exit → on_enter → after → after_state_change), without its per-step debug logging, the
    gather of an empty condition list, or the 0.9.3 cancellation of the model's other tasks."""

    async def execute(self, event_data: AsyncEventData) -> bool:  # type: ignore[override]  # as the stub
        machine = event_data.machine
        await machine.callbacks(self.prepare, event_data)
        for condition in self.conditions:
            if not await cast("AsyncCondition", condition).check(event_data):
                return False
        await machine.callbacks(machine.before_state_change, event_data)
        await machine.callbacks(self.before, event_data)
        if self.dest:
            await self._change_state(event_data)
        await machine.callbacks(self.after, event_data)
        await machine.callbacks(machine.after_state_change, event_data)
        return True


class _Machine(AsyncMachine):
    """``AsyncMachine`` with in-order callbacks and cancellation that propagates."""

    state_cls = _State  # type: ignore[assignment]  # the stub names NestedAsyncState here
    transition_cls = _Transition

    @staticmethod
    async def await_all(callables: Iterable[Callable[[], Awaitable[bool | None]]]) -> list[bool | None]:
        return [await func() for func in callables]

    async def callbacks(  # type: ignore[override]  # as in transitions' own stub
        self, funcs: Iterable[Callback], event_data: AsyncEventData
    ) -> None:
        # In order, in this task; and no list/partial/coroutine built for the many empty lists
        # (nine callback lists per transition, most of them empty).
        for func in funcs:
            if type(func) is str:
                # Our table names model methods; call them without transitions' generic resolution
                # (getattr, property wrapping, import fallback) and inspect.isawaitable per call.
                result = getattr(event_data.model, func)(event_data)
                if result is not None:
                    await result
            else:
                await self.callback(cast("AsyncCallback", func), event_data)

    async def process_context(self, func: Callable[[], Awaitable[None]], model: object) -> bool:
        # 0.9.3 registers the task in a class-level dict and turns CancelledError into False.
        # (transitions' stubs say None; the coroutine returns the event's bool result)
        return await cast("Callable[[], Awaitable[bool]]", func)()


def _build() -> _Machine:
    states = [
        {"name": s.phase, "on_enter": [s.on_enter] if s.on_enter else [], "on_exit": [s.on_exit] if s.on_exit else []}
        for s in STATES
    ]
    transitions = []
    for edge in TRANSITIONS:
        t: dict[str, object] = {"trigger": edge.trigger, "source": list(edge.sources), "dest": edge.dest}
        if edge.conditions:
            t["conditions"] = edge.conditions
        if edge.unless:
            t["unless"] = edge.unless
        transitions.append(t)
    return _Machine(
        model=None,
        states=states,
        transitions=transitions,
        initial=P.NEW,
        auto_transitions=False,
        send_event=True,
        queued=False,
        prepare_event="_prepare",
        finalize_event="_finalize",
        name="h2o-fsm",
    )


MACHINE: Final = _build()
