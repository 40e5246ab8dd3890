"""the one-shot's tail read by its ending (``Driver.one_shot``, ``_tail.before_end``): the
ending's order, bounds and the shutdown case, on the bundled emulator over loopback. Orderings and
generous bounds only."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
from hostile_server import HostileServer, Reply, Request, stream_body
from support import FAST_TIMEOUTS, assert_clean, client_for

from h2o_fsm import H2oClient, H2oSyncClient, Timeouts, TransitionRecord
from h2o_fsm.server import Fault, LocalServer, ServerConfig
from h2o_fsm.server._app import state_of
from h2o_fsm.server._state import generate

DIALECTS = ("h2o", "chat-ui")
EXPECTED = "".join(generate([("user", "Hi")], 8))


def tail_server(dialect: str, tail: float, faults: list[Fault] | None = None) -> LocalServer:
    return LocalServer(ServerConfig(max_tokens=8, answer_tail=tail), faults=faults, dialect=dialect)  # type: ignore[arg-type]


def deletes(server: LocalServer) -> int:
    return len(server.accounting.requests_for("DELETE"))


def open_streams(server: LocalServer) -> int:
    return sum(state_of(server.app).open_streams.values())


def _triggers_after_shutdown(server: LocalServer, script: str, dialect: str, transport: str) -> tuple[list[str], str]:
    """Run ``script`` (an ``asyncio.run`` that returns around its answer) against ``server``: the history's
    triggers it printed after the loop shut down, and its stderr."""
    done = subprocess.run([sys.executable, "-c", script, server.url, dialect, transport],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == EXPECTED
    return lines[-1].removeprefix("triggers: ").split(","), done.stderr


# ------------------------------------------------------------------ the loop shutting down mid-tail
MID_TAIL = """
import asyncio, sys
from h2o_fsm import H2oClient

records = []

async def main():
    client = H2oClient(sys.argv[1], dialect=sys.argv[2], transport=sys.argv[3],
                       on_transition=lambda r: records.append(r))  # never closed
    print(await client.ask("Hi"), flush=True)
    while not any(r.trigger == "finish" for r in records):
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # the ending is reading the tail (1.5 s of server work) when the loop shuts down

asyncio.run(main())
print("triggers:", ",".join(r.trigger for r in records))
"""


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_the_loop_shutting_down_while_the_ending_reads_the_tail_still_deletes_once(dialect: str,
                                                                                  transport: str) -> None:
    with tail_server(dialect, tail=1.5) as server:
        triggers, stderr = _triggers_after_shutdown(server, MID_TAIL, dialect, transport)
        assert triggers[-4:] == ["finish", "tail", "close", "deleted"], triggers  # the cut tail, then the end
        for _ in range(300):
            if server.accounting.live == 0:
                break
            time.sleep(0.01)
        assert deletes(server) == 1 and server.accounting.live == 0
        assert "never retrieved" not in stderr and "Task was destroyed" not in stderr, stderr


RIGHT_AFTER = """
import asyncio, sys
from h2o_fsm import H2oClient

records = []

async def main():
    client = H2oClient(sys.argv[1], dialect=sys.argv[2], transport=sys.argv[3],
                       on_transition=lambda r: records.append(r))  # never closed
    print(await client.ask("Hi"), flush=True)  # returns at once: the loop shuts down with the ending just started

asyncio.run(main())
print("triggers:", ",".join(r.trigger for r in records))
"""


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_tail_cut_by_the_loop_shutting_down_before_it_was_read_still_has_its_record(dialect: str,
                                                                                     transport: str) -> None:
    """``_tail``: a tail's outcome is one ``tail`` record, also when the shutdown cuts it before its first read."""
    with tail_server(dialect, tail=0.3) as server:
        triggers, _ = _triggers_after_shutdown(server, RIGHT_AFTER, dialect, transport)
        assert triggers[-4:] == ["finish", "tail", "close", "deleted"], triggers
        assert deletes(server) == 1


# ------------------------------------------------------------------ aclose() and a stalled tail
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_aclose_gives_up_on_a_one_shot_whose_tail_and_delete_both_stall(dialect: str) -> None:
    """cleanup=1: the tail gets 0.5 s, the DELETE (stalled 30 s) the rest; aclose() gives up at its
    bound, the conversation is counted undeleted, the caller had its answer."""
    timeouts = Timeouts(connect=2.0, settings=5.0, create=5.0, send=5.0, token=5.0, delete=5.0, cleanup=1.0)
    records: list[TransitionRecord] = []
    with tail_server(dialect, tail=30.0, faults=[Fault("delete", "stall", seconds=30.0, count=-1)]) as server:
        client = client_for(server, "aiohttp", timeouts=timeouts, on_transition=records.append)
        async with client:
            assert await client.ask("Hi") == EXPECTED
            loop = asyncio.get_running_loop()
            t0 = loop.time()
        assert loop.time() - t0 < 6.0  # bounded by cleanup (+1 s for the tasks given up on), not 30 s
        triggers = [r.trigger for r in records]
        assert "tail" in triggers and triggers.index("finish") < triggers.index("tail")
        tail = next(r for r in records if r.trigger == "tail")
        assert (tail.error or "").startswith("H2oTimeoutError")
        assert client.tail_errors == 1
        assert client.live_conversations == 0
        # the DELETE could not finish within the bound: counted, never raised
        assert client.undeleted_conversations == 1


# ------------------------------------------------------------------ stream(): consumer stops or raises
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_stream_consumer_that_breaks_on_its_last_chunk_ends_and_deletes_once(dialect: str) -> None:
    records: list[TransitionRecord] = []
    with tail_server(dialect, tail=0.3) as server:
        async with client_for(server, "aiohttp", on_transition=records.append) as client:
            got = []
            agen = client.stream("Hi")
            async for chunk in agen:
                got.append(chunk)
                if "".join(got) == EXPECTED:
                    break
            await agen.aclose()  # type: ignore[attr-defined]
            assert "".join(got) == EXPECTED
        assert deletes(server) == 1  # (the server may still count the cut stream open: not asserted)
        assert client.undeleted_conversations == 0
        assert_clean(server)


class Stop(Exception):
    pass


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_stream_consumer_that_raises_after_the_answer_still_deletes_once(dialect: str) -> None:
    with tail_server(dialect, tail=0.3) as server:
        async with client_for(server, "aiohttp") as client:
            agen = client.stream("Hi")
            with pytest.raises(Stop):
                async for _ in agen:
                    raise Stop
            await agen.aclose()  # type: ignore[attr-defined]
        assert deletes(server) == 1  # (the server may still count the cut stream open: not asserted)
        assert_clean(server)


# ------------------------------------------------------------------ tail errors, every entry point
def _cut_after_the_answer(server: HostileServer) -> None:
    body = stream_body() + b": keep-alive\n\n" * 4

    def send(request: Request) -> Reply:
        reply = server.default(request)
        return Reply(reply.status, reply.headers, body, close_after=len(stream_body()) + 3)

    server.on["send"] = send


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_a_broken_tail_of_a_stream_is_counted_recorded_in_order_and_not_raised(transport: str) -> None:
    records: list[TransitionRecord] = []
    with HostileServer() as server:
        _cut_after_the_answer(server)
        async with H2oClient(server.url, transport=transport, timeouts=FAST_TIMEOUTS,  # type: ignore[arg-type]
                             on_transition=records.append) as client:
            assert "".join([c async for c in client.stream("Hi")]) == "Hello world"
        assert client.tail_errors == 1 and client.undeleted_conversations == 0
        triggers = [r.trigger for r in records]
        assert triggers[-4:] == ["finish", "tail", "close", "deleted"], triggers
        assert (records[-3].error or "").startswith("H2oTransportError")
        assert all(r.error is None for r in records if r.trigger != "tail")
        assert sorted(server.deletes().values()) == [1]


async def test_a_handed_in_http_client_reads_the_tail_in_the_ending_too() -> None:
    import httpx

    records: list[TransitionRecord] = []
    with tail_server("chat-ui", tail=0.3) as server:
        async with httpx.AsyncClient() as http:
            async with H2oClient(server.url, dialect="chat-ui", http_client=http, timeouts=FAST_TIMEOUTS,
                                 on_transition=records.append) as client:
                for _ in range(3):
                    assert await client.ask("Hi") == EXPECTED
            assert not http.is_closed
        assert [r.trigger for r in records].count("tail") == 3
        assert all(r.error is None for r in records) and client.tail_errors == 0
        assert deletes(server) == 3 and open_streams(server) == 0
        assert_clean(server)


def test_the_sync_client_reads_the_tail_and_deletes_once() -> None:
    records: list[TransitionRecord] = []
    with tail_server("chat-ui", tail=0.3) as server:
        with H2oSyncClient(server.url, dialect="chat-ui", timeouts=FAST_TIMEOUTS,
                           on_transition=records.append) as client:
            assert client.ask("Hi") == EXPECTED
            assert "".join(client.stream("Hi")) == EXPECTED
        assert deletes(server) == 2 and open_streams(server) == 0
        triggers = [r.trigger for r in records]
        assert triggers.count("tail") == 2 and all(r.error is None for r in records)
        assert_clean(server)


# ------------------------------------------------------------------ chat-ui: a reattached one-shot's tail
@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize("at", [0, 3, 8])
async def test_a_reattached_one_shot_reads_the_reattach_stream_s_tail_in_its_ending(transport: str, at: int) -> None:
    records: list[TransitionRecord] = []
    config = ServerConfig(max_tokens=8, token_delay=0.002, answer_tail=0.3)
    with LocalServer(config, faults=[Fault("stream", "cut", at_token=at)], dialect="chat-ui") as server:
        async with client_for(server, transport, on_transition=records.append) as client:
            assert await client.ask("Hi") == EXPECTED
            assert deletes(server) == 0
            await asyncio.wait(set(client._rt.tasks))
            if transport == "aiohttp":
                fast = client._rt.requester.fast
                assert fast is not None and fast._session is not None
                assert len(fast._session.connector._acquired) == 0  # type: ignore[union-attr]
        triggers = [r.trigger for r in records]
        assert triggers.count("reattach") == 1 and triggers[-4:] == ["finish", "tail", "close", "deleted"]
        assert all(r.error is None for r in records[-4:]) and client.tail_errors == 0
        assert deletes(server) == 1 and open_streams(server) == 0
        assert_clean(server)
