"""What h2o-fsm relies on in transitions, pinned: if an upgrade moves any of it, these fail loudly.

The engine overrides public methods of ``AsyncMachine`` (``await_all``, ``callbacks``, ``process_context``,
in ``h2o_fsm/_machine.py``), its event's ``trigger`` and its transition's ``execute`` (through the
documented ``event_cls``/``transition_cls``/``state_cls``), and otherwise uses transitions' documented
extension points: ``prepare_event`` and ``finalize_event``, ``on_enter``/``on_exit`` callbacks,
``conditions``/``unless`` guards, ``Machine.set_state``. A machine built the same way as ours, with recording callbacks, checks them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import transitions
from transitions.extensions.asyncio import AsyncMachine

from h2o_fsm._machine import _Machine

ORDER = ["prepare", "condition", "before", "exit:a", "enter:b", "after", "finalize"]


class Model:
    def __init__(self) -> None:
        self.state = "a"
        self.seen: list[str] = []
        self.tasks: set[asyncio.Task[Any] | None] = set()
        self.block = asyncio.Event()
        self.slow = False

    def _note(self, what: str) -> None:
        self.seen.append(what)
        self.tasks.add(asyncio.current_task())

    def prepare(self, event: Any) -> None:
        self._note("prepare")

    def finalize(self, event: Any) -> None:
        self._note("finalize")
        if event.error is not None:
            self.seen.append(f"error:{type(event.error).__name__}")

    @property
    def ok(self) -> bool:
        self._note("condition")
        return True


def build(cls: type[AsyncMachine]) -> tuple[AsyncMachine, Model]:
    model = Model()

    async def exit_a(event: Any) -> None:
        await asyncio.sleep(0.01)  # a slow first callback: the next must still come after it
        event.model._note("exit:a")

    async def enter_b(event: Any) -> None:
        event.model._note("enter:b")
        if event.model.slow:
            await event.model.block.wait()

    machine = cls(
        model=None,
        states=[{"name": "a", "on_exit": [exit_a]}, {"name": "b", "on_enter": [enter_b]}],
        transitions=[{"trigger": "go", "source": "a", "dest": "b", "conditions": "ok",
                      "before": [lambda e: e.model._note("before")], "after": [lambda e: e.model._note("after")]}],
        initial="a", auto_transitions=False, send_event=True, queued=False,
        prepare_event="prepare", finalize_event="finalize",
    )  # fmt: skip
    return machine, model


def test_the_version_range_we_declare() -> None:
    major, minor, *_ = (int(p) for p in transitions.__version__.split(".")[:2])
    assert (major, minor) == (0, 9), "pyproject says transitions>=0.9.1,<0.10: re-check this file before widening it"


async def test_callback_order_and_all_in_the_callers_task() -> None:
    machine, model = build(_Machine)
    assert await machine.events["go"].trigger(model) is True
    assert model.seen == ORDER
    assert model.tasks == {asyncio.current_task()}  # nothing gathered into other tasks
    assert model.state == "b"


async def test_finalize_runs_after_a_failing_callback_and_the_error_propagates() -> None:
    machine, model = build(_Machine)

    def boom(event: Any) -> None:
        raise ZeroDivisionError

    machine.get_state("b").on_enter.append(boom)
    with pytest.raises(ZeroDivisionError):
        await machine.events["go"].trigger(model)
    assert model.seen[-2:] == ["finalize", "error:ZeroDivisionError"]
    assert model.state == "b"  # no rollback: the engine ends the conversation itself


async def test_an_outside_cancellation_propagates_out_of_trigger() -> None:
    machine, model = build(_Machine)
    model.slow = True
    task = asyncio.ensure_future(machine.events["go"].trigger(model))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert model.seen[-2:] == ["finalize", "error:CancelledError"]
    assert not AsyncMachine.async_tasks  # no class-level registry entry left behind


async def test_stock_async_machine_still_needs_our_overrides() -> None:
    """If transitions fixes these upstream, our overrides can go: this test then says so."""
    machine, model = build(AsyncMachine)
    model.slow = True
    task = asyncio.ensure_future(machine.events["go"].trigger(model))
    await asyncio.sleep(0.05)
    task.cancel()
    assert await task is False, "stock AsyncMachine now propagates cancellation: drop the process_context override"

    async def which() -> asyncio.Task[Any] | None:
        return asyncio.current_task()

    tasks = await AsyncMachine.await_all([which, which])
    assert asyncio.current_task() not in tasks, "stock await_all no longer gathers in tasks: drop our override"


async def test_set_state_is_there_for_the_last_resort_ending() -> None:
    machine, model = build(_Machine)
    machine.set_state("b", model=model)
    assert model.state == "b"


async def test_our_states_enter_and_exit_without_stdlib_log_records(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="transitions")
    machine, model = build(_Machine)
    await machine.events["go"].trigger(model)
    assert model.seen == ORDER  # the callbacks still ran, in order
    assert not [r for r in caplog.records if "ing state" in r.getMessage()]  # Entering, Exiting
    stock, other = build(AsyncMachine)
    await stock.events["go"].trigger(other)
    assert [r for r in caplog.records if "Entering state" in r.getMessage()], "transitions stopped logging states"


async def test_a_trigger_makes_no_stdlib_log_record_at_all(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="transitions")
    machine, model = build(_Machine)
    assert await machine.events["go"].trigger(model) is True
    assert model.seen == ORDER
    assert not caplog.records  # transitions' own event and transition make seven a trigger
    stock, other = build(AsyncMachine)
    await stock.events["go"].trigger(other)
    assert [r for r in caplog.records if "Executed machine finalize callbacks" in r.getMessage()], "moved upstream"


async def test_a_condition_that_fails_halts_the_transition_and_finalize_still_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    machine, model = build(_Machine)
    monkeypatch.setattr(Model, "ok", property(lambda self: self._note("condition") or False))
    assert await machine.events["go"].trigger(model) is False
    assert model.seen == ["prepare", "condition", "finalize"]
    assert model.state == "a"


async def test_a_trigger_from_a_state_without_it_raises_machine_error_after_finalize() -> None:
    machine, model = build(_Machine)
    model.state = "b"
    with pytest.raises(transitions.MachineError):
        await machine.events["go"].trigger(model)
    assert model.seen == ["finalize", "error:MachineError"]


async def test_a_failing_finalize_is_logged_and_swallowed_as_transitions_does(caplog: pytest.LogCaptureFixture) -> None:
    machine, model = build(_Machine)

    def bad_finalize(event: Any) -> None:
        raise KeyError("x")

    model.finalize = bad_finalize  # type: ignore[method-assign]
    assert await machine.events["go"].trigger(model) is True
    assert model.state == "b"
    assert [r for r in caplog.records if r.levelname == "ERROR" and "KeyError" in r.getMessage()]
