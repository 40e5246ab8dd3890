"""Driving a conversation one phase at a time, against the bundled server."""

from __future__ import annotations

import asyncio

import pytest
from support import emulator, stepped_states

from h2o_fsm import H2oClient, H2oStateError, H2oStatusError, Phase
from h2o_fsm.server import Fault, LocalServer, ServerConfig, generate

EXPECTED_STATES = stepped_states()  # settings, create, fetch, send, stream, ready, closed: from the table
AT = {phase: i for i, phase in enumerate(EXPECTED_STATES)}


async def test_every_phase_one_step_at_a_time(server: LocalServer) -> None:
    async with H2oClient(server.url) as client:
        async with client.conversation() as conv:
            conv.queue("Hi")
            results = []
            while not conv.state.is_terminal:
                before = server.accounting.snapshot()["requests"]
                results.append(await conv.step())
                # inspect between steps
                assert conv.state is results[-1].state
                assert conv.history[-1].dest in (conv.state, Phase.DELETE)
                if results[-1].request and not results[-1].skipped:
                    assert server.accounting.snapshot()["requests"] == before + 1  # type: ignore[operator]
            with pytest.raises(H2oStateError):
                await conv.step()
    assert [r.state for r in results] == EXPECTED_STATES
    cid = conv.conversation_id
    assert [r.request for r in results][: AT[Phase.SEND] + 1] == [
        "POST /settings", "POST /conversation", f"GET /api/v2/conversations/{cid}", f"POST /conversation/{cid}"
    ]
    assert results[AT[Phase.FETCH]].skipped  # the 2023 dialect has no fetch step
    assert results[AT[Phase.SETTINGS]].status == 303 and results[AT[Phase.CREATE]].status == 200
    assert results[AT[Phase.CLOSED]].status == 200
    assert results[AT[Phase.READY]].text == "".join(generate([("user", "Hi")], 8))
    assert all(r.elapsed_ms >= 0 for r in results)
    assert server.accounting.live == 0


@pytest.mark.parametrize("steps", range(len(EXPECTED_STATES)))
@pytest.mark.parametrize("how", ["exit", "exception", "cancel"])
async def test_abandoning_a_stepped_conversation_deletes_it(steps: int, how: str) -> None:
    with emulator(ServerConfig(max_tokens=4)) as server:
        async with H2oClient(server.url) as client:

            async def drive() -> None:
                async with client.conversation() as conv:
                    conv.queue("Hi")
                    for _ in range(steps):
                        await conv.step()
                    if how == "exception":
                        raise RuntimeError("user code failed")
                    if how == "cancel":
                        await asyncio.sleep(10)

            if how == "cancel":
                task = asyncio.create_task(drive())
                await asyncio.sleep(0.2)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            elif how == "exception":
                with pytest.raises(RuntimeError):
                    await drive()
            else:
                await drive()
        acct = server.accounting
        assert acct.live == 0 and acct.deleted == acct.created == (1 if steps > AT[Phase.CREATE] else 0)


async def test_step_without_a_prompt_is_a_clear_error(server: LocalServer) -> None:
    async with H2oClient(server.url) as client:
        async with client.conversation() as conv:
            await conv.step()
            await conv.step()
            await conv.step()  # fetch needs no prompt
            with pytest.raises(H2oStateError, match="prompt"):
                await conv.step()
            assert conv.state is Phase.FETCH  # misuse does not abort the conversation
            await conv.step("now")
            assert conv.state is Phase.SEND
    assert server.accounting.live == 0


async def test_a_failing_step_aborts_and_deletes() -> None:
    with emulator(ServerConfig(max_tokens=4), faults=[Fault("send", "status", status=500)]) as server:
        async with H2oClient(server.url) as client:
            conv = client.conversation()
            conv.queue("x")
            await conv.step()
            await conv.step()
            await conv.step()
            with pytest.raises(H2oStatusError):
                await conv.step()
            assert conv.state is Phase.FAILED
        assert server.accounting.live == 0


async def test_describe_next_redacts_and_diagram_highlights(server: LocalServer) -> None:
    async with H2oClient(server.url) as client:
        async with client.conversation() as conv:
            conv.queue("top secret")
            assert "/settings" in conv.describe_next()
            await conv.step()
            await conv.step()
            assert "(skipped)" in conv.describe_next()  # the 2023 dialect's fetch
            await conv.step()
            assert "top secret" not in conv.describe_next() and "<10 chars>" in conv.describe_next()
            assert "class fetch current" in conv.diagram()
            assert "fillcolor" in conv.diagram("dot")


async def test_aclose_from_another_task_during_a_step_is_refused_then_works() -> None:
    with emulator(ServerConfig(max_tokens=4), faults=[Fault("create", "stall", seconds=0.3)]) as server:
        async with H2oClient(server.url) as client:
            conv = client.conversation()
            opening = asyncio.create_task(conv.open())
            await asyncio.sleep(0.1)
            with pytest.raises(H2oStateError, match="another task"):
                await conv.aclose()
            await opening
            await conv.aclose()
            assert conv.state is Phase.CLOSED
        assert server.accounting.live == 0


async def test_two_steps_at_once_are_refused(server: LocalServer) -> None:
    async with H2oClient(server.url) as client:
        async with client.conversation() as conv:
            conv.queue("x")
            first = asyncio.create_task(conv.step())
            await asyncio.sleep(0)
            with pytest.raises(H2oStateError):
                await conv.step()
            await first
            assert conv.state is Phase.SETTINGS
    assert server.accounting.live == 0
