"""Regression tests for the review's closing bugs: error bodies, concurrency slots, secrets in errors, the
ending's budget, and what callers see when ``H2oClient.aclose()`` ends or gives up on their work."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from support import FAST_RETRIES, FAST_TIMEOUTS, caller_timeout, client_for, emulator, no_task_left

from h2o_fsm import H2oClient, H2oError, H2oStateError, H2oStatusError, H2oTimeoutError, Retries, Timeouts
from h2o_fsm.server import Fault, LocalServer, ServerConfig

DIALECTS = ("h2o", "chat-ui")
SECRET = "SECRET-TOKEN-123"
# Each test here takes < 2 s; one that hangs, or waits out a default budget (Timeouts: 10-60 s), crosses this.
# 3 s was 1.5-2x the normal time: a loaded machine could cross it too.
HANG = 8

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """A raw HTTP/1.1 server on 127.0.0.1 (ephemeral port) running ``handler`` per connection; its URL."""
    conns: set[asyncio.StreamWriter] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.add(writer)
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(tracked, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    finally:
        srv.close()
        for writer in conns:
            writer.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(srv.wait_closed(), 1.0)


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    """The request line and headers (lower-case names) of the next request; its body is read and dropped."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
    length = int(headers.get("content-length", "0"))
    if length:
        await reader.readexactly(length)
    return head[0], headers


async def wait_until(check: Callable[[], bool], within: float) -> bool:
    """Poll ``check`` until it holds or ``within`` seconds passed; whether it held."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not check():
        if loop.time() >= end:
            return False
        await asyncio.sleep(0.01)
    return True


async def assert_slots_free(client: H2oClient, server: LocalServer, n: int) -> None:
    """``n`` new turns all get a concurrency slot at once: each reaches the server's create while every
    one of them is held in a stalled send (a slot lost for good lets fewer through)."""
    base = server.accounting.created
    server.faults.add(Fault("send", "stall", seconds=0.6, count=n))
    turns = [asyncio.create_task(client.ask(f"slot {i}")) for i in range(n)]
    try:
        got = await wait_until(lambda: server.accounting.created >= base + n, 0.45)
        assert got, f"only {server.accounting.created - base} of {n} turns got a slot"
    finally:
        await asyncio.wait_for(asyncio.gather(*turns, return_exceptions=True), 2.0)


# ------------------------------------------------------------------------------- a: stalled error body


@pytest.mark.timeout(HANG)
async def test_a_stalled_error_body_gives_back_its_pooled_connection(transport: str) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        first = connections == 1
        while True:
            await read_request(reader)
            if first:  # an error status whose body never completes
                writer.write(b"HTTP/1.1 500 Oops\r\nContent-Length: 100\r\n\r\npartial")
                await writer.drain()
                await asyncio.sleep(30)
            writer.write(b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy")
            await writer.drain()

    async with raw_server(handler) as url:
        client = H2oClient(url, transport=transport, max_connections=1, retries=Retries(attempts=1),  # type: ignore[arg-type]
                           timeouts=Timeouts(settings=0.3, connect=0.5, cleanup=0.5))
        try:
            with pytest.raises(H2oTimeoutError):
                await client.ask("hi")  # the 500's body stalls past the step's bound
            for _ in range(2):  # the only pooled connection was given back: the next requests get through
                with pytest.raises(H2oStatusError) as info:
                    await client.ask("hi")
                assert info.value.status == 503
            assert connections == 2
        finally:
            await client.aclose()


# ------------------------------------------------------------------------------- b: concurrency slots


@pytest.mark.timeout(HANG)
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_b_slot_given_back_when_conversation_ends_while_its_turn_waits(dialect: str, transport: str) -> None:
    with emulator(ServerConfig(token_delay=0.05, max_tokens=4), dialect=dialect) as server:  # type: ignore[arg-type]
        async with client_for(server, transport, max_concurrency=1) as client:
            busy = asyncio.create_task(client.ask("hold the only slot"))
            await wait_until(lambda: server.accounting.created == 1, 1.0)
            conv = client.conversation()
            turn = asyncio.create_task(conv.ask("waits for the slot"))
            await asyncio.sleep(0.01)
            await conv.aclose()  # closed while its turn still waits for the slot
            assert await busy
            with pytest.raises(H2oStateError):
                await turn
            assert client.live_conversations == 0
            await assert_slots_free(client, server, 1)


@pytest.mark.timeout(HANG)
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_b2_open_and_ask_at_once_lose_no_slot(dialect: str, transport: str) -> None:
    with emulator(ServerConfig(token_delay=0.05, max_tokens=6), dialect=dialect) as server:  # type: ignore[arg-type]
        # the holders' sends stall 2 s: a loaded machine cannot end them before the race below is over
        server.faults.add(Fault("send", "stall", seconds=2.0, count=2))
        async with client_for(server, transport, max_concurrency=2) as client:
            hold = [asyncio.create_task(client.ask(f"hold {i}")) for i in range(2)]
            await wait_until(lambda: server.accounting.created == 2, 1.0)
            conv = client.conversation()
            opened = asyncio.create_task(conv.open())
            asked = asyncio.create_task(conv.ask("hi"))
            # the ask is refused at once (open() runs a turn): it never queues for a second slot (a queued
            # one would wait the holders' ~2 s; the bound is only what a loaded machine needs to run it)
            await asyncio.wait({asked}, timeout=1.0)
            assert not any(t.done() for t in hold), "the slots were free already: the race did not happen"
            assert asked.done() and isinstance(asked.exception(), H2oStateError)
            await asyncio.gather(*hold)
            await opened
            await conv.aclose()
            assert await wait_until(lambda: client.live_conversations == 0, 2.0)  # the holds' DELETEs follow answers
            await assert_slots_free(client, server, 2)


# ------------------------------------------------------------------------------- c: secrets in errors


@pytest.mark.timeout(HANG)
@pytest.mark.parametrize("where", ["send", "create"])
async def test_c_server_page_echoing_the_cookie_never_reaches_the_error(where: str, transport: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line, headers = await read_request(reader)
            cookie = headers.get("cookie", "")
            if line.startswith("POST /settings"):
                writer.write(b"HTTP/1.1 303 See Other\r\nLocation: /\r\nContent-Length: 0\r\n\r\n")
            elif line.startswith("POST /conversation ") and where == "create":
                page = f"<html>debug: Cookie={cookie}</html>".encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(page), page))
            elif line.startswith("POST /conversation "):
                writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 23\r\n\r\n'
                             b'{"conversationId":"c1"}')
            elif line.startswith("POST /conversation/"):
                page = f"<html>Request blocked. Cookie: {cookie}</html>".encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(page), page))
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    async with raw_server(handler) as url, H2oClient(
        url, transport=transport, cookies={"token": SECRET}, retries=FAST_RETRIES, timeouts=FAST_TIMEOUTS  # type: ignore[arg-type]
    ) as client:
        with pytest.raises(H2oError) as info:
            await client.ask("hi")
    text = f"{info.value} {info.value!r} {info.value.message}"
    assert "Cookie" in text  # the page's snippet is shown ...
    assert SECRET not in text  # ... without the cookie's value


@pytest.mark.parametrize(
    "kw",
    [
        {"base_url": "https://alice:hunter2@chat.example/?x=1"},
        {"base_url": "ftp://alice:hunter2@chat.example"},
        {"base_url": "http://127.0.0.1:1", "proxy": "socks4://alice:hun/ter2@proxy:1080", "transport": "httpx"},
    ],
    ids=["query", "scheme", "proxy"],
)
def test_c2_refused_url_never_echoes_its_password(kw: dict[str, str]) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        H2oClient(**kw)  # type: ignore[arg-type]
    assert "hunter2" not in str(info.value) and "ter2" not in str(info.value)


# ------------------------------------------------------------------------------- h: the ending's budget


@pytest.mark.timeout(HANG)
async def test_h_stalled_stop_generating_leaves_the_delete_its_time(transport: str) -> None:
    faults = [Fault("stop", "stall", seconds=3.0, count=-1)]
    with emulator(ServerConfig(max_tokens=50, token_delay=0.05), dialect="chat-ui", faults=faults) as server:
        # stop's own bound (Timeouts.delete) is longer than the whole ending's budget (Timeouts.cleanup):
        # an ending that sat out the stop's bound would take >= 2.5 s, the budget is 0.8 s
        client = client_for(server, transport, timeouts=Timeouts(delete=2.5, cleanup=0.8))
        with pytest.raises(TimeoutError):
            async with caller_timeout(0.3):
                await client.ask("hi")  # left mid-answer: stop-generating (stalls), then DELETE
        t0 = time.monotonic()
        await client.aclose()
        took = time.monotonic() - t0
        assert took < 0.8 + 1.0
        assert len(server.accounting.requests_for("DELETE")) == 1
        assert server.accounting.live == 0
        assert client.undeleted_conversations == 0


# ------------------------------------------------------------------------------- i, j, l2: aclose()


@pytest.mark.timeout(HANG)
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_i_aclose_giving_up_on_create_raises_state_error_not_cancelled(dialect: str, transport: str) -> None:
    faults = [Fault("create", "stall", seconds=1.2, count=-1)]
    with emulator(ServerConfig(max_tokens=4), dialect=dialect, faults=faults) as server:  # type: ignore[arg-type]
        client = client_for(server, transport, timeouts=Timeouts(create=10, delete=2, cleanup=0.4))
        turn = asyncio.create_task(client.conversation().ask("hi"))
        assert await wait_until(lambda: bool(server.faults.fired), 1.0)  # the create is stalled now
        await client.aclose()  # gives up on the stalled create at its deadline
        try:
            await asyncio.wait_for(asyncio.shield(turn), 1.0)
        except asyncio.CancelledError:
            pytest.fail("the caller got a CancelledError nobody asked for")
        except H2oStateError:
            pass
        else:
            pytest.fail("the turn returned although its create never finished")
        assert not turn.cancelled()
        assert client.live_conversations == 0
        assert not await no_task_left(0.5)


@pytest.mark.timeout(HANG)
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_j_aclose_ends_a_turn_inside_a_stalled_step(dialect: str, transport: str) -> None:
    with emulator(ServerConfig(max_tokens=4), dialect=dialect,  # type: ignore[arg-type]
                     faults=[Fault("send", "stall", seconds=3.0)]) as server:
        client = client_for(server, transport, timeouts=Timeouts(send=20, cleanup=2.0))
        conv = client.conversation()
        turn = asyncio.create_task(conv.ask("hi"))
        assert await wait_until(lambda: bool(server.faults.fired), 1.0)  # the send is stalled now
        t0 = time.monotonic()
        await client.aclose()
        assert time.monotonic() - t0 < 1.0  # it did not sit out Timeouts.cleanup (2 s)
        assert turn.done(), "aclose() returned while the turn was still inside its step"
        with pytest.raises(H2oStateError):
            await turn
        assert len(server.accounting.requests_for("DELETE")) == 1  # sent once, before aclose() returned
        assert server.accounting.live == 0
        assert client.undeleted_conversations == 0


class _Boom(Exception):
    pass


class _RaisingLog:
    """A log sink that raises on every call (a host's broken handler)."""

    def bind(self, **kw: object) -> _RaisingLog:
        return self

    def debug(self, *a: object, **kw: object) -> None:
        raise _Boom("sink")

    info = warning = error = debug


@pytest.mark.timeout(HANG)
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_l2_raising_log_sink_never_stops_aclose(dialect: str, transport: str) -> None:
    # a create the client owns is never cut: at the deadline it is still live, and the warning is logged
    faults = [Fault("create", "stall", seconds=1.0)]
    with emulator(ServerConfig(max_tokens=4), dialect=dialect, faults=faults) as server:  # type: ignore[arg-type]
        client = client_for(server, transport, logger=_RaisingLog(), timeouts=Timeouts(cleanup=0.3))
        turn = asyncio.create_task(client.ask("x"))
        assert await wait_until(lambda: bool(server.faults.fired), 1.0)  # the create is stalled now
        await client.aclose()  # must not raise the sink's error
        with pytest.raises(H2oError):
            await asyncio.wait_for(turn, 1.0)
        with pytest.raises(H2oStateError):
            await client.ask("after close")
        assert not await no_task_left(0.5)


# ------------------------------------------------------------------------------- m: undeleted count


@pytest.mark.timeout(HANG)
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_m_create_refused_after_the_deadline_is_not_counted_undeleted(dialect: str, transport: str) -> None:
    with emulator(ServerConfig(max_tokens=2), dialect=dialect) as server:  # type: ignore[arg-type]
        async with client_for(server, transport, max_concurrency=1, timeouts=Timeouts(total=0.3)) as client:
            await client.ask("warm the session")
            assert await wait_until(lambda: client.live_conversations == 0, 2.0)  # its DELETE follows the answer
            server.faults.add(Fault("delete", "stall", seconds=0.7))  # the slot is given back after the DELETE
            holder = asyncio.create_task(client.ask("holds the slot past 0.3 s"))
            assert await wait_until(lambda: bool(server.faults.fired), 1.0)  # its DELETE is stalled now
            with pytest.raises(H2oTimeoutError):
                await client.ask("waits past its deadline")
            assert await holder
        assert server.accounting.created == 2  # the waiter's create was never sent
        assert server.accounting.live == 0
        assert client.undeleted_conversations == 0
