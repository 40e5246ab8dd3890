"""The fast transport's direct path (``FastTransport.send``, what the requester uses for a JSON or empty
body): the same request on the wire as ``handle_async_request`` with the ``httpx.Request`` the requester
would have built, and the ``httpx.Request`` of the response and of an error still there when read."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from support import assert_clean

from h2o_fsm import H2oClient
from h2o_fsm._transport import FastTransport, fast_transport
from h2o_fsm.server import LocalServer

pytestmark = pytest.mark.timeout(30)

HEADERS = {"Referer": "http://x/", "Origin": "http://x", "User-Agent": "h2o-fsm/test", "Accept": "application/json",
           "Cookie": "hf-chat=abc", "Content-Type": "application/json", "X-Multi": "a"}
EXT = {"timeout": {"connect": 2.0, "read": None, "write": 2.0, "pool": None}}


class HeadServer:
    """Records each request's head and body (Content-Length), answers 200 with a small body."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> HeadServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                self.seen.append((head, body))
                writer.write(b"HTTP/1.1 201 Made\r\nX-Answer: yes\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def lines(head: bytes) -> tuple[bytes, list[bytes]]:
    first, *rest = head.rstrip(b"\r\n").split(b"\r\n")
    return first, sorted(line.lower() for line in rest)


@pytest.mark.parametrize(("method", "content"), [("POST", b'{"inputs":"Hi"}'), ("POST", None), ("DELETE", None),
                                                 ("GET", None)])
async def test_the_same_request_on_the_wire_as_through_an_httpx_request(method: str, content: bytes | None) -> None:
    transport = fast_transport()
    assert isinstance(transport, FastTransport)
    async with HeadServer() as srv:
        url = f"http://127.0.0.1:{srv.port}/conversation/abc?x=1"
        via_request = await transport.handle_async_request(
            httpx.Request(method, url, content=content, headers=HEADERS, extensions=EXT))
        await via_request.aread()
        direct = await transport.send(method, url, dict(HEADERS), content, EXT)
        assert await direct.aread() == b"ok"
        await transport.aclose()
    (head1, body1), (head2, body2) = srv.seen
    assert lines(head1) == lines(head2)
    assert body1 == body2 == (content or b"")
    assert direct.status_code == 201 and direct.reason_phrase == "Made" and direct.headers["x-answer"] == "yes"
    assert direct.request.method == method and str(direct.request.url) == url  # built when read
    assert direct.request.headers["cookie"] == "hf-chat=abc" and direct.request.content == (content or b"")


async def test_an_error_on_the_direct_path_carries_its_request_and_no_original() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = fast_transport()
    assert isinstance(transport, FastTransport)
    with pytest.raises(httpx.ConnectError) as info:
        await transport.send("POST", f"http://127.0.0.1:{port}/conversation", dict(HEADERS), b"{}", EXT)
    await transport.aclose()
    exc = info.value
    assert str(exc) == "connection refused (ClientConnectorError)"
    assert exc.request.method == "POST" and exc.request.url.port == port
    assert exc.__cause__ is not None and exc.__cause__.__cause__ is None and exc.__context__ is None


async def test_a_response_request_set_by_hand_wins_over_the_lazy_one() -> None:
    transport = fast_transport()
    assert isinstance(transport, FastTransport)
    async with HeadServer() as srv:
        response = await transport.send("GET", f"http://127.0.0.1:{srv.port}/", {}, None, EXT)
        mine = httpx.Request("GET", "http://elsewhere/")
        response.request = mine
        assert response.request is mine
        await response.aclose()
        await transport.aclose()


async def test_a_client_sends_json_and_empty_bodies_on_the_direct_path(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    through: list[str] = []
    original = FastTransport.handle_async_request

    async def counted(self: FastTransport, request: httpx.Request) -> httpx.Response:
        through.append(f"{request.method} {request.url.path}")
        return await original(self, request)

    monkeypatch.setattr(FastTransport, "handle_async_request", counted)
    async with H2oClient(server.url) as client:
        assert await client.ask("Hello")
        assert await client.ask("Hello again")
    assert server.accounting.created == 2
    assert_clean(server)
    assert through == ["POST /settings"]  # a form (once a session): the only request built as an httpx.Request


BASES = ["http://127.0.0.1:8000", "https://Example.COM", "http://example.com:80", "https://h.example/chat",
         "http://h/a/../b", "http://h/a/..", "https://bücher.example/x y", "http://[::1]:9", "http://h/%7Euser",
         "http://h/a%2fb"]
PATHS = ["/settings", "/conversation", "/conversation/abc123", "/conversation/6a1f%2F..%2Fx", "/conversation/a-b_c~d",
         "/conversation/abc/stop-generating", "/conversation/%E2%9C%93", "/api/v2/conversations/xyz",
         "/conversation/..", "/conversation/a.b", "/conversation/abc?x=1&y=%20", "/conversation//x", "/a%2f", ""]


@pytest.mark.parametrize("base", BASES)
def test_the_direct_path_sends_the_url_httpx_would(base: str) -> None:
    from h2o_fsm import Retries, Timeouts
    from h2o_fsm._config import Limits
    from h2o_fsm._requester import Requester

    requester = Requester(httpx.AsyncClient(), base, timeouts=Timeouts(), retries=Retries(), limits=Limits())
    if base == BASES[0]:
        assert requester.prefix == base  # the common case takes the short way
    for path in PATHS:
        assert requester.url_text(path) == str(httpx.URL(base + path)), (base, path)


@pytest.mark.timeout(20)
async def test_an_idle_connection_is_reused_for_less_than_a_servers_five_seconds() -> None:
    """uvicorn closes a connection idle for 5 s: reusing one near that instant lost requests to "server
    disconnected" (KEEPALIVE's comment). Kept alive, but not that long."""
    from h2o_fsm._transport import KEEPALIVE

    transport = fast_transport()
    assert isinstance(transport, FastTransport)
    async with HeadServer() as srv:
        url = f"http://127.0.0.1:{srv.port}/"
        for idle in (0.3, KEEPALIVE + 0.3):
            response = await transport.send("GET", url, {}, None, EXT)
            await response.aread()
            await asyncio.sleep(idle)
        response = await transport.send("GET", url, {}, None, EXT)
        await response.aread()
        await transport.aclose()
    assert KEEPALIVE < 5.0
    assert len(srv.seen) == 3
    assert srv.connections == 2  # reused after 0.3 s, a new one after KEEPALIVE + 0.3 s


def test_a_mapped_error_is_raised_without_the_exception_being_handled_as_its_context() -> None:
    """On Python 3.10 a task resumed with the lower error (asyncio's ``__wakeup``) still counts it as being
    handled where the transport raises its mapped error, which then carried the original aiohttp error as
    ``__context__`` (with a secret in its repr, possibly). ``raise_clean`` leaves no context, on any Python."""
    from h2o_fsm._failures import raise_clean

    mapped = httpx.ConnectError("connection refused (ClientConnectorError)")
    try:
        raise ValueError("hf-chat=s3cr3t")  # what the lower layer raised, still being handled
    except ValueError:
        with pytest.raises(httpx.ConnectError) as info:
            raise_clean(mapped)
    assert info.value is mapped and info.value.__context__ is None and info.value.__cause__ is None
