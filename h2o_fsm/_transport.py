"""The HTTP transport seam: the fast (httpx-aiohttp) transport with every failure mapped to a scrubbed httpx error.

httpx-aiohttp 0.2 lets some aiohttp exceptions escape unmapped (a malformed answer raises a raw
``aiohttp.ClientResponseError``), maps every ``aiohttp.ClientConnectionError`` - refused, reset,
server disconnected - to ``httpx.ConnectTimeout``, and copies ``str(original)`` into the message,
which can hold raw response bytes (a ``Set-Cookie`` value, a proxy's echo of our headers). The
wrapper here is the one place that fixes that, like httpx's own ``map_httpcore_exceptions``: one
context manager around the request and around iterating and closing the response body maps the
*original* aiohttp exception (``__cause__`` of httpx-aiohttp's mapping, or the raw one) by
``isinstance`` to an httpx error whose message is a fixed description plus class names:

- ``ClientConnectorError`` (refused, DNS, TLS) -> ``ConnectError``; ``ConnectionTimeoutError`` (also
  no pool slot in time) -> ``ConnectTimeout``: nothing was sent;
- ``ServerTimeoutError`` (socket read), ``asyncio.TimeoutError`` -> ``ReadTimeout``;
- ``ServerDisconnectedError``, ``ClientPayloadError``, ``ClientResponseError`` and parser errors (bad
  status line, too many headers) -> ``RemoteProtocolError``; ``ClientHttpProxyError`` -> ``ProxyError``;
- ``NonHttpUrlClientError`` / ``InvalidURL`` -> ``UnsupportedProtocol`` / ``LocalProtocolError``;
- other ``ClientConnectionError`` and ``OSError`` -> ``ReadError``; anything else -> ``TransportError``.

The original stays as ``__cause__``; ``asyncio.CancelledError`` (every non-``Exception``) passes
untouched. :func:`not_sent` and :func:`is_timeout` answer the retry questions and
:func:`transport_error_text` gives a message safe to log, for errors of either transport.
:func:`no_cookie_jar` is the public way to give an ``httpx.AsyncClient`` a jar that never stores nor
sends a cookie (the session keeps ours, see ``_session``).
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import importlib.util
import socket
import ssl
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    import urllib.request

__all__ = [
    "FastTransport",
    "MapTransportErrors",
    "fast_available",
    "fast_transport",
    "is_timeout",
    "no_cookie_jar",
    "not_sent",
    "transport_error_text",
]

_NOT_SENT: tuple[type[httpx.TransportError], ...] = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_Mapping = tuple[type[httpx.TransportError], str]


def fast_available() -> bool:
    """Whether the ``fast`` extra (``httpx-aiohttp``) is installed."""
    return importlib.util.find_spec("httpx_aiohttp") is not None


def fast_transport(*, verify: bool = True, max_connections: int = 100) -> httpx.AsyncBaseTransport:
    """An ``httpx-aiohttp`` transport (the ``fast`` extra) behind :class:`FastTransport`: about 40 % less
    client CPU per conversation than httpx's own transport (``benchmarks/run.py``), and only httpx
    errors come out of it. Its aiohttp session keeps no cookies (the session object does)."""
    try:
        import aiohttp
        from httpx_aiohttp import AiohttpTransport
    except ImportError as exc:
        raise ImportError("fast_transport() needs the 'fast' extra: pip install 'h2o-fsm[fast]'") from exc
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)

    def session() -> aiohttp.ClientSession:
        # the transport's own SSL context (built once, ~19 ms): the one its checks report is the one used
        connector = aiohttp.TCPConnector(limit=max_connections, ssl=inner.ssl_context, keepalive_timeout=5.0)
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    inner: Any = AiohttpTransport(verify=verify, limits=limits, client=session)
    return FastTransport(inner)


class FastTransport(httpx.AsyncBaseTransport):
    """Wraps an aiohttp-backed transport so that nothing but scrubbed httpx errors leave it."""

    __slots__ = ("_inner",)

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with MapTransportErrors(request):
            response = await self._inner.handle_async_request(request)
        # httpx itself swaps ``response.stream`` for its bounded wrapper the same way
        response.stream = _MappedStream(response.stream, request)
        return response

    async def aclose(self) -> None:
        with MapTransportErrors(None):
            await self._inner.aclose()

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context the aiohttp connector uses (``fast_transport`` builds it with the inner one)."""
        context = getattr(self._inner, "ssl_context", None)
        return context if isinstance(context, ssl.SSLContext) else None

    def __repr__(self) -> str:
        return f"<FastTransport {type(self._inner).__name__}>"


class _MappedStream(httpx.AsyncByteStream):
    __slots__ = ("_inner", "_request")

    def __init__(self, inner: httpx.SyncByteStream | httpx.AsyncByteStream, request: httpx.Request) -> None:
        if not isinstance(inner, httpx.AsyncByteStream):
            raise TypeError("the inner transport returned a synchronous stream")
        self._inner = inner
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with MapTransportErrors(self._request):
            chunks = self._inner.__aiter__()
            try:
                async for chunk in chunks:
                    yield chunk
            finally:  # closed now, as a reader closing us expects, not by the loop's finalizer later
                if isinstance(chunks, AsyncGenerator):
                    await chunks.aclose()

    async def aclose(self) -> None:
        with MapTransportErrors(self._request):
            await self._inner.aclose()


class MapTransportErrors:
    """Context manager: re-raises any ``Exception`` from the aiohttp layer as a scrubbed httpx error
    (see the module's table), ``from`` the original. httpx errors that do not come from aiohttp and
    every ``BaseException`` that is not an ``Exception`` (cancellation) pass untouched."""

    __slots__ = ("_request",)

    def __init__(self, request: httpx.Request | None) -> None:
        self._request = request

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None or not isinstance(exc, Exception):
            return
        original = _original(exc)
        if original is None:
            return  # an httpx error of httpx's own making: already honest
        cls, what = classify(original)
        raise cls(what, request=self._request) from original


def _original(exc: Exception) -> BaseException | None:
    """The exception to classify: httpx-aiohttp's mapping hides the original in ``__cause__``."""
    if isinstance(exc, httpx.HTTPError):
        cause = exc.__cause__
        return cause if cause is not None and _from_lower_layer(cause) else None
    return exc


def _from_lower_layer(exc: BaseException) -> bool:
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None and isinstance(exc, (aiohttp.ClientError, aiohttp.http_exceptions.HttpProcessingError)):
        return True
    return isinstance(exc, (OSError, asyncio.TimeoutError))


def classify(original: BaseException) -> _Mapping:
    """The httpx class and scrubbed message for a lower-level exception (never its text)."""
    cls, what = _classify(original)
    names = type(original).__name__
    detail = _parse_error(original)
    if detail is not None:
        names += f": {type(detail).__name__}"  # e.g. ClientResponseError: BadStatusLine
    return cls, f"{what} ({names})"


def _parse_error(exc: BaseException) -> BaseException | None:
    """The innermost aiohttp parser error behind ``exc`` (its class says what was malformed)."""
    aiohttp, found, cause = sys.modules.get("aiohttp"), None, exc.__cause__
    for _ in range(4):  # aiohttp chains ClientResponseError <- HttpProcessingError <- BadStatusLine
        if aiohttp is None or cause is None:
            break
        if isinstance(cause, aiohttp.http_exceptions.HttpProcessingError):
            found = cause
        cause = cause.__cause__
    return found


def _classify(exc: BaseException) -> _Mapping:
    aiohttp = sys.modules.get("aiohttp")  # an aiohttp exception implies aiohttp is imported
    if aiohttp is not None:
        found = _classify_aiohttp(aiohttp, exc)
        if found is not None:
            return found
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return httpx.ReadTimeout, "timed out"
    if isinstance(exc, OSError):
        return httpx.ReadError, "network error"
    return httpx.TransportError, "unexpected transport failure"


def _classify_aiohttp(aiohttp: Any, exc: BaseException) -> _Mapping | None:
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc, aiohttp.ClientProxyConnectionError):
            return httpx.ConnectError, "proxy connection not established"
        if isinstance(exc, aiohttp.ClientSSLError):
            return httpx.ConnectError, "TLS handshake failed"
        return httpx.ConnectError, _connect_failure(exc.os_error)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout, "connect timed out"
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout, "read timed out"
    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        return httpx.ConnectError, "TLS fingerprint mismatch"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError, "server disconnected without a complete answer"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError, "response body incomplete or malformed"
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return httpx.ProxyError, "proxy refused the request"
    if isinstance(exc, (aiohttp.ClientResponseError, aiohttp.http_exceptions.HttpProcessingError)):
        return httpx.RemoteProtocolError, "malformed response"
    if isinstance(exc, aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol, "URL scheme not supported"
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.LocalProtocolError, "invalid URL"
    if isinstance(exc, aiohttp.ClientConnectionError):
        return httpx.ReadError, "connection lost"
    if isinstance(exc, aiohttp.ClientError):
        return httpx.TransportError, "transport failure"
    return None


def _connect_failure(os_error: OSError) -> str:
    if isinstance(os_error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(os_error, socket.gaierror):
        return "name resolution failed"
    return "connection not established"


def _effective_class(exc: BaseException) -> type[BaseException] | None:
    """The honest httpx class of ``exc`` (or of its ``__cause__``, for an engine error wrapping one)."""
    err = exc if isinstance(exc, httpx.HTTPError) else exc.__cause__
    if not isinstance(err, httpx.HTTPError):
        return None
    cause = err.__cause__
    if cause is not None and not isinstance(cause, httpx.HTTPError) and _from_lower_layer(cause):
        return _classify(cause)[0]  # an unwrapped httpx-aiohttp transport: its class may lie
    return type(err)


def not_sent(exc: BaseException) -> bool:
    """Whether the request provably never reached the server: no connection was made (connect
    error or timeout, or no pool slot in time). ``exc`` is an httpx error or an error caused by one."""
    cls = _effective_class(exc)
    return cls is not None and issubclass(cls, _NOT_SENT)


def is_timeout(exc: BaseException) -> bool:
    """Whether an httpx error (or an error caused by one) really is a timeout, on either transport."""
    cls = _effective_class(exc)
    return cls is not None and issubclass(cls, httpx.TimeoutException)


_FIXED_TEXT: tuple[tuple[type[httpx.HTTPError], str], ...] = (
    *((cls, "timed out") for cls in (httpx.ConnectTimeout, httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout)),
    (httpx.ConnectError, "connection not established"),
    (httpx.ReadError, "connection lost"),
    (httpx.WriteError, "connection lost"),
    (httpx.RemoteProtocolError, "malformed response"),
    (httpx.LocalProtocolError, "request could not be sent as given"),
    (httpx.ProxyError, "proxy refused the request"),
    (httpx.UnsupportedProtocol, "URL scheme not supported"),
    (httpx.TimeoutException, "timed out"),
)


def transport_error_text(exc: httpx.HTTPError) -> str:
    """A message for ``exc`` that is safe to log, from either transport: a fixed description plus class
    names. httpx's own transport puts raw response bytes in some messages (h11's "illegal status line:
    bytearray(b'...')"), so no message text is ever reused."""
    cause = exc.__cause__
    if cause is not None and not isinstance(cause, httpx.HTTPError) and _from_lower_layer(cause):
        return classify(cause)[1]
    for cls, text in _FIXED_TEXT:
        if isinstance(exc, cls):
            return f"{text} ({type(exc).__name__})"
    return f"transport failure ({type(exc).__name__})"


class _KeepNothingJar(http.cookiejar.CookieJar):
    """Its policy refuses every cookie; parsing a response's headers only to refuse them is skipped
    (7 µs instead of 13-32 µs a response), and even a direct ``set_cookie`` stores nothing."""

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None

    def extract_cookies(self, response: Any, request: urllib.request.Request) -> None:
        return None

    def add_cookie_header(self, request: urllib.request.Request) -> None:
        return None


def no_cookie_jar() -> http.cookiejar.CookieJar:
    """A jar that accepts and returns no cookie: pass it as ``httpx.AsyncClient(cookies=jar)`` (the jar
    itself - ``httpx.Cookies(jar)`` would be copied into a default jar by the client)."""
    return _KeepNothingJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
