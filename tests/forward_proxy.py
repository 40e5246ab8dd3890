"""A small real HTTP forward proxy on 127.0.0.1 (ephemeral port) for the proxy tests: it takes requests
in absolute form (``GET http://host:port/path HTTP/1.1``), counts and records them, checks
``Proxy-Authorization`` when it is given credentials (407 otherwise), and relays each request to its
target with ``Connection: close`` (the answer it relays says so too, so a client never reuses a
connection the proxy is about to close). No CONNECT: the tests speak plain http:// through it.

It runs in its own event loop in a background thread (as the emulator does), so it is independent of
the loop under test; the context manager stops it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from urllib.parse import urlsplit

__all__ = ["ForwardProxy"]


class ForwardProxy:
    def __init__(self, *, user: str | None = None, password: str | None = None) -> None:
        self.expected = None if user is None else "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.requests: list[tuple[str, str]] = []  # (method, absolute target)
        self.auth_seen: list[str | None] = []
        self.refused = 0  # answered 407
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()  # one per connection being served
        self._closing = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _stop(self) -> None:
        """End every connection before the loop closes: a handler left pending would be closed by the
        garbage collector mid-relay, and its ``finally`` (which awaits) then says "coroutine ignored
        GeneratorExit". A connection accepted just before the close starts its handler a moment later
        (``connection_made`` is a callback already queued), so this repeats until no task is left."""
        assert self._server is not None
        self._closing = True
        self._server.close()
        me = asyncio.current_task()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 8.0
        while loop.time() < deadline:
            await asyncio.sleep(0)  # the callbacks queued before this one run first: late handlers start
            others = [t for t in asyncio.all_tasks() if t is not me]
            if not others:
                break
            for task in others:
                if task in self._handlers:  # ours; anything else (an accept in progress) ends by itself
                    task.cancel()
            await asyncio.wait(others, timeout=0.5)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while not self._closing and await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:  # only _stop cancels a handler: it ends as a plain return, as asyncio's
            pass  # streams (3.11) log a handler task that ends cancelled as an error in a callback
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:] if ":" in line]
        length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
        body = await reader.readexactly(length) if length else b""
        auth = next((v for k, v in headers if k.lower() == "proxy-authorization"), None)
        self.requests.append((method, target))
        self.auth_seen.append(auth)
        if self.expected is not None and auth != self.expected:
            self.refused += 1
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"t\"\r\n"
                         b"Content-Length: 0\r\n\r\n")
            await writer.drain()
            return True
        parts = urlsplit(target)
        if parts.scheme != "http" or parts.hostname != "127.0.0.1":  # loopback only
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return False
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        kept = [(k, v) for k, v in headers if k.lower() not in ("proxy-authorization", "connection", "keep-alive",
                                                                 "proxy-connection")]
        out = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in kept) + "Connection: close\r\n\r\n"
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", parts.port or 80)
        try:
            up_writer.write(out.encode("latin-1") + body)
            await up_writer.drain()
            answer = await up_reader.readuntil(b"\r\n\r\n")
            alines = answer.decode("latin-1").split("\r\n")
            alines = [line for line in alines[:-2] if not line.lower().startswith(("connection:", "keep-alive:"))]
            writer.write(("\r\n".join(alines) + "\r\nConnection: close\r\n\r\n").encode("latin-1"))
            while chunk := await up_reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()
        return False  # Connection: close
