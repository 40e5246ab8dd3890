"""The fast transport's token gap on a body (``GAP_EXTENSION``): one timer a body, re-armed lazily, still
bounding every wait between two reads - progress keeps the body alive however long it runs, a stall
longer than the gap ends it as a read timeout. A real server on loopback (an ephemeral port)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from h2o_fsm import fast_transport
from h2o_fsm._transport import GAP_EXTENSION

GAP = 0.3


@asynccontextmanager
async def chunked_server(pauses: list[float]) -> AsyncIterator[str]:
    """Answers any request with a chunked body: one chunk after each pause in ``pauses``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
            await writer.drain()
            for i, pause in enumerate(pauses):
                await asyncio.sleep(pause)
                data = f"chunk{i}\n".encode()
                writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.close()
        await server.wait_closed()


async def read_all(url: str) -> bytes:
    transport = fast_transport()
    try:
        request = httpx.Request("GET", url, extensions={"timeout": {"connect": 5.0}, GAP_EXTENSION: GAP})
        response = await transport.handle_async_request(request)
        try:
            return b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()
    finally:
        await transport.aclose()


async def test_progress_keeps_a_body_alive_longer_than_the_gap() -> None:
    # 10 chunks 0.1 s apart: the body lasts over three gaps, no wait between two reads reaches one
    async with chunked_server([0.1] * 10) as url:
        body = await asyncio.wait_for(read_all(url), 10)
    assert body == b"".join(f"chunk{i}\n".encode() for i in range(10))


async def test_a_stall_longer_than_the_gap_is_a_read_timeout() -> None:
    # progress first (the timer is re-armed after firing early), then a stall of 2 s: a gap of 0.3 s ends it
    async with chunked_server([0.1, 0.1, 0.1, 0.1, 2.0, 0.0]) as url:
        with pytest.raises(httpx.ReadTimeout) as info:
            await asyncio.wait_for(read_all(url), 10)
    assert "chunk" not in str(info.value)  # fixed words, like every mapped error
