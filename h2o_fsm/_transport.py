"""The fast HTTP transport (httpx requests sent by an aiohttp session: the default) with every failure
mapped to a scrubbed httpx error (``_failures.map_lower_error``). The readers of the facts ``_failures``
classified (``not_sent``, ``is_timeout``, ``transport_error_text``), that mapping and :func:`no_cookie_jar`
(``_network``) are re-exported here.

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
per body chunk instead of three layers (``benchmarks/concurrency.py``). The requester sends its JSON and
empty bodies through :meth:`FastTransport.send`: the same request on the wire, without the
``httpx.Request`` (its headers encoded by httpx, decoded back for aiohttp, encoded again), which is built
only when an error's or the response's ``request`` is read.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import inspect
import ssl
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, cast

import aiohttp
import httpx
import yarl

from ._failures import is_timeout, map_lower_error, not_sent, raise_clean, transport_error_text
from ._network import no_cookie_jar, proxy_credentials, tls_context

__all__ = [
    "GAP_EXTENSION",
    "KEEPALIVE",
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


# How long an idle connection is reused: under uvicorn's (and Node's) 5 s, with room for a loaded loop. At
# 5 s, a burst 4.95 s after the last lost 77 of 200 creates to "server disconnected" (closed as they went out)
KEEPALIVE = 4.0

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
        connector = aiohttp.TCPConnector(limit=self._connections, ssl=self._context, keepalive_timeout=KEEPALIVE)
        self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                              trust_env=False, auto_decompress=False, **_HEAD_LIMITS)
        return self._session

    def _timeout(self, extensions: Mapping[str, Any]) -> aiohttp.ClientTimeout:
        given = extensions.get("timeout") or {}
        key: _Timeouts = (given.get("connect"), given.get("read"), given.get("pool"))
        found = self._timeouts.get(key)
        if found is None:  # a few per client (one per step): built once
            found = aiohttp.ClientTimeout(total=None, sock_connect=key[0], sock_read=key[1], connect=key[2])
            if len(self._timeouts) < 64:
                self._timeouts[key] = found
        return found

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        headers = request.headers
        if self._auth is not None and request.url.scheme == "http":
            headers["Proxy-Authorization"] = self._auth
        return await self.send(request.method, str(request.url), headers.multi_items(), await _content(request),
                               request.extensions, request_of=lambda: request)

    async def send(self, method: str, url: str, headers: dict[str, str] | list[tuple[str, str]],
                   content: bytes | None, extensions: Mapping[str, Any], *,
                   request_of: Callable[[], httpx.Request] | None = None) -> httpx.Response:
        """What ``handle_async_request`` does with the ``httpx.Request`` these make (the same request on
        the wire), without making it: aiohttp takes the headers as given (it adds ``Host`` and
        ``Content-Length`` as httpx would), and the ``httpx.Request`` is built only if something reads
        it (an error's or the response's ``request``). ``url``: absolute and encoded, as httpx shows it."""
        if request_of is None:  # the requester's own call (a dict of headers)
            assert isinstance(headers, dict)
            if self._auth is not None and url.startswith("http:"):
                headers["Proxy-Authorization"] = self._auth

            def request_of() -> httpx.Request:
                return httpx.Request(method, url, content=content, headers=headers, extensions=extensions)

        session = self._session or self._open()
        try:
            response = await session.request(
                method, _yarl(url), headers=headers, data=content, allow_redirects=False, compress=None,
                timeout=self._timeout(extensions), proxy=self._proxy, proxy_headers=self._proxy_headers,
                server_hostname=extensions.get("sni_hostname"),
            )
        except Exception as exc:
            mapped = map_lower_error(exc, _built(request_of))
        else:
            body = _Body(response, request_of, extensions.get(GAP_EXTENSION))
            about = {"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode("latin-1")}
            return _Response(response.status, response.raw_headers, body, request_of, about)
        raise_clean(mapped)

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
        raise_clean(mapped)

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context the aiohttp connector uses."""
        return self._context

    def __repr__(self) -> str:
        return f"<FastTransport aiohttp {aiohttp.__version__}>"


async def _content(request: httpx.Request) -> bytes | None:
    try:
        return request.content or None
    except httpx.RequestNotRead:  # a multipart body: small, read whole
        pass
    try:
        return await request.aread() or None
    except Exception as exc:
        mapped = map_lower_error(exc, request)
    raise_clean(mapped)


def _built(request_of: Callable[[], httpx.Request]) -> httpx.Request | None:
    try:
        return request_of()
    except Exception:  # a request we could send but httpx cannot represent: the error goes without one
        return None


@functools.lru_cache(maxsize=1024)
def _yarl(url: str) -> yarl.URL:
    # aiohttp's URL type, as aiohttp parses a string, once per URL (a conversation's send and DELETE share one)
    return yarl.URL(url)


class _Response(httpx.Response):
    """An ``httpx.Response`` whose ``request`` is built when first read (nothing on our path reads it)."""

    def __init__(self, status: int, headers: Any, stream: httpx.AsyncByteStream,
                 request_of: Callable[[], httpx.Request], extensions: dict[str, Any]) -> None:
        super().__init__(status, headers=headers, stream=stream, extensions=extensions)
        self._request_of: Callable[[], httpx.Request] | None = request_of

    @property
    def request(self) -> httpx.Request:
        if self._request_of is not None:
            request_of, self._request_of = self._request_of, None
            httpx.Response.request.fset(self, request_of())  # type: ignore[attr-defined]
        return httpx.Response.request.fget(self)  # type: ignore[attr-defined,no-any-return]

    @request.setter
    def request(self, value: httpx.Request) -> None:
        self._request_of = None
        httpx.Response.request.fset(self, value)  # type: ignore[attr-defined]


def raw_chunks(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """The body's chunks as sent (decoded when it has a content-encoding): our transport's body is
    iterated directly, without httpx's ``aiter_raw`` layer (a generator, a chunker and a context per chunk)."""
    if "content-encoding" in response.headers:
        return cast("AsyncGenerator[bytes, None]", response.aiter_bytes())
    stream = response.stream
    if type(stream) is _Body:
        response.is_stream_consumed = True  # httpx's guard: a second read raises StreamConsumed, as after aiter_raw
        return stream.__aiter__()
    return cast("AsyncGenerator[bytes, None]", response.aiter_raw())


class _Body(httpx.AsyncByteStream):
    __slots__ = ("_fired", "_gap", "_handle", "_loop", "_request", "_response", "_waiting")

    def __init__(self, response: aiohttp.ClientResponse, request_of: Callable[[], httpx.Request],
                 gap: float | None = None) -> None:
        self._response = response
        self._request = request_of
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

    async def __aiter__(self) -> AsyncGenerator[bytes, None]:
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
                    mapped = map_lower_error(lower, _built(self._request))
                else:
                    self._waiting = None
                    if not chunk:
                        return
                    yield chunk
                    continue
                raise_clean(mapped)
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
