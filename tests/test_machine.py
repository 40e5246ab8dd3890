"""The machine: one table, diagrams generated from it, and the transitions 0.9.3 pitfalls handled."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from transitions.extensions.asyncio import AsyncMachine
from support import emulator

from h2o_fsm import STATES, TRANSITIONS, H2oClient, H2oStateError, Phase
from h2o_fsm._diagram import render
from h2o_fsm._machine import MACHINE
from h2o_fsm._table import VALID_TRIGGERS
from h2o_fsm.server import Fault, LocalServer, ServerConfig

ROOT = Path(__file__).resolve().parent.parent


def test_every_phase_is_a_state_and_the_five_steps_are_there() -> None:
    assert {s.phase for s in STATES} == set(Phase)
    names = set(MACHINE.states)
    assert {"SETTINGS", "CREATE", "SEND", "STREAM", "DELETE"} <= names


def test_machine_is_built_from_the_table_only() -> None:
    from_table = {(e.trigger, s.name, e.dest.name) for e in TRANSITIONS for s in e.sources}
    from_machine = {
        (name, src, t.dest) for name, ev in MACHINE.events.items() for src, ts in ev.transitions.items() for t in ts
    }
    assert from_machine == from_table


def test_terminal_states_have_no_way_out() -> None:
    assert VALID_TRIGGERS[Phase.CLOSED] == frozenset()
    assert VALID_TRIGGERS[Phase.FAILED] == frozenset()


@pytest.mark.parametrize(("fmt", "path"), [("mermaid", "machine.mmd"), ("dot", "machine.dot")])
def test_diagrams_are_not_stale(fmt: str, path: str) -> None:
    on_disk = (ROOT / "diagrams" / path).read_text(encoding="utf-8")
    assert on_disk == render(fmt), f"diagrams/{path} is stale: run `h2o-fsm diagram --format {fmt} > diagrams/{path}`"  # type: ignore[arg-type]


def test_cli_diagram_matches_the_files() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "h2o_fsm.cli", "diagram", "--format", "mermaid"], capture_output=True, text=True, check=True
    ).stdout
    assert out == (ROOT / "diagrams" / "machine.mmd").read_text(encoding="utf-8")


def test_readme_embeds_the_current_mermaid_diagram() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "```mermaid\n" + render("mermaid") + "```" in readme


def test_highlighted_diagram_marks_the_state() -> None:
    assert "class stream current" in render("mermaid", highlight=Phase.STREAM)
    assert 'stream [label="stream' in render("dot", highlight=Phase.STREAM)
    assert "fillcolor" in render("dot", highlight=Phase.STREAM)


async def test_plain_transitions_093_swallows_outside_cancellation() -> None:
    """The pitfall we work around: stock AsyncMachine turns task.cancel() into a False return."""

    class Model:
        async def slow(self) -> None:
            await asyncio.sleep(10)

    model = Model()
    AsyncMachine(model, states=["a", "b"], transitions=[["go", "a", "b"]], initial="a", before_state_change="slow")

    task = asyncio.create_task(model.go())  # type: ignore[attr-defined]
    await asyncio.sleep(0.01)
    task.cancel()
    assert await task is False  # swallowed


async def test_our_machine_propagates_outside_cancellation() -> None:
    with emulator(ServerConfig(max_tokens=4)) as server:
        server.faults.add(Fault("create", "stall", seconds=1))
        async with H2oClient(server.url) as client:
            conv = client.conversation()
            task = asyncio.create_task(conv.open())
            await asyncio.sleep(0.2)  # the create callback is waiting on the server
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not conv.state.is_terminal  # the ending goes on in a task the client owns...
        assert conv.state is Phase.FAILED  # ...and aclose() waited for it: the create's answer, then DELETE
        assert server.accounting.live == 0 and server.accounting.deleted == 1


async def test_callbacks_run_in_order_in_the_callers_task() -> None:
    """Callback lists run one after the other (0.9.3 gathers them in separate tasks)."""
    order: list[str] = []
    tasks: set[asyncio.Task[object] | None] = set()

    async def cb(name: str) -> None:
        tasks.add(asyncio.current_task())
        await asyncio.sleep(0.01 if name == "a" else 0)
        order.append(name)

    results = await MACHINE.await_all([lambda: cb("a"), lambda: cb("b"), lambda: cb("c")])  # type: ignore[list-item]
    assert order == ["a", "b", "c"] and len(results) == 3
    assert tasks == {asyncio.current_task()}


async def test_one_slow_conversation_does_not_block_another() -> None:
    with emulator(ServerConfig(max_tokens=4), faults=[Fault("stream", "stall", seconds=1.5)]) as server:
        async with H2oClient(server.url) as client:
            slow = asyncio.create_task(client.ask("slow"))
            await asyncio.sleep(0.1)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await client.ask("fast")
            assert loop.time() - t0 < 1.0
            assert not slow.done()
            await slow


async def test_invalid_step_is_a_state_error_and_does_not_touch_the_conversation() -> None:
    with emulator(ServerConfig(max_tokens=4)) as server:
        async with H2oClient(server.url) as client:
            conv = client.conversation()
            await conv.aclose()
            assert conv.state is Phase.CLOSED
            with pytest.raises(H2oStateError):
                await conv.ask("late")
            with pytest.raises(H2oStateError):
                await conv.step()
        assert list(server.accounting.requests) == []
