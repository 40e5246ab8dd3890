"""Resumable answers (chat-ui): when the answer's connection drops mid-answer while the server goes on
generating, the engine reattaches to the run's event log (a state of the table), skips exactly the
text already delivered and goes on; the caller's answer equals the one without a cut, on both
transports; the conversation is deleted once. A server without the endpoint or without the run takes
today's path (a typed error, stop, delete); the 2023 dialect never reattaches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import FAST_TIMEOUTS, assert_clean, client_for

from h2o_fsm import H2oTimeoutError, H2oTransportError, Phase, Timeouts
from h2o_fsm._reattach import MAX_REATTACHES
from h2o_fsm.server import Fault, LocalServer, ServerConfig, generate

N = 12
CONFIG = ServerConfig(max_tokens=N, token_delay=0.002, keep_alive=0.001)
EXPECTED = "".join(generate([("user", "hi")], N))


@pytest.fixture(scope="module")
def chatui() -> Iterator[LocalServer]:
    with LocalServer(CONFIG, dialect="chat-ui") as server:
        yield server


def reattaches(conv: object) -> list[object]:
    return [r for r in conv.history if r.dest is Phase.REATTACH]  # type: ignore[attr-defined]


async def streamed(server: LocalServer, transport: str, **kw: object) -> tuple[list[str], object]:
    async with client_for(server, transport, **kw) as client, client.conversation() as conv:
        chunks = [chunk async for chunk in conv.stream("hi")]
    return chunks, conv


@pytest.mark.parametrize("at", range(N + 1))
async def test_a_cut_at_any_point_gives_the_same_answer(chatui: LocalServer, transport: str, at: int) -> None:
    chatui.reset([Fault("stream", "cut", at_token=at)])
    chunks, conv = await streamed(chatui, transport)
    assert "".join(chunks) == EXPECTED  # nothing lost, nothing delivered twice
    assert conv.final is not None and conv.final.generated_text == EXPECTED  # type: ignore[attr-defined]
    assert [(r.source, r.status) for r in reattaches(conv)] == [(Phase.STREAM, 200)]
    assert conv.state is Phase.CLOSED  # type: ignore[attr-defined]
    assert chatui.faults.fired and chatui.accounting.reattaches == 1
    assert_clean(chatui)
    assert len(chatui.accounting.requests_for("DELETE")) == 1
    assert chatui.accounting.stops == 0  # the run completed: nothing to stop


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(at=st.integers(0, N), again=st.none() | st.integers(1, 3), turns=st.integers(1, 2))
async def test_cuts_of_the_answer_and_of_the_reattach_stream(chatui: LocalServer, at: int, again: int | None,
                                                             turns: int) -> None:  # fmt: skip
    faults = [Fault("stream", "cut", at_token=at)]
    if again is not None:  # the reattach stream closes without its end too: reconnect with Last-Event-ID
        faults.append(Fault("reattach", "cut", at_token=again))
    chatui.reset(faults)
    async with client_for(chatui, "httpx") as client, client.conversation() as conv:
        answers = [await conv.ask("hi") for _ in range(turns)]
    assert answers[0] == EXPECTED and len(set(answers)) == turns  # the second turn hangs from the first
    assert 1 <= len(reattaches(conv)) <= MAX_REATTACHES
    assert [t.branched for t in chatui.accounting.turns(conv.conversation_id or "")] == [False] * turns
    assert_clean(chatui)
    assert len(chatui.accounting.requests_for("DELETE")) == 1


async def test_a_plain_close_of_the_answer_is_reattached_too(chatui: LocalServer, transport: str) -> None:
    chatui.reset([Fault("stream", "cut", at_token=N)])  # cut inside the finalAnswer line: every token was read
    chunks, conv = await streamed(chatui, transport)
    assert "".join(chunks) == EXPECTED and len(reattaches(conv)) == 1
    assert_clean(chatui)


@pytest.mark.parametrize(("config", "status"), [(ServerConfig(max_tokens=N, reattach=False), 404),
                                                (ServerConfig(max_tokens=N, reattach_runs=False), 200)])
async def test_without_the_endpoint_or_the_run_the_turn_fails_as_before(config: ServerConfig, status: int,
                                                                        transport: str) -> None:  # fmt: skip
    with LocalServer(config, [Fault("stream", "cut", at_token=4)], dialect="chat-ui") as server:
        async with client_for(server, transport) as client, client.conversation() as conv:
            got: list[str] = []
            with pytest.raises(H2oTransportError) as caught:
                async for chunk in conv.stream("hi"):
                    got.append(chunk)
        assert caught.value.phase is Phase.STREAM  # the cut's own error: today's path
        assert "".join(got) == "".join(generate([("user", "hi")], N))[: len("".join(got))]
        assert [r.status for r in reattaches(conv)] == [status]
        ending = [(r.source, r.dest) for r in conv.history[-3:]]  # stopped, then deleted
        assert ending == [(Phase.REATTACH, Phase.STOP), (Phase.STOP, Phase.DELETE), (Phase.DELETE, Phase.FAILED)]
        assert server.accounting.stops == 1 and len(server.accounting.requests_for("DELETE")) == 1
        assert_clean(server)


async def test_reattaches_are_bounded(transport: str) -> None:
    faults = [Fault("stream", "cut", at_token=2), Fault("reattach", "cut", at_token=1, count=-1)]
    config = ServerConfig(max_tokens=40, token_delay=0.01, keep_alive=0)
    with LocalServer(config, faults, dialect="chat-ui") as server:
        async with client_for(server, transport) as client, client.conversation() as conv:
            with pytest.raises(H2oTransportError) as caught:
                await conv.ask("hi")
        assert caught.value.phase is Phase.STREAM
        assert len(reattaches(conv)) == MAX_REATTACHES == server.accounting.reattaches
        assert server.accounting.stops == 1  # the run was still going: stopped before the DELETE
        assert_clean(server)


async def test_a_stalled_reattach_keeps_the_deadline(transport: str) -> None:
    faults = [Fault("stream", "cut", at_token=2), Fault("reattach", "stall", seconds=5)]
    timeouts = Timeouts(connect=2, send=5, token=5, delete=2, cleanup=5, total=1.0)
    with LocalServer(CONFIG, faults, dialect="chat-ui") as server:
        started = time.monotonic()
        async with client_for(server, transport, timeouts=timeouts) as client:
            with pytest.raises(H2oTimeoutError):
                await client.ask("hi")
        assert time.monotonic() - started < 4.0
        assert_clean(server)


async def test_the_2023_dialect_never_reattaches(transport: str) -> None:
    with LocalServer(ServerConfig(max_tokens=N), [Fault("stream", "cut", at_token=3)]) as server:
        async with client_for(server, transport) as client, client.conversation() as conv:
            with pytest.raises(H2oTransportError):
                await conv.ask("hi")
        assert reattaches(conv) == [] and Phase.REATTACH not in {r.source for r in conv.history}
        assert_clean(server)


def test_fast_timeouts_leave_room_for_a_reattach() -> None:
    assert FAST_TIMEOUTS.send >= 1.0  # the reattach's request is bounded by Timeouts.send


async def test_a_failing_reattach_gives_the_cut_s_error(transport: str) -> None:
    faults = [Fault("stream", "cut", at_token=3), Fault("reattach", "status", status=503, count=-1)]
    with LocalServer(CONFIG, faults, dialect="chat-ui") as server:
        async with client_for(server, transport) as client, client.conversation() as conv:
            with pytest.raises(H2oTransportError) as caught:
                await conv.ask("hi")
        assert caught.value.phase is Phase.STREAM and not isinstance(caught.value, H2oTimeoutError)
        failed = reattaches(conv)
        assert len(failed) == 1 and failed[0].error is not None and "503" in failed[0].error  # type: ignore[attr-defined]
        assert server.accounting.reattaches == 0 and len(server.accounting.requests_for("GET", "/conversation/")) == 3
        assert_clean(server)


async def test_the_stepper_reads_through_a_reattach(chatui: LocalServer) -> None:
    chatui.reset([Fault("stream", "cut", at_token=5)])
    async with client_for(chatui, "httpx") as client, client.conversation() as conv:
        conv.queue("hi")
        texts = []
        while conv.state is not Phase.READY:
            result = await conv.step()
            texts.append(result.text)
        assert texts[-1] == EXPECTED  # the stream step read the answer, across the reattach
        steps = [(r.source, r.dest) for r in conv.history]
        assert (Phase.STREAM, Phase.REATTACH) in steps and (Phase.REATTACH, Phase.READY) in steps
    assert_clean(chatui)


async def test_an_abandoned_answer_stops_its_run_which_a_delete_alone_would_not(transport: str) -> None:
    config = ServerConfig(max_tokens=200, token_delay=0.01, keep_alive=0)
    with LocalServer(config, dialect="chat-ui") as server:
        async with client_for(server, transport) as client, client.conversation() as conv:
            async for _ in conv.stream("hi"):
                break  # the consumer leaves early: stop-generating, then the DELETE
        acct = server.accounting
        deadline = time.monotonic() + 5
        while acct.runs_running and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert (acct.runs_running, acct.runs_interrupted, acct.runs_completed) == (0, 1, 0)
        assert acct.stops == 1 and len(acct.stop_points) == 1
        assert_clean(server)


async def test_closing_the_client_during_a_reattach(transport: str) -> None:
    from h2o_fsm import H2oStateError

    faults = [Fault("stream", "cut", at_token=2), Fault("reattach", "stall", seconds=3)]
    with LocalServer(CONFIG, faults, dialect="chat-ui") as server:
        client = client_for(server, transport)
        asking = asyncio.ensure_future(client.ask("hi"))
        while len(server.faults.fired) < 2:  # the reattach arrived: it stalls
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await client.aclose()
        with pytest.raises(H2oStateError):
            await asking
        assert time.monotonic() - started < 2.5  # not the stall's 3 s
    assert_clean(server)
