"""The HTTP transports: the fast one (httpx requests sent by an aiohttp session: the default) with every
failure mapped to a scrubbed httpx error, and the readers of the facts ``_failures`` classified.

aiohttp's exceptions carry the response's headers (a ``Set-Cookie`` value), our request's headers and
the connection key (a proxy's credentials) in their text or repr. :class:`FastTransport` is the one
place that fixes that: whatever leaves the aiohttp layer, raised while the request is sent or while
the body is read or closed, is classified once by the table in ``_failures`` and re-raised as the
httpx error of its class, with fixed words for a message and a
:class:`~h2o_fsm._failures.LowerLayerError` (class name and facts only) as its ``__cause__``: the
original is in no ``__cause__``/``__context__`` chain, so not in a formatted traceback either.
``asyncio.CancelledError`` (every non-``Exception``) passes untouched.

Its aiohttp session is built here, through public constructors: no cookie jar (the session object
keeps ours), a connection limit, keep-alive, our TLS context, the proxy (explicit or from the
environment, its credentials as a ``Proxy-Authorization`` header), and head limits raised to what real
servers send (aiohttp's defaults refuse a 129th header; h11, httpx's parser, has no count limit).
It replaces httpx-aiohttp, which the client used until 0.2: same aiohttp calls, one async generator
per body chunk instead of three layers (``benchmarks/concurrency.py``). :func:`no_cookie_jar` is the
public way to give an ``httpx.AsyncClient`` a jar that never stores nor sends a cookie.
"""

from __future__ import annotations

import asyncio
import base64
import http.cookiejar
import inspect
import ssl
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx

from ._failures import LowerLayerError, failure_of, lower_failure
from ._network import proxy_credentials, tls_context

if TYPE_CHECKING:
    import urllib.request

__all__ = [
    "GAP_EXTENSION",
    "MAX_HEADERS",
    "FastTransport",
    "fast_available",
    "fast_transport",
    "is_timeout",
    "map_lower_error",
    "no_cookie_jar",
    "not_sent",
    "transport_error_text",
]

# What an answer's head may hold on the fast transport (aiohttp's defaults: 8190 bytes a line or a
# field, 128 headers). Bounded all the same: at most 512 x 16 KiB of head.
MAX_HEAD_LINE = MAX_HEAD_FIELD = 16 * 1024
MAX_HEADERS = 512
_HEAD_LIMITS: dict[str, Any] = {"max_line_size": MAX_HEAD_LINE, "max_field_size": MAX_HEAD_FIELD}
if "max_headers" in inspect.signature(aiohttp.ClientSession).parameters:  # aiohttp >= 3.14 counts them
    _HEAD_LIMITS["max_headers"] = MAX_HEADERS


# A request extension of ours: the longest wait between two reads of the answer's *body*, enforced by one
# timer a body re-arms only when it fires (aiohttp's sock_read re-arms a timer at every read of the socket).
GAP_EXTENSION = "h2o_fsm.body_read_gap"


def fast_available() -> bool:
    """Whether the fast transport can be used: always since 0.3 (aiohttp is a default dependency)."""
    return True


def fast_transport(
    *,
    verify: ssl.SSLContext | bool | str = True,
    max_connections: int = 100,
    proxy: str | None = None,
    trust_env: bool = True,
) -> httpx.AsyncBaseTransport:
    """The aiohttp-backed transport (the default): about 40 % less client CPU per conversation than
    httpx's own transport (``benchmarks/run.py``), and only scrubbed httpx errors come out of it.

    ``proxy``: an http(s):// proxy URL (credentials in it are sent as ``Proxy-Authorization``, never
    shown); ``verify``: see :func:`~h2o_fsm._network.tls_context`. The environment's proxy variables
    are read by :class:`~h2o_fsm.H2oClient`, which knows the URL."""
    return FastTransport(tls_context(verify, trust_env=trust_env), max_connections, proxy)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def map_lower_error(exc: Exception, request: httpx.Request | None) -> httpx.TransportError:
    """The scrubbed httpx error for an exception out of the aiohttp layer (see the module docstring).
    Raise it outside the ``except`` block, so that the original is not its ``__context__``."""
    failure, names = lower_failure(exc)
    stand_in = LowerLayerError(exc.__cause__ if isinstance(exc, httpx.HTTPError) and exc.__cause__ else exc,
                               failure, names)
    mapped = failure.httpx_class(f"{failure.text} ({names})", request=request)
    mapped.__cause__ = stand_in
    return mapped


_Timeouts = tuple[float | None, float | None, float | None]


class FastTransport(httpx.AsyncBaseTransport):
    """httpx requests sent by one aiohttp session (built at the first request, in the loop), through
    aiohttp's public API only; nothing but scrubbed httpx errors leave it. One layer per chunk of a
    streamed body (``content.readany()``), not httpx-aiohttp's two plus a mapping wrapper."""

    __slots__ = ("_auth", "_connections", "_context", "_proxy", "_proxy_headers", "_session", "_timeouts")

    def __init__(self, context: ssl.SSLContext, max_connections: int = 100, proxy: str | None = None) -> None:
        self._context = context
        self._connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[_Timeouts, aiohttp.ClientTimeout] = {}
        bare, user, password = proxy_credentials(proxy)
        # aiohttp's BasicAuth is deprecated: the credentials go as a header, in the CONNECT of an https://
        # request, and with the request itself (which the proxy forwards) for http://
        self._auth = _basic(user, password or "") if user is not None else None
        self._proxy = bare or None
        self._proxy_headers = {"Proxy-Authorization": self._auth} if self._auth else None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self._connections, ssl=self._context, keepalive_timeout=5.0)
        self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                              trust_env=False, auto_decompress=False, **_HEAD_LIMITS)
        return self._session

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        given = request.extensions.get("timeout") or {}
        key: _Timeouts = (given.get("connect"), given.get("read"), given.get("pool"))
        found = self._timeouts.get(key)
        if found is None:  # a few per client (one per step): built once
            found = aiohttp.ClientTimeout(total=None, sock_connect=key[0], sock_read=key[1], connect=key[2])
            if len(self._timeouts) < 64:
                self._timeouts[key] = found
        return found

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        headers = request.headers
        if self._auth is not None and request.url.scheme == "http":
            headers["Proxy-Authorization"] = self._auth
        try:
            try:
                data: bytes | None = request.content or None
            except httpx.RequestNotRead:  # a multipart body: small, read whole
                data = await request.aread() or None
            response = await session.request(
                request.method, str(request.url), headers=headers.multi_items(), data=data,
                allow_redirects=False, compress=None, timeout=self._timeout(request), proxy=self._proxy,
                proxy_headers=self._proxy_headers, server_hostname=request.extensions.get("sni_hostname"),
            )
        except Exception as exc:
            mapped = map_lower_error(exc, request)
        else:
            extensions = {"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode("latin-1")}
            body = _Body(response, request, request.extensions.get(GAP_EXTENSION))
            return httpx.Response(response.status, headers=response.raw_headers, stream=body,
                                  request=request, extensions=extensions)
        raise mapped

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            await session.close()
        except Exception as exc:
            mapped = map_lower_error(exc, None)
        else:
            return
        raise mapped

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context the aiohttp connector uses."""
        return self._context

    def __repr__(self) -> str:
        return f"<FastTransport aiohttp {aiohttp.__version__}>"


class _Body(httpx.AsyncByteStream):
    __slots__ = ("_fired", "_gap", "_handle", "_loop", "_request", "_response", "_waiting")

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request, gap: float | None = None) -> None:
        self._response = response
        self._request = request
        self._gap = gap  # GAP_EXTENSION: bounded here, lazily (see _check)
        self._waiting: float | None = None  # since when a read waits (loop time), None between reads
        self._handle: asyncio.TimerHandle | None = None
        self._fired = False

    def _check(self) -> None:
        """The gap timer: one for the whole body, re-armed only when it fires before the gap is over, at
        the end of the current wait (exact: a wait of ``gap`` seconds ends the body, no later)."""
        self._handle = None
        since, gap = self._waiting, self._gap
        if since is None or gap is None:  # between two reads: the next wait arms it again
            return
        due = since + gap
        if self._loop.time() < due:
            self._handle = self._loop.call_at(due, self._check)
            return
        self._fired = True
        self._response.close()  # the pending read fails at once (aiohttp's public close)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        gap = self._gap
        loop = self._loop = asyncio.get_running_loop()
        try:
            while True:
                if gap is not None:
                    self._waiting = loop.time()
                    if self._handle is None:
                        self._handle = loop.call_at(self._waiting + gap, self._check)
                try:
                    chunk = await content.readany()
                except Exception as exc:
                    lower = aiohttp.SocketTimeoutError("Timeout on reading data from socket") if self._fired else exc
                    mapped = map_lower_error(lower, self._request)
                else:
                    self._waiting = None
                    if not chunk:
                        return
                    yield chunk
                    continue
                raise mapped
        finally:  # released now, as a reader closing us expects (the connection goes back, or is closed)
            self._end()

    def _end(self) -> None:
        self._waiting = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._response.release()

    async def aclose(self) -> None:
        self._end()  # back to the pool when the body was read whole, else closed


def not_sent(exc: BaseException) -> bool:
    """Whether the request provably never reached the server (no connection was made). ``exc``: an
    ``H2oTransportError`` (its field), an httpx error or an error caused by one (classified)."""
    known = getattr(exc, "not_sent", None)
    if isinstance(known, bool):
        return known
    err = exc if isinstance(exc, httpx.HTTPError) else exc.__cause__
    return isinstance(err, httpx.HTTPError) and failure_of(err)[0].not_sent


def is_timeout(exc: BaseException) -> bool:
    """Whether an httpx error (or an error caused by one) really is a timeout, on either transport."""
    err = exc if isinstance(exc, httpx.HTTPError) else exc.__cause__
    return isinstance(err, httpx.HTTPError) and failure_of(err)[0].timeout is not None


def transport_error_text(exc: httpx.HTTPError) -> str:
    """A message for ``exc`` that is safe to log, from either transport: fixed words plus class names
    (httpx's own transport puts raw response bytes in some messages: no message text is reused)."""
    failure, names = failure_of(exc)
    return f"{failure.text} ({names})"


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
