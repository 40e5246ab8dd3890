"""The HTTP transports: the fast one (aiohttp behind httpx-aiohttp: the default) with every failure
mapped to a scrubbed httpx error, and the readers of the facts ``_failures`` classified.

httpx-aiohttp lets some aiohttp exceptions escape unmapped, maps every ``ClientConnectionError`` -
refused, reset, server disconnected - to ``httpx.ConnectTimeout``, and copies ``str(original)`` into
the message, which can hold raw response bytes (a ``Set-Cookie`` value, a proxy's echo of our
headers); aiohttp's own exceptions carry the response's headers and the connection key (a proxy's
credentials) in their repr. :class:`FastTransport` is the one place that fixes that: whatever leaves
the aiohttp layer, raised or while the body is read or closed, is classified once by the table in
``_failures`` and re-raised as the httpx error of its class, with fixed words for a message and a
:class:`~h2o_fsm._failures.LowerLayerError` (class name and facts only) as its ``__cause__``: the
original is in no ``__cause__``/``__context__`` chain, so not in a formatted traceback either.
``asyncio.CancelledError`` (every non-``Exception``) passes untouched.

The aiohttp session is built here, through public constructors: no cookie jar (the session object
keeps ours), a connection limit, keep-alive, our TLS context, the proxy (explicit or from the
environment, its credentials as ``proxy_auth``), and header limits raised to what real servers send
(aiohttp's defaults refuse a 129th header; h11, httpx's parser, has no count limit).
:func:`no_cookie_jar` is the public way to give an ``httpx.AsyncClient`` a jar that never stores nor
sends a cookie.
"""

from __future__ import annotations

import base64
import http.cookiejar
import inspect
import ssl
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from ._failures import LowerLayerError, failure_of, lower_failure
from ._network import proxy_credentials, tls_context

if TYPE_CHECKING:
    import urllib.request

__all__ = [
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
    context = tls_context(verify, trust_env=trust_env)
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    via: httpx.Proxy | None = None
    auth: str | None = None
    if proxy is not None:  # aiohttp's BasicAuth is deprecated: the credentials go as a header, to the proxy's
        bare, user, password = proxy_credentials(proxy)  # CONNECT (https://) or with each http:// request
        auth = _basic(user, password or "") if user is not None else None
        via = httpx.Proxy(bare, headers={"Proxy-Authorization": auth} if auth else None)

    def session() -> aiohttp.ClientSession:  # called in the loop, at the first request
        connector = aiohttp.TCPConnector(limit=max_connections, ssl=context, keepalive_timeout=5.0)
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
                                     **_HEAD_LIMITS)

    inner: Any = AiohttpTransport(verify=context, limits=limits, client=session, proxy=via)
    return FastTransport(inner, context, auth)


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


class FastTransport(httpx.AsyncBaseTransport):
    """Wraps an aiohttp-backed transport so that nothing but scrubbed httpx errors leave it."""

    __slots__ = ("_auth", "_context", "_inner")

    def __init__(
        self, inner: httpx.AsyncBaseTransport, context: ssl.SSLContext | None = None, proxy_auth: str | None = None
    ) -> None:
        self._inner = inner
        self._context = context
        self._auth = proxy_auth  # a Proxy-Authorization value, for requests the proxy forwards (http://)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._auth is not None and request.url.scheme == "http":
            request.headers["Proxy-Authorization"] = self._auth
        try:
            response = await self._inner.handle_async_request(request)
        except Exception as exc:
            mapped = map_lower_error(exc, request)
        else:
            # httpx itself swaps ``response.stream`` for its bounded wrapper the same way
            response.stream = _MappedStream(response.stream, request)
            return response
        raise mapped

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        except Exception as exc:
            mapped = map_lower_error(exc, None)
        else:
            return
        raise mapped

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context the aiohttp connector uses."""
        return self._context

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
        chunks = self._inner.__aiter__()
        try:
            while True:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    mapped = map_lower_error(exc, self._request)
                else:
                    yield chunk
                    continue
                raise mapped
        finally:  # closed now, as a reader closing us expects, not by the loop's finalizer later
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await self._close(close)

    async def _close(self, close: Any) -> None:
        try:
            await close()
        except Exception as exc:
            mapped = map_lower_error(exc, self._request)
        else:
            return
        raise mapped

    async def aclose(self) -> None:
        await self._close(self._inner.aclose)


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
