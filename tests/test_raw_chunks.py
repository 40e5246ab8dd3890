"""``_transport.raw_chunks`` (our transport's bodies iterated without ``aiter_raw``): every body
read through it gives its aiohttp connection back (or closes it), whichever way it ends, and errors
stay mapped; the other transports still go through httpx. Hostile server on loopback."""

from __future__ import annotations

import asyncio
import ssl

import httpx
import pytest
from hostile_server import HostileServer, Reply, Request, stream_body
from support import FAST_RETRIES, FAST_TIMEOUTS

from h2o_fsm import H2oClient, H2oLimitError, H2oStatusError, H2oTimeoutError, Limits, Phase, Retries, Timeouts
from h2o_fsm._transport import FastTransport, _Body, raw_chunks

NO_RETRIES = Retries(attempts=1)


def _acquired(client: H2oClient) -> int:
    # aiohttp has no public count of the connections in use: the connector's set, read by tests only
    fast = client._rt.requester.fast
    assert isinstance(fast, FastTransport) and fast._session is not None
    return len(fast._session.connector._acquired)  # type: ignore[union-attr]


async def _settled(client: H2oClient) -> None:
    while client._rt.tasks:
        await asyncio.wait(set(client._rt.tasks))


async def test_every_way_a_body_ends_gives_the_connection_back() -> None:
    with HostileServer() as server:
        big_error = b"x" * 200_000
        calls = {"n": 0}

        def create(request: Request) -> Reply:
            calls["n"] += 1
            if calls["n"] == 1:  # an error page far over max_error_body_bytes: read_up_to stops early
                return Reply(500, [("Content-Type", "text/plain")], big_error)
            if calls["n"] == 2:  # a create answer over max_json_body_bytes: read_body's limit
                return Reply(200, [("Content-Type", "application/json")], b'{"conversationId": "' + b"a" * 5000)
            return server.default(request)

        sends = {"n": 0}

        def send(request: Request) -> Reply:
            sends["n"] += 1
            reply = server.default(request)
            if sends["n"] == 1:  # the tail cut by the server: the tail's error
                body = stream_body() + b": keep-alive\n\n" * 4
                return Reply(reply.status, reply.headers, body, close_after=len(stream_body()) + 3)
            return reply

        server.on["create"] = create
        server.on["send"] = send
        limits = Limits(max_json_body_bytes=1024)
        async with H2oClient(server.url, transport="aiohttp", timeouts=FAST_TIMEOUTS, retries=NO_RETRIES,
                             limits=limits) as client:
            with pytest.raises(H2oStatusError):
                await client.ask("Hi")
            await _settled(client)
            assert _acquired(client) == 0
            with pytest.raises(H2oLimitError):
                await client.ask("Hi")
            await _settled(client)
            assert _acquired(client) == 0
            assert await client.ask("Hi") == "Hello world"  # its tail is cut
            await _settled(client)
            assert _acquired(client) == 0 and client.tail_errors == 1
            for _ in range(3):
                assert await client.ask("Hi") == "Hello world"
                await _settled(client)
                assert _acquired(client) == 0
            assert "".join([c async for c in client.stream("Hi")]) == "Hello world"
            await _settled(client)
            assert _acquired(client) == 0
        assert client.undeleted_conversations == 0


async def test_a_body_through_a_handed_in_client_or_httpx_s_transport_is_httpx_s() -> None:
    """Only our transport's own body is iterated directly; httpx's client wraps it (BoundAsyncStream)."""
    with HostileServer() as server:
        async with httpx.AsyncClient(transport=FastTransport(ssl.create_default_context())) as http:
            response = await http.send(http.build_request("POST", server.url + "/conversation"), stream=True)
            assert type(response.stream) is not _Body
            body = raw_chunks(response)
            data = b"".join([c async for c in body])
            assert data and response.is_stream_consumed  # httpx's own iteration: its flags as before
            await response.aclose()


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_a_stalled_answer_is_a_mapped_timeout_and_the_pool_is_free(transport: str) -> None:
    with HostileServer(max_answer_seconds=10.0) as server:
        def send(request: Request) -> Reply:
            reply = server.default(request)
            return Reply(reply.status, reply.headers, stream_body(), stall="after_head")

        server.on["send"] = send
        timeouts = Timeouts(connect=2.0, create=5.0, send=5.0, token=0.5, delete=2.0, cleanup=2.0)
        async with H2oClient(server.url, transport=transport, timeouts=timeouts,  # type: ignore[arg-type]
                             retries=FAST_RETRIES) as client:
            with pytest.raises(H2oTimeoutError) as info:
                await client.ask("Hi")
            assert info.value.phase is Phase.STREAM
            await _settled(client)
            if transport == "aiohttp":
                assert _acquired(client) == 0
        assert client.undeleted_conversations == 0 and sorted(server.deletes().values()) == [1]


async def test_a_body_read_directly_keeps_httpx_s_guard_against_a_second_read() -> None:
    """Our transport's body read through ``raw_chunks`` is marked consumed as ``aiter_raw`` marks it: a
    second read is httpx's ``StreamConsumed``, never a read of the released connection."""
    with HostileServer() as server:
        transport = FastTransport(ssl.create_default_context())
        try:
            response = await transport.send("POST", server.url + "/conversation", {}, None, {})
            assert type(response.stream) is _Body
            assert b"".join([c async for c in raw_chunks(response)])
            assert response.is_stream_consumed
            with pytest.raises(httpx.StreamConsumed):
                await response.aread()
            await response.aclose()
        finally:
            await transport.aclose()
