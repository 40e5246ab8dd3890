"""The one transitions machine every conversation runs on, built from the table (``_table``).

Callback order of one transition (transitions' documented order, run strictly in sequence here):

1. ``prepare_event``  – ``Driver.prepare`` (``_history``): start the clock, forget the last status.
2. conditions         – ``created`` / ``has_error`` guards from the table.
3. ``on_exit`` of the source state – ``stream`` closes the response body.
4. ``on_enter`` of the destination – performs the HTTP step of that state (``_steps``); ``stream`` is
   then read by the caller while the machine rests in it.
5. ``finalize_event`` – ``Driver.finalize`` (``_history``): append the history record and log the
   transition; it runs also when a callback raised.

What we change in transitions' ``AsyncMachine``, through three of its public methods and its documented
``state_cls`` (each change is pinned by ``tests/test_transitions_contract.py``, which fails loudly if
transitions' behaviour moves):

* ``await_all`` runs a callback list in order, in the caller's task (0.9.x gathers them in tasks);
* ``callbacks`` calls each callback directly (a function of the table, or a method of the driver named
  by a string), without a partial, a list and the generic resolution per callback: every await inside
  a step resumes this stack, so its depth is paid per network read (measured: ~8 % of client CPU);
* ``state_cls``: states enter and exit without transitions' two stdlib log records per call (the host
  did not ask for them; their arguments are built even when the logger is off);
* ``process_context`` lets an outside cancellation propagate (0.9.3 turns it into ``False``) and keeps
  no class-level registry of running tasks, so one conversation can never cancel or block another.

The object the machine moves (transitions calls it the model) is each conversation's
:class:`~h2o_fsm._driver.Driver`; drivers are not registered with the machine (no per-model bindings,
nothing to remove); events are fired with ``MACHINE.events[name].trigger(driver)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, cast

from transitions.extensions.asyncio import AsyncMachine, AsyncState

from . import _steps
from ._table import STATES, TRANSITIONS

__all__ = ["MACHINE"]


class _State(AsyncState):
    """A state whose enter/exit run their callbacks and nothing else."""

    async def enter(self, event_data: Any) -> None:  # type: ignore[override]  # as transitions' own stub
        await event_data.machine.callbacks(self.on_enter, event_data)

    async def exit(self, event_data: Any) -> None:  # type: ignore[override]  # as transitions' own stub
        await event_data.machine.callbacks(self.on_exit, event_data)


class _Machine(AsyncMachine):
    """``AsyncMachine`` with in-order callbacks and cancellation that propagates."""

    state_cls = _State  # type: ignore[assignment]  # transitions' stub names its nested state class here

    @staticmethod
    async def await_all(callables: Iterable[Callable[[], Awaitable[Any]]]) -> list[Any]:
        return [await func() for func in callables]

    async def callbacks(self, funcs: Iterable[Any], event_data: Any) -> None:  # type: ignore[override]
        for func in funcs:
            result = (getattr(event_data.model, func) if type(func) is str else func)(event_data)
            if result is not None:
                await result

    async def process_context(self, func: Callable[[], Awaitable[None]], model: object) -> bool:
        # (transitions' stubs say None; the coroutine returns the event's bool result)
        return await cast("Callable[[], Awaitable[bool]]", func)()


def _callbacks(name: str | None) -> list[object]:
    return [] if name is None else [getattr(_steps, name)]


def _build() -> _Machine:
    states = [{"name": s.phase, "on_enter": _callbacks(s.on_enter), "on_exit": _callbacks(s.on_exit)} for s in STATES]
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
        initial=STATES[0].phase,
        auto_transitions=False,
        send_event=True,
        queued=False,
        prepare_event="prepare",
        finalize_event="finalize",
        name="h2o-fsm",
    )


MACHINE: Final = _build()
