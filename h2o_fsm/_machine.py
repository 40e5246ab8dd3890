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
  no class-level registry of running tasks, so one conversation can never cancel or block another;
* ``event_cls`` / ``transition_cls`` (documented like ``state_cls``): an event's ``trigger`` and a
  transition's ``execute`` do what transitions' do, in the order above, in two coroutines instead of
  nine (``trigger``, ``process_context``, ``_trigger``, ``_process``, ``execute``, ``_change_state``, the
  state's ``enter`` and two ``callbacks``): every await inside a step resumes that stack, once per network
  read; and without the seven stdlib debug records a trigger builds (51 a conversation) nor the
  per-transition ``cancel_running_transitions`` (there is no registry of running tasks to cancel).

The object the machine moves (transitions calls it the model) is each conversation's
:class:`~h2o_fsm._driver.Driver`; drivers are not registered with the machine (no per-model bindings,
nothing to remove); events are fired with ``MACHINE.events[name].trigger(driver)``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from enum import Enum
from typing import Any, Final, cast

from transitions.core import MachineError
from transitions.extensions.asyncio import AsyncEvent, AsyncEventData, AsyncMachine, AsyncState, AsyncTransition

from . import _steps
from ._table import STATES, TRANSITIONS

__all__ = ["MACHINE"]

_LOGGER = logging.getLogger("transitions.core")  # where transitions logs a failing finalize_event


class _State(AsyncState):
    """A state whose enter/exit run their callbacks and nothing else."""

    async def enter(self, event_data: Any) -> None:  # type: ignore[override]  # as transitions' own stub
        await event_data.machine.callbacks(self.on_enter, event_data)

    async def exit(self, event_data: Any) -> None:  # type: ignore[override]  # as transitions' own stub
        await event_data.machine.callbacks(self.on_exit, event_data)


async def _run(funcs: Iterable[Any], event_data: Any) -> None:
    """A callback list, in order (a function, or a method of the model named by a string)."""
    for func in funcs:
        result = (getattr(event_data.model, func) if type(func) is str else func)(event_data)
        if result is not None:
            await result


class _Transition(AsyncTransition):
    """``AsyncTransition.execute`` in one coroutine: prepare, conditions, before, exit, the new state,
    enter, ``on_final`` for a final state, after (the source state's ``exit`` and the destination's
    ``enter`` are their callback lists, as ``_State`` runs them)."""

    async def execute(self, event_data: Any) -> bool:  # type: ignore[override]  # as transitions' own stub
        machine = event_data.machine
        if self.prepare:
            await _run(self.prepare, event_data)
        if self.conditions and not all([await cast("Awaitable[bool]", c.check(event_data)) for c in self.conditions]):
            return False
        for funcs in (machine.before_state_change, self.before):
            if funcs:
                await _run(funcs, event_data)
        if self.dest:  # None: an internal transition, no change of state
            states = machine.states  # by name: what get_state, set_state and event_data.update look up
            source = states[self.source]
            if source.on_exit:
                await _run(source.on_exit, event_data)
            dest = states[self.dest]
            setattr(event_data.model, machine.model_attribute, dest.value)
            event_data.state = dest
            for func in dest.on_enter:  # the step: every await in it resumes this frame, so inline
                result = (getattr(event_data.model, func) if type(func) is str else func)(event_data)
                if result is not None:
                    await result
            if dest.final and machine.on_final:
                await _run(machine.on_final, event_data)
        for funcs in (self.after, machine.after_state_change):
            if funcs:
                await _run(funcs, event_data)
        return True


class _Event(AsyncEvent):
    """``AsyncEvent.trigger`` in one coroutine: the source state checked, ``prepare_event``, the first
    transition whose conditions hold, ``finalize_event`` however that ended (its own failure is logged
    and swallowed, as transitions does); an exception (a cancellation too) propagates, without the
    error record transitions logs for it (the engine reports its failures itself)."""

    async def trigger(self, model: object, *args: Any, **kwargs: Any) -> bool:  # type: ignore[override]
        machine = self.machine
        event_data = AsyncEventData(None, self, machine, model, args=args, kwargs=kwargs)
        event_data.state = machine.state_of(getattr(model, machine.model_attribute))
        try:
            name = event_data.state.name
            if name not in self.transitions:
                raise MachineError(f"{machine.name}Can't trigger event {self.name} from state {name}!")
            if machine.prepare_event:
                await _run(machine.prepare_event, event_data)
            for trans in self.transitions[name]:
                event_data.transition = trans
                event_data.result = await trans.execute(event_data)
                if event_data.result:
                    break
        except BaseException as err:
            event_data.error = err  # type: ignore[assignment]  # a cancellation too, as transitions does
            if not machine.on_exception:
                raise
            await _run(machine.on_exception, event_data)
        finally:
            try:
                await _run(machine.finalize_event, event_data)
            except BaseException as err:
                _LOGGER.error("%sWhile executing finalize callbacks a %s occurred: %s.", machine.name,
                              type(err).__name__, err)
        return bool(event_data.result)


class _Machine(AsyncMachine):
    """``AsyncMachine`` with in-order callbacks and cancellation that propagates."""

    state_cls = _State  # type: ignore[assignment]  # transitions' stub names its nested state class here
    transition_cls = _Transition
    event_cls = _Event

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.by_value: dict[object, AsyncState] = {}
        super().__init__(*args, **kwargs)

    def state_of(self, value: str | Enum) -> AsyncState:
        """``get_state(value)`` for a model's state value (a ``Phase``), remembered: no enum name looked up."""
        found = self.by_value.get(value)
        if found is None:
            found = self.by_value[value] = self.get_state(value)
        return found

    @staticmethod
    async def await_all(callables: Iterable[Callable[[], Awaitable[Any]]]) -> list[Any]:
        return [await func() for func in callables]

    async def callbacks(self, funcs: Iterable[Any], event_data: Any) -> None:  # type: ignore[override]
        await _run(funcs, event_data)

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
