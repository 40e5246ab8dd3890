"""The transport seam against hostile loopback servers: every aiohttp failure leaves as a scrubbed httpx error."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import httpx
import pytest
from httpx_aiohttp import AiohttpTransport

from h2o_fsm._failures import LowerLayerError
from h2o_fsm._session import Session
from h2o_fsm._transport import (
    FastTransport,
    fast_available,
    fast_transport,
    is_timeout,
    map_lower_error,
    no_cookie_jar,
    not_sent,
    transport_error_text,
)

pytestmark = pytest.mark.timeout(30)

SECRET = "s3cr3t-9f8e7d"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "RawServer"], Awaitable[None]]


class RawServer:
    """A raw asyncio HTTP/1.1 'server' on 127.0.0.1 (ephemeral port) that answers with a script.

    Stalling handlers wait for ``release``, set on exit, so nothing is left running."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[bytes] = []
        self.received = asyncio.Event()
        self.release = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._server is not None
        self._server.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.requests.append(head)
                self.received.set()
                await self.handler(reader, writer, self)
                if writer.is_closing():
                    return
        finally:
            writer.close()


def answer(raw: bytes, then: str = "close") -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: RawServer) -> None:
        if raw:
            writer.write(raw)
            await writer.drain()
        if then == "stall":
            await srv.release.wait()
        if then == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if then in ("close", "reset", "stall"):
            writer.close()

    return handler


def ok(headers: bytes = b"", body: bytes = b"ok") -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + headers + b"Content-Length: %d\r\n\r\n" % len(body) + body


@contextlib.asynccontextmanager
async def fast_client(**kw: object) -> AsyncIterator[httpx.AsyncClient]:
    timeout = kw.pop("timeout", httpx.Timeout(2.0))
    async with httpx.AsyncClient(transport=fast_transport(**kw), timeout=timeout) as client:  # type: ignore[arg-type]
        yield client


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def assert_scrubbed(exc: BaseException, *secrets: str) -> None:
    """Not in the error, nor anywhere in its chain, nor in a formatted traceback of it."""
    seen: BaseException | None = exc
    texts = ["".join(traceback.format_exception(exc))]
    for _ in range(10):
        if seen is None:
            break
        texts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    for text in texts:
        for secret in (SECRET, *secrets):
            assert secret not in text


def original_class(exc: BaseException) -> str:
    """The lower-layer class the fast transport classified (it stands in the chain for the original)."""
    assert isinstance(exc.__cause__, LowerLayerError), f"cause: {exc.__cause__!r}"
    return exc.__cause__.original_class


def test_fast_available() -> None:
    assert fast_available() is True
    assert isinstance(fast_transport(), FastTransport)


# --- failures while the request is sent or its head awaited ------------------------------------


async def test_refused_is_connect_error_and_not_sent() -> None:
    async with fast_client() as client:
        with pytest.raises(httpx.ConnectError) as info:
            await client.get(refused_url())
    exc = info.value
    assert str(exc) == "connection refused (ClientConnectorError)"
    assert original_class(exc).endswith(".ClientConnectorError")
    assert not_sent(exc) and not is_timeout(exc)
    assert exc.request.method == "GET"


async def test_refused_on_httpx_own_transport_is_not_sent_too() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError) as info:
            await client.get(refused_url())
    assert not_sent(info.value) and not is_timeout(info.value)


async def test_name_resolution_failure_is_connect_error() -> None:
    async with fast_client() as client:
        try:
            await asyncio.wait_for(client.get("http://does-not-exist.invalid/"), 5)
        except asyncio.TimeoutError:
            pytest.skip("the resolver here does not answer quickly")
        except httpx.ConnectError as exc:
            assert str(exc) == "name resolution failed (ClientConnectorDNSError)"
            assert not_sent(exc)
        else:
            pytest.fail("resolved a .invalid name")


@pytest.mark.parametrize(
    ("script", "expected", "text"),
    [
        (answer(b""), httpx.RemoteProtocolError, "server disconnected without a complete answer"),
        (answer(b"", "reset"), httpx.ReadError, "connection lost"),
        (
            answer(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(600)) + b"\r\n"),
            httpx.RemoteProtocolError,
            "malformed response",
        ),
        (
            answer(f"XTTP/1.1 200 OK {SECRET}\r\nSet-Cookie: hf-chat={SECRET}\r\n\r\n".encode()),
            httpx.RemoteProtocolError,
            "malformed response (ClientResponseError: BadStatusLine)",
        ),
        (
            answer(f"HTTP/1.1 200 OK\r\nSet-Cookie hf-chat={SECRET}\r\nContent-Length: 0\r\n\r\n".encode()),
            httpx.RemoteProtocolError,
            "malformed response",
        ),
    ],
    ids=["disconnect", "reset", "too-many-headers", "bad-status-line", "bad-header-line"],
)
async def test_failures_before_the_answer_are_mapped_and_scrubbed(
    script: Handler, expected: type[httpx.TransportError], text: str
) -> None:
    async with RawServer(script) as srv, fast_client() as client:
        with pytest.raises(httpx.TransportError) as info:
            await client.post(srv.url, content=b"{}", headers={"Cookie": f"hf-chat={SECRET}"})
    exc = info.value
    assert type(exc) is expected
    assert str(exc).startswith(text)
    assert_scrubbed(exc, "Too many", "X-H1", "Set-Cookie", "127.0.0.1")
    assert original_class(exc).startswith("aiohttp")
    assert not not_sent(exc), "the request was sent: a retry of create/send would duplicate it"
    assert not is_timeout(exc)


async def test_stalled_head_is_read_timeout_on_both_transports() -> None:
    async with RawServer(answer(b"", "stall")) as srv:
        for transport in (fast_transport(), httpx.AsyncHTTPTransport()):
            async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(2.0, read=0.2)) as client:
                with pytest.raises(httpx.ReadTimeout) as info:
                    await client.get(srv.url)
            assert is_timeout(info.value) and not not_sent(info.value)
    assert str(info.value) == "" or SECRET not in str(info.value)


async def test_no_pool_slot_in_time_is_connect_timeout_and_not_sent() -> None:
    async with RawServer(answer(b"", "stall")) as srv, fast_client(max_connections=1) as client:
        holder = asyncio.create_task(client.get(srv.url, timeout=10))
        await asyncio.wait_for(srv.received.wait(), 5)
        with pytest.raises(httpx.ConnectTimeout) as info:
            await client.get(srv.url, timeout=httpx.Timeout(10, pool=0.2))
        assert str(info.value) == "connect timed out (ConnectionTimeoutError)"
        assert not_sent(info.value) and is_timeout(info.value)
        assert len(srv.requests) == 1
        srv.release.set()
        with pytest.raises(httpx.TransportError):
            await holder


# --- failures while the body is read or closed ---------------------------------------------------


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello"), httpx.RemoteProtocolError),
        (answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello", "reset"), httpx.RemoteProtocolError),
        (answer(f"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{SECRET}\r\n".encode()), None),
    ],
    ids=["truncated", "reset-mid-body", "bad-chunk"],
)
async def test_failures_in_the_body_are_mapped(script: Handler, expected: type[Exception] | None) -> None:
    async with RawServer(script) as srv, fast_client() as client:
        with pytest.raises(httpx.TransportError) as info:
            async with client.stream("GET", srv.url) as response:
                assert response.status_code == 200 or expected is None
                async for _ in response.aiter_raw():
                    pass
    exc = info.value
    if expected is not None:
        assert type(exc) is expected
        assert str(exc).startswith("response body incomplete or malformed (ClientPayloadError")
    else:  # aiohttp reads the first chunk header while parsing the head
        assert isinstance(exc, httpx.RemoteProtocolError)
    assert_scrubbed(exc, "Not enough data")
    assert not not_sent(exc)


async def test_stalled_body_is_read_timeout() -> None:
    async with (
        RawServer(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello", "stall")) as srv,
        fast_client(timeout=httpx.Timeout(2.0, read=0.2)) as client,
        client.stream("GET", srv.url) as response,
    ):
        chunks = response.aiter_raw()
        assert await chunks.__anext__() == b"hello"
        with pytest.raises(httpx.ReadTimeout) as info:
            await chunks.__anext__()
    assert str(info.value) == "read timed out (SocketTimeoutError)"
    assert is_timeout(info.value)


# --- cancellation is never mapped --------------------------------------------------------------


async def test_cancellation_while_waiting_for_the_head_propagates() -> None:
    async with RawServer(answer(b"", "stall")) as srv, fast_client() as client:
        task = asyncio.create_task(client.get(srv.url, timeout=10))
        await asyncio.wait_for(srv.received.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_cancellation_while_reading_the_body_propagates() -> None:
    script = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello", "stall")
    async with RawServer(script) as srv, fast_client() as client:
        got_first = asyncio.Event()

        async def read() -> None:
            async with client.stream("GET", srv.url, timeout=10) as response:
                async for _ in response.aiter_raw():
                    got_first.set()

        task = asyncio.create_task(read())
        await asyncio.wait_for(got_first.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# --- the map itself, for failures a loopback server cannot provoke ----------------------------


def _request_info() -> aiohttp.RequestInfo:
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL

    url = URL(f"http://127.0.0.1/?token={SECRET}")
    return aiohttp.RequestInfo(url, "GET", CIMultiDictProxy(CIMultiDict()), url)


@pytest.mark.parametrize(
    ("original", "expected", "text"),
    [
        (aiohttp.ConnectionTimeoutError(f"Connection timeout to {SECRET}"), httpx.ConnectTimeout, "connect timed out"),
        (aiohttp.SocketTimeoutError(SECRET), httpx.ReadTimeout, "read timed out"),
        (aiohttp.ServerTimeoutError(SECRET), httpx.ReadTimeout, "read timed out"),
        (aiohttp.ServerFingerprintMismatch(b"a", b"b", SECRET, 443), httpx.ConnectError, "TLS fingerprint mismatch"),
        (
            aiohttp.ClientHttpProxyError(_request_info(), (), status=407, message=f"Proxy-Authorization: {SECRET}"),
            httpx.ProxyError,
            "proxy refused the request",
        ),
        (aiohttp.NonHttpUrlClientError(f"ftp://{SECRET}"), httpx.UnsupportedProtocol, "URL scheme not supported"),
        (aiohttp.InvalidUrlClientError(f"http://{SECRET}"), httpx.LocalProtocolError, "invalid URL"),
        (aiohttp.ClientConnectionResetError(SECRET), httpx.ReadError, "connection lost"),
        (aiohttp.ClientError(SECRET), httpx.TransportError, "transport failure"),
        (ConnectionResetError(104, SECRET), httpx.ReadError, "network error"),
        (TimeoutError(SECRET), httpx.ReadTimeout, "timed out"),
        (ValueError(SECRET), httpx.TransportError, "unexpected transport failure"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_the_map(original: Exception, expected: type[httpx.TransportError], text: str) -> None:
    request = httpx.Request("GET", "http://127.0.0.1/")
    # raw (httpx-aiohttp lets it escape) and as httpx-aiohttp maps the aiohttp ones
    forms = [original, _as_httpx_aiohttp_would(original)] if isinstance(original, aiohttp.ClientError) else [original]
    for raised in forms:
        mapped = map_lower_error(raised, request)
        assert type(mapped) is expected
        assert str(mapped) == f"{text} ({type(original).__name__})"
        assert original_class(mapped) == f"{type(original).__module__}.{type(original).__qualname__}"
        assert mapped.__cause__ is not None and mapped.__cause__.__cause__ is None
        assert mapped.request is request
        assert_scrubbed(mapped)


def _as_httpx_aiohttp_would(original: Exception) -> Exception:
    """httpx-aiohttp's own mapping: a (possibly wrong) httpx class, the original's text, ``from`` it."""
    try:
        raise httpx.ConnectTimeout(str(original)) from original
    except httpx.ConnectTimeout as exc:
        return exc


def test_the_map_gives_httpx_own_errors_fixed_words_too() -> None:
    mapped = map_lower_error(httpx.ReadError(f"from httpx itself {SECRET}"), None)
    assert type(mapped) is httpx.ReadError and str(mapped) == "connection lost (ReadError)"
    assert_scrubbed(mapped)


async def test_answers_of_an_unwrapped_httpx_aiohttp_transport_are_judged_by_their_cause() -> None:
    """httpx-aiohttp alone calls a refusal and a disconnect ``ConnectTimeout``; the questions still
    get the truth from ``__cause__`` (isinstance, no class names)."""
    async with RawServer(answer(b"")) as srv, httpx.AsyncClient(transport=AiohttpTransport()) as client:
        with pytest.raises(httpx.ConnectTimeout) as refused:
            await client.get(refused_url())
        with pytest.raises(httpx.ConnectTimeout) as dropped:
            await client.get(srv.url)
    assert not_sent(refused.value) and not is_timeout(refused.value)
    assert not not_sent(dropped.value) and not is_timeout(dropped.value)

    class EngineError(Exception):
        pass

    wrapped = EngineError("create failed")
    wrapped.__cause__ = dropped.value
    assert not not_sent(wrapped)
    assert not not_sent(EngineError("no cause")) and not is_timeout(ValueError())


# --- cookies through the transport ------------------------------------------------------------


async def test_non_ascii_set_cookie_is_ignored_and_the_next_request_still_goes_out() -> None:
    headers = b"Set-Cookie: hf-chat=abc123; Path=/; HttpOnly\r\nSet-Cookie: bad=caf\xc3\xa9; Path=/\r\n"

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: RawServer) -> None:
        writer.write(ok(headers))
        await writer.drain()

    for transport in (fast_transport(), httpx.AsyncHTTPTransport()):
        session = Session()
        async with RawServer(script) as srv, httpx.AsyncClient(transport=transport, cookies=no_cookie_jar()) as client:
            first = await client.get(srv.url)
            assert session.update(first) is False
            assert session.cookie_header == "hf-chat=abc123"
            headers_out = {"Cookie": session.cookie_header}
            second = await client.get(srv.url, headers=headers_out)
            assert second.status_code == 200
        assert b"cookie: hf-chat=abc123\r\n" in srv.requests[1].lower()
        assert b"caf" not in srv.requests[1]


async def test_no_cookie_jar_keeps_and_sends_nothing() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: RawServer) -> None:
        writer.write(ok(f"Set-Cookie: hf-chat={SECRET}; Path=/\r\n".encode()))
        await writer.drain()

    jar = no_cookie_jar()
    async with RawServer(script) as srv, httpx.AsyncClient(transport=fast_transport(), cookies=jar) as client:
        assert client.cookies.jar is jar  # the jar itself, not a copy with a default policy
        await client.get(srv.url)
        client.cookies.set("forced", "1", domain="127.0.0.1")
        await client.get(srv.url)
    assert len(jar) == 0
    assert all(b"cookie:" not in head.lower() for head in srv.requests)


async def test_transport_error_text_is_safe_for_both_transports() -> None:
    script = answer(f"XTTP/1.1 200 OK {SECRET}\r\nSet-Cookie: hf-chat={SECRET}\r\n\r\n".encode())
    async with RawServer(script) as srv:
        for transport in (fast_transport(), httpx.AsyncHTTPTransport()):
            async with httpx.AsyncClient(transport=transport) as client:
                with pytest.raises(httpx.TransportError) as info:
                    await client.get(srv.url)
            text = transport_error_text(info.value)
            assert text.startswith("malformed response (")
            assert SECRET not in text
    assert SECRET in str(info.value), "httpx's own transport copies the raw status line into the message"
    assert transport_error_text(httpx.PoolTimeout(SECRET)) == "no connection free in time (PoolTimeout)"
    assert transport_error_text(httpx.TransportError(SECRET)) == "transport failure (TransportError)"


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl binary")
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


async def test_tls_is_verified_by_default_and_a_failed_handshake_is_a_connect_error(
    self_signed: tuple[str, str],
) -> None:
    import ssl

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(*self_signed)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(ok())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    try:
        strict = fast_transport()
        assert isinstance(strict, FastTransport) and strict.ssl_context is not None
        assert strict.ssl_context.verify_mode is ssl.CERT_REQUIRED and strict.ssl_context.check_hostname
        async with httpx.AsyncClient(transport=strict) as client:
            with pytest.raises(httpx.ConnectError) as info:
                await client.get(url)
        assert str(info.value).startswith("TLS handshake failed (")
        assert not_sent(info.value)
        async with httpx.AsyncClient(transport=fast_transport(verify=False)) as client:
            assert (await client.get(url)).text == "ok"
    finally:
        server.close()


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
async def test_h2o_client_verifies_tls_by_default_on_both_transports(self_signed: tuple[str, str], transport: str) -> None:
    import ssl

    from h2o_fsm import H2oClient, H2oTransportError, Phase

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(*self_signed)
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with H2oClient(url, transport=transport) as client:  # type: ignore[arg-type]
            with pytest.raises(H2oTransportError) as info:
                await client.ask("x")
        assert info.value.phase is Phase.SETTINGS and not seen  # refused at the handshake: nothing sent
        async with H2oClient(url, transport=transport, verify=False) as lax:  # type: ignore[arg-type]
            with pytest.raises(Exception):  # noqa: B017 - past TLS now: the server's 500 is what fails
                await lax.ask("x")
        assert seen and seen[0].startswith(b"POST /settings")
    finally:
        server.close()


async def _tls_server(cert: str, key: str, seen: list[bytes]) -> tuple[asyncio.Server, str]:
    import ssl

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    return server, f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
@pytest.mark.parametrize("kind", ["path", "pathlib", "context"])
async def test_verify_takes_a_ca_bundle_path_or_an_ssl_context(
    self_signed: tuple[str, str], transport: str, kind: str
) -> None:
    """Issue 16 item 3: the server's own certificate as the CA - the handshake passes and verifies."""
    import pathlib
    import ssl

    from h2o_fsm import H2oClient, H2oStatusError

    cert, key = self_signed
    verify: object = {"path": cert, "pathlib": pathlib.Path(cert),
                      "context": ssl.create_default_context(cafile=cert)}[kind]
    seen: list[bytes] = []
    server, url = await _tls_server(cert, key, seen)
    try:
        async with H2oClient(url, transport=transport, verify=verify) as client:  # type: ignore[arg-type]
            with pytest.raises(H2oStatusError) as info:  # past TLS, verified: the server's 500 is what fails
                await client.ask("x")
        assert info.value.status == 500 and seen and seen[0].startswith(b"POST /settings")
    finally:
        server.close()


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
async def test_the_shared_default_tls_context_follows_ssl_cert_file(
    self_signed: tuple[str, str], transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify=True's context is made once per setting (loading the CA bundle costs ~28 ms a client), and
    the environment's SSL_CERT_FILE is part of that setting: set, the server's own certificate verifies;
    unset again, the shared default refuses it as before."""
    from h2o_fsm import H2oClient, H2oStatusError, H2oTransportError

    cert, key = self_signed
    seen: list[bytes] = []
    server, url = await _tls_server(cert, key, seen)
    try:
        first = H2oClient(url, transport=transport)  # type: ignore[arg-type]
        second = H2oClient(url, transport=transport)  # type: ignore[arg-type]
        async with first, second:
            with pytest.raises(H2oTransportError):
                await first.ask("x")
            with pytest.raises(H2oTransportError):
                await second.ask("x")
        assert not seen  # refused at the handshake by the default CAs
        monkeypatch.setenv("SSL_CERT_FILE", cert)
        async with H2oClient(url, transport=transport) as trusting:  # type: ignore[arg-type]
            with pytest.raises(H2oStatusError):  # past TLS, verified: the server's 500 is what fails
                await trusting.ask("x")
        assert seen and seen[0].startswith(b"POST /settings")
        monkeypatch.delenv("SSL_CERT_FILE")
        async with H2oClient(url, transport=transport) as again:  # type: ignore[arg-type]
            with pytest.raises(H2oTransportError):
                await again.ask("x")
        assert len(seen) == 1
    finally:
        server.close()


def test_verify_and_headers_are_checked_at_construction(tmp_path: object) -> None:
    from h2o_fsm import H2oClient

    with pytest.raises(TypeError, match="verify"):
        H2oClient("http://127.0.0.1:9", verify=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CA bundle"):
        H2oClient("http://127.0.0.1:9", verify="/nonexistent/ca.pem")
    with pytest.raises(TypeError, match="headers"):
        H2oClient("http://127.0.0.1:9", headers=[("X-A", "1")])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="headers"):
        H2oClient("http://127.0.0.1:9", headers={"X-A": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="cookies=") as cookie:
        H2oClient("http://127.0.0.1:9", headers={"Cookie": f"hf-chat={SECRET}"})
    with pytest.raises(ValueError, match="one line") as split:
        H2oClient("http://127.0.0.1:9", headers={"Authorization": f"Bearer {SECRET}\r\nX-Evil: 1"})
    for refused in (cookie.value, split.value):
        assert SECRET not in str(refused)


@pytest.mark.parametrize("transport", ["httpx", "aiohttp", "auto"])
async def test_headers_and_the_default_user_agent_on_every_transport(transport: str) -> None:
    from h2o_fsm import H2oClient, H2oStatusError, Retries, __version__

    once = Retries(attempts=1)
    script = answer(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n")
    async with RawServer(script) as srv:
        url = srv.url.rstrip("/")
        async with H2oClient(url, transport=transport, headers={"X-Trace": "t-1"}, retries=once) as client:  # type: ignore[arg-type]
            with pytest.raises(H2oStatusError):
                await client.ask("x")
        async with H2oClient(url, transport=transport, headers={"user-agent": "my-service/2", "accept": "*/*"},  # type: ignore[arg-type]
                             retries=once) as client:
            with pytest.raises(H2oStatusError):
                await client.ask("x")
    first, second = (head.decode("latin-1").lower() for head in srv.requests[:2])
    assert f"user-agent: h2o-fsm/{__version__}\r\n".lower() in first and "x-trace: t-1\r\n" in first
    assert "accept: application/json\r\n" in first  # chat-ui's per-request Accept on a non-send step
    assert "user-agent: my-service/2\r\n" in second and "h2o-fsm/" not in second and second.count("user-agent") == 1
    assert "accept: */*\r\n" in second and second.count("accept:") == 1  # the caller's Accept, not a second one


# --- issue 15 item 3: classified once, facts as fields ---------------------------------------------


def test_notes_are_kept_on_every_python() -> None:
    from h2o_fsm._exceptions import add_note

    exc = ValueError("x")
    add_note(exc, "h2o-fsm: first")
    add_note(exc, "h2o-fsm: second")
    assert exc.__notes__ == ["h2o-fsm: first", "h2o-fsm: second"]  # type: ignore[attr-defined]


def test_the_table_is_read_along_the_mro_whatever_its_order() -> None:
    from h2o_fsm._failures import TABLE, failure_of

    key = aiohttp.client_reqrep.ConnectionKey("127.0.0.1", 1, False, True, None, None, None)
    cases = [
        (aiohttp.ClientProxyConnectionError(key, ConnectionRefusedError(111, "refused")), "proxy", True),
        (aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused")), "refused", True),
        (aiohttp.ClientConnectorError(key, OSError(113, "no route")), "unreachable", True),
        (aiohttp.ServerDisconnectedError(), "disconnected", False),
        (aiohttp.ClientPayloadError("cut"), "incomplete", False),
        (httpx.PoolTimeout("p"), "timeout", True),
        (httpx.ReadTimeout("r"), "timeout", False),
    ]
    for exc, reason, sent_not in cases:
        failure, _ = failure_of(exc)
        assert (failure.reason, failure.not_sent) == (reason, sent_not), exc
    assert failure_of(httpx.PoolTimeout("p"))[0].timeout == "pool"
    # a subclass is found by its own entry, not by a parent's listed earlier
    assert list(TABLE).index(aiohttp.ClientConnectorError) < list(TABLE).index(aiohttp.ConnectionTimeoutError)
    assert failure_of(aiohttp.ConnectionTimeoutError("t"))[0].timeout == "connect"


def test_the_retry_policy_reads_the_fields() -> None:
    from h2o_fsm import H2oTimeoutError, H2oTransportError, Phase
    from h2o_fsm._retry import is_retryable

    def err(**kw: object) -> H2oTransportError:
        return H2oTransportError("x", phase=Phase.CREATE, **kw)  # type: ignore[arg-type]

    assert is_retryable(Phase.CREATE, False, err(reason="refused", not_sent=True))
    assert not is_retryable(Phase.CREATE, False, err(reason="disconnected"))
    assert is_retryable(Phase.DELETE, True, err(reason="disconnected"))
    assert not is_retryable(Phase.DELETE, True, err(reason="malformed")), "a DELETE answered unreadably is not hammered"
    deadline = H2oTimeoutError("late", phase=Phase.SETTINGS, not_sent=True, timeout="deadline")
    assert not is_retryable(Phase.SETTINGS, True, deadline)
