"""Issue 20: the caller gets the answer when it is complete; the stream's tail and the DELETE follow in
tasks the client owns, with the ending's guarantees. Real emulator on loopback (``answer_tail``: the
server's work after the answer before it ends the stream); orderings, never milliseconds."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hostile_server import HostileServer, Reply, Request, stream_body
from support import FAST_TIMEOUTS, assert_clean, caller_timeout, client_for

from h2o_fsm import H2o, H2oClient, H2oTimeoutError, Journal, Phase, Timeouts, TransitionRecord
from h2o_fsm.server import Fault, LocalServer, ServerConfig
from h2o_fsm.server._app import state_of
from h2o_fsm.server._state import generate

DIALECTS = ("h2o", "chat-ui")
TAIL = 1.5  # seconds of server work after the answer: far longer than reading an answer on loopback


def tail_server(dialect: str, tail: float = TAIL, faults: list[Fault] | None = None) -> LocalServer:
    return LocalServer(ServerConfig(max_tokens=8, answer_tail=tail), faults=faults, dialect=dialect)  # type: ignore[arg-type]


def open_streams(server: LocalServer) -> int:
    return sum(state_of(server.app).open_streams.values())


def deletes(server: LocalServer) -> int:
    return len(server.accounting.requests_for("DELETE"))


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_ask_returns_before_the_tail_and_the_delete(dialect: str) -> None:
    records: list[TransitionRecord] = []
    with tail_server(dialect, faults=[Fault("delete", "stall", seconds=0.3, count=-1)]) as server:
        async with client_for(server, "aiohttp", on_transition=records.append) as client:
            answer = await client.ask("Hi")
            # the answer is complete; the server is still at its run, and nothing was deleted yet
            assert answer == "".join(generate([("user", "Hi")], 8))
            assert open_streams(server) == 1 and deletes(server) == 0
            assert records[-1].trigger == "finish" and client.live_conversations == 1
        # aclose() (leaving the block) waited for the tail and the one DELETE
        assert deletes(server) == 1 and open_streams(server) == 0
        assert [r.trigger for r in records][-4:] == ["finish", "tail", "close", "deleted"]
        assert records[-3].error is None and client.tail_errors == 0 and client.undeleted_conversations == 0
        assert_clean(server)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_stream_loop_ends_at_the_answer(dialect: str) -> None:
    with tail_server(dialect) as server:
        async with client_for(server, "httpx") as client:
            chunks = [chunk async for chunk in client.stream("Hi")]
            assert "".join(chunks) == "".join(generate([("user", "Hi")], 8))
            assert open_streams(server) == 1 and deletes(server) == 0
        assert deletes(server) == 1
        assert_clean(server)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_the_next_turn_starts_after_the_previous_stream_ended(dialect: str) -> None:
    with tail_server(dialect, tail=0.5) as server:
        async with client_for(server, "aiohttp") as client, client.conversation() as conv:
            first = await conv.ask("first")
            assert open_streams(server) == 1  # the first caller did not wait for the server's run
            second = await conv.ask("second")
            assert open_streams(server) == 1 and state_of(server.app).overlapping_sends == 0
            triggers = [r.trigger for r in conv.history]
            assert triggers[triggers.index("finish") + 1] == "tail"  # the tail, then the next turn's steps
        assert second == "".join(generate([("user", "first"), ("assistant", first), ("user", "second")], 8))
        assert state_of(server.app).overlapping_sends == 0 and conv.state is Phase.CLOSED
        if dialect == "chat-ui":  # the second turn hangs from the first answer: one linear history
            turns = server.accounting.turns(conv.conversation_id or "")
            assert len(turns) == 2 and turns[1].parent == turns[0].assistant and not server.accounting.branched
        assert_clean(server)


async def test_settle_waits_for_the_title_sent_after_the_answer() -> None:
    with tail_server("chat-ui", tail=0.3) as server:
        async with client_for(server, "aiohttp") as client, client.conversation() as conv:
            await conv.ask("Hello")
            await conv.settle()
            assert open_streams(server) == 0
            assert conv.final is not None and conv.final.title  # the emulator titles after the answer
            assert conv.history[-1].trigger == "tail"


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_tail_longer_than_its_bound_is_counted_and_the_conversation_still_deleted(dialect: str) -> None:
    timeouts = Timeouts(connect=2.0, settings=5.0, create=5.0, send=5.0, token=5.0, delete=2.0, cleanup=1.0)
    records: list[TransitionRecord] = []
    with tail_server(dialect, tail=30.0) as server:
        async with client_for(server, "aiohttp", timeouts=timeouts, on_transition=records.append) as client:
            assert await client.ask("Hi")  # the answer, not the tail's error
        tail = next(r for r in records if r.trigger == "tail")
        assert tail.error is not None and tail.error.startswith("H2oTimeoutError")
        assert client.tail_errors == 1 and client.undeleted_conversations == 0
        assert deletes(server) == 1
        assert_clean(server)


def _after_the_answer(server: HostileServer, extra: bytes, cut: int | None) -> None:
    body = stream_body() + extra

    def send(request: Request) -> Reply:
        reply = server.default(request)
        return Reply(reply.status, reply.headers, body, close_after=None if cut is None else len(stream_body()) + cut)

    server.on["send"] = send


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_a_connection_dropped_after_the_answer_is_logged_and_counted_not_raised(transport: str) -> None:
    records: list[TransitionRecord] = []
    with HostileServer() as server:
        _after_the_answer(server, b": keep-alive\n\n" * 4, cut=3)
        async with H2oClient(server.url, transport=transport, timeouts=FAST_TIMEOUTS,  # type: ignore[arg-type]
                             on_transition=records.append) as client:
            assert await client.ask("Hi") == "Hello world"
            async with client.conversation() as conv:
                assert await conv.ask("Hi") == "Hello world"
                assert await conv.ask("again") == "Hello world"  # the conversation goes on
        assert client.tail_errors == 3
        failed = [r for r in records if r.trigger == "tail"]
        assert len(failed) == 3 and all(r.error and r.error.startswith("H2oTransportError") for r in failed)
        assert sorted(server.deletes().values()) == [1, 1]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_the_callers_deadline_holds_while_the_previous_tail_runs(dialect: str) -> None:
    bounded = Timeouts(connect=2.0, create=5.0, send=5.0, delete=2.0, cleanup=8.0)  # the tail: 4 s at most
    with tail_server(dialect, tail=3.0) as server:
        async with client_for(server, "aiohttp", timeouts=bounded) as client:
            conv = client.conversation()
            async with conv:
                await conv.ask("first")
                loop = asyncio.get_running_loop()
                started = loop.time()
                with pytest.raises(TimeoutError):
                    async with caller_timeout(0.3):
                        await conv.ask("second")
                assert loop.time() - started < 2.0  # the caller's deadline, not the server's run (3 s)
            assert conv.state.is_terminal
        assert deletes(server) == 1 and server.accounting.live == 0


async def test_the_turns_deadline_holds_while_the_previous_tail_runs() -> None:
    total = Timeouts(connect=2.0, create=5.0, send=5.0, delete=2.0, cleanup=8.0, total=0.5)
    with tail_server("h2o", tail=1.5) as server:
        async with client_for(server, "httpx", timeouts=total) as client, client.conversation() as conv:
            await conv.ask("first")
            with pytest.raises(H2oTimeoutError) as info:
                await conv.ask("second")
        assert info.value.phase is Phase.STREAM and conv.state is Phase.FAILED
        assert deletes(server) == 1 and server.accounting.live == 0


async def test_the_seed_api_yields_every_chunk_and_ends_after_its_delete(monkeypatch: pytest.MonkeyPatch) -> None:
    with tail_server("h2o", tail=0.3) as server:  # the seed's provider speaks the 2023 dialect
        monkeypatch.setattr(H2o, "url", server.url)
        msgs = [{"role": "user", "content": "Hi"}]
        chunks = []
        async for chunk in H2o.create_async_generator("", msgs):
            chunks.append(chunk)
            assert deletes(server) == 0
        assert deletes(server) == 1 and open_streams(server) == 0  # step 7 of the seed's flow: ended after its DELETE
        assert "".join(chunks) == "".join(generate([("user", "Hi")], 8)) and len(chunks) == 8
        assert await H2o.create_async("", msgs) == "".join(chunks)
        assert deletes(server) == 2 and open_streams(server) == 0
        await H2o.aclose()
        assert_clean(server)


SCRIPT = """
import asyncio, sys
from h2o_fsm import H2oClient

async def main():
    client = H2oClient(sys.argv[1], dialect=sys.argv[2], transport=sys.argv[3])  # never closed
    print(await client.ask("Hi"))

asyncio.run(main())
"""


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("tail", [0.0, 0.3])
def test_a_script_returning_right_after_its_answer_still_deletes(dialect: str, tail: float) -> None:
    with tail_server(dialect, tail=tail, faults=[Fault("delete", "stall", seconds=0.3, count=-1)]) as server:
        for transport in ("aiohttp", "httpx"):
            done = subprocess.run([sys.executable, "-c", SCRIPT, server.url, dialect, transport],
                                  check=False, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip() == "".join(generate([("user", "Hi")], 8))
        # asyncio.run cancelled the ending at the loop's shutdown: it went on, and waited for its DELETE
        assert deletes(server) == 2
        assert_clean(server)


CRASH = """
import asyncio, os, sys
from h2o_fsm import H2oClient, Journal

async def main():
    client = H2oClient(sys.argv[1], journal=Journal(sys.argv[2], lease=0.5))  # a short lease: the test waits it out
    print(await client.ask("Hi"), flush=True)
    os._exit(9)  # dies between the answer and its DELETE, like kill -9

asyncio.run(main())
"""


def test_the_journal_covers_a_crash_between_the_answer_and_its_delete(tmp_path: Path) -> None:
    path = tmp_path / "live.sqlite"
    with tail_server("h2o") as server:
        done = subprocess.run([sys.executable, "-c", CRASH, server.url, str(path)], check=False, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 9 and done.stdout.strip(), done.stderr
        assert server.accounting.live == 1 and deletes(server) == 0  # it had the answer, not yet its DELETE
        journal = Journal(path)
        try:
            assert len(journal.entries(server.url)) == 1
            time.sleep(0.7)  # the dead owner's lease (0.5 s) runs out: only then may a sweep delete its entry

            async def sweep() -> int:
                async with H2oClient(server.url) as client:
                    return (await client.sweep(journal)).deleted

            assert asyncio.run(sweep()) == 1
        finally:
            journal.close()
        assert_clean(server)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_the_stepper_shows_the_tail_and_the_ending_as_they_happen(dialect: str) -> None:
    seen: list[TransitionRecord] = []
    with tail_server(dialect, tail=0.5) as server:
        async with client_for(server, "aiohttp", on_transition=seen.append) as client, client.conversation() as conv:
            conv.queue("Hello")
            while conv.state is not Phase.READY:
                result = await conv.step()
            assert result.trigger == "finish" and result.text == "".join(generate([("user", "Hello")], 8))
            assert seen[-1].trigger == "finish" and open_streams(server) == 1  # the step ended at the answer
            assert "DELETE" in conv.describe_next()
            result = await conv.step()  # close: after the tail, which is recorded as it ends
            assert result.trigger == "close" and result.status == 200 and conv.state is Phase.CLOSED
            assert result.request == f"DELETE /conversation/{conv.conversation_id}"
        assert [r.trigger for r in seen][-4:] == ["finish", "tail", "close", "deleted"]
        assert seen[-3].source is seen[-3].dest is Phase.READY and seen[-3].duration_ms > 0
        assert_clean(server)


LATER = """
import asyncio, sys
from h2o_fsm import H2oClient

client = None


async def main():
    global client
    client = H2oClient(sys.argv[1], dialect=sys.argv[2])  # never closed
    print(await client.ask("Hi"), flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # returns once the test saw the DELETE reach the server

asyncio.run(main())
print("undeleted:", client.undeleted_conversations)
"""


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_delete_in_flight_when_the_loop_shuts_down_is_sent_again(dialect: str) -> None:
    # the first DELETE is stalled on the server while the script's loop shuts down: the ending sends it again
    with tail_server(dialect, tail=0.0, faults=[Fault("delete", "stall", seconds=1.5)]) as server:
        child = subprocess.Popen([sys.executable, "-c", LATER, server.url, dialect], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdin is not None
            assert child.stdout.readline().strip()  # the answer
            for _ in range(300):
                if server.faults.fired:  # its DELETE reached the server, which sits on it
                    break
                time.sleep(0.01)
            assert server.faults.fired
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.wait(30) == 0, child.stderr.read() if child.stderr else ""
            assert child.stdout.read().strip() == "undeleted: 0"  # the client knows it was deleted
        finally:
            child.kill()
        for _ in range(300):
            if server.accounting.live == 0 and deletes(server) == 2:
                break
            time.sleep(0.01)
        assert server.accounting.live == 0 and deletes(server) == 2  # deleted: the second DELETE answered
