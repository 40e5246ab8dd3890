"""Every lower-layer failure classified ONCE, by one table (as httpx's ``HTTPCORE_EXC_MAP`` does): the
facts - what happened (``reason``), whether the request provably never left (``not_sent``), which
timeout fired - become fields of the ``H2oTransportError`` that the retry policy, the messages and the
CLI read. Nothing downstream looks at a message or walks a cause chain again.

The table is keyed by exception class and looked up along the class's MRO (the most specific entry
wins, whatever the order of the table). It holds httpx's classes (httpx's own transport), aiohttp's
(the fast transport; and a transport of your own on httpx-aiohttp, which calls a refusal and a
disconnect ``ConnectTimeout``: the aiohttp original in its ``__cause__`` is what is classified) and
the standard library's. An entry is a :class:`Failure`, or a function of the exception for the
classes whose subclass does not say enough (a connect error: refused, TLS or unreachable; httpx's
``RemoteProtocolError``: an answer h11 could not parse, or a server that hung up).

A lower-layer exception's text or repr may hold raw response headers (a ``Set-Cookie``), our request's
headers or a proxy's credentials (aiohttp's connection key). :class:`LowerLayerError` stands in for it
in a cause chain: its class name and the fixed words of its :class:`Failure`, nothing else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
from collections.abc import Callable
from typing import NoReturn

import aiohttp
import h11
import httpx

from ._exceptions import Reason, TimeoutKind

__all__ = [
    "Failure", "LowerLayerError", "Reason", "TimeoutKind", "failure_of", "is_timeout", "lower_failure",
    "map_lower_error", "not_sent", "raise_clean", "transport_error_text",
]


@dataclasses.dataclass(frozen=True)
class Failure:
    """The facts of one failure. ``text`` is a fixed description, safe to log."""

    reason: Reason
    text: str
    not_sent: bool = False
    timeout: TimeoutKind | None = None
    httpx_class: type[httpx.TransportError] = httpx.TransportError


class LowerLayerError(Exception):
    """Stands in a cause chain for a lower-layer exception (see the module docstring)."""

    def __init__(self, original: BaseException, failure: Failure, names: str) -> None:
        super().__init__(f"{failure.text} ({names})")
        self.failure = failure
        self.names = names
        self.original_class = f"{type(original).__module__}.{type(original).__qualname__}"


def _in_chain(exc: BaseException, *kinds: type[BaseException]) -> BaseException | None:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, kinds):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _connect(cls: type[httpx.TransportError]) -> Callable[[BaseException], Failure]:
    def judge(exc: BaseException) -> Failure:
        os_error = getattr(exc, "os_error", None)  # aiohttp's connector error holds it (and chains it)

        def has(*kinds: type[BaseException]) -> bool:
            return _in_chain(exc, *kinds) is not None or isinstance(os_error, kinds)

        if has(ConnectionRefusedError):
            return Failure("refused", "connection refused", True, None, cls)
        if has(ssl.SSLError, ssl.CertificateError):
            return Failure("tls", "TLS handshake failed", True, None, cls)
        if has(socket.gaierror):
            return Failure("unreachable", "name resolution failed", True, None, cls)
        return Failure("unreachable", "connection not established", True, None, cls)

    return judge


def _remote_protocol(exc: BaseException) -> Failure:
    if _in_chain(exc, h11.RemoteProtocolError) is not None:  # h11 could not parse what came back
        return Failure("malformed", "malformed response", httpx_class=httpx.RemoteProtocolError)
    return Failure("disconnected", "server disconnected without a complete answer",
                   httpx_class=httpx.RemoteProtocolError)


_Entry = Failure | Callable[[BaseException], Failure]
_MALFORMED = Failure("malformed", "malformed response", httpx_class=httpx.RemoteProtocolError)
_LOST = Failure("network", "connection lost", httpx_class=httpx.ReadError)
_INCOMPLETE = Failure("incomplete", "response body incomplete or malformed", httpx_class=httpx.RemoteProtocolError)

TABLE: dict[type[BaseException], _Entry] = {
    # httpx's own classes (its transport, or raised by httpx itself)
    httpx.ConnectTimeout: Failure("timeout", "connect timed out", True, "connect", httpx.ConnectTimeout),
    httpx.PoolTimeout: Failure("timeout", "no connection free in time", True, "pool", httpx.PoolTimeout),
    httpx.ReadTimeout: Failure("timeout", "read timed out", False, "read", httpx.ReadTimeout),
    httpx.WriteTimeout: Failure("timeout", "write timed out", False, "write", httpx.WriteTimeout),
    httpx.TimeoutException: Failure("timeout", "timed out", False, "read", httpx.ReadTimeout),
    httpx.ConnectError: _connect(httpx.ConnectError),
    httpx.ReadError: _LOST,
    httpx.WriteError: Failure("network", "connection lost", httpx_class=httpx.WriteError),
    httpx.NetworkError: _LOST,
    httpx.RemoteProtocolError: _remote_protocol,
    httpx.LocalProtocolError: Failure("invalid_request", "request could not be sent as given",
                                      httpx_class=httpx.LocalProtocolError),
    httpx.ProtocolError: _MALFORMED,
    httpx.ProxyError: Failure("proxy", "proxy refused the request", True, None, httpx.ProxyError),
    httpx.UnsupportedProtocol: Failure("unsupported", "URL scheme not supported", True, None,
                                       httpx.UnsupportedProtocol),
    httpx.TransportError: Failure("unexpected", "transport failure"),
    httpx.DecodingError: Failure("malformed", "answer could not be decoded", httpx_class=httpx.RemoteProtocolError),
    # aiohttp's (the fast transport)
    aiohttp.ClientProxyConnectionError: Failure("proxy", "proxy connection not established", True, None,
                                                httpx.ConnectError),
    aiohttp.ClientSSLError: Failure("tls", "TLS handshake failed", True, None, httpx.ConnectError),
    aiohttp.ClientConnectorError: _connect(httpx.ConnectError),
    aiohttp.ConnectionTimeoutError: Failure("timeout", "connect timed out", True, "connect", httpx.ConnectTimeout),
    aiohttp.ServerTimeoutError: Failure("timeout", "read timed out", False, "read", httpx.ReadTimeout),
    aiohttp.ServerFingerprintMismatch: Failure("tls", "TLS fingerprint mismatch", True, None, httpx.ConnectError),
    aiohttp.ServerDisconnectedError: Failure("disconnected", "server disconnected without a complete answer",
                                             httpx_class=httpx.RemoteProtocolError),
    aiohttp.ClientPayloadError: _INCOMPLETE,
    aiohttp.ClientHttpProxyError: Failure("proxy", "proxy refused the request", True, None, httpx.ProxyError),
    aiohttp.ClientResponseError: _MALFORMED,  # aiohttp's parser errors (too many headers, bad status line)
    aiohttp.http_exceptions.HttpProcessingError: _MALFORMED,
    aiohttp.NonHttpUrlClientError: Failure("unsupported", "URL scheme not supported", True, None,
                                           httpx.UnsupportedProtocol),
    aiohttp.InvalidURL: Failure("invalid_request", "invalid URL", True, None, httpx.LocalProtocolError),
    aiohttp.ClientConnectionError: _LOST,
    aiohttp.ClientError: Failure("unexpected", "transport failure"),
    # the standard library's
    asyncio.TimeoutError: Failure("timeout", "timed out", False, "read", httpx.ReadTimeout),
    TimeoutError: Failure("timeout", "timed out", False, "read", httpx.ReadTimeout),
    OSError: Failure("network", "network error", httpx_class=httpx.ReadError),
}
_UNEXPECTED = Failure("unexpected", "unexpected transport failure")


def _lookup(exc: BaseException) -> Failure | None:
    for cls in type(exc).__mro__:
        entry = TABLE.get(cls)
        if entry is not None:
            return entry if isinstance(entry, Failure) else entry(exc)
    return None


def _lower(exc: BaseException) -> bool:
    return isinstance(exc, (aiohttp.ClientError, aiohttp.http_exceptions.HttpProcessingError))


def lower_failure(exc: BaseException) -> tuple[Failure, str]:
    """The failure of an exception coming out of the aiohttp layer (raw, or httpx-aiohttp's mapping
    of it, whose class may lie: the original in ``__cause__`` is classified) and the class names to
    show with it (``ClientResponseError: BadStatusLine``: the parser error says what was malformed)."""
    original = exc.__cause__ if isinstance(exc, httpx.HTTPError) and exc.__cause__ is not None else exc
    failure = _lookup(original) or _UNEXPECTED
    names = type(original).__name__
    parser, seen = None, original.__cause__
    for _ in range(4):  # aiohttp chains ClientResponseError <- HttpProcessingError <- BadStatusLine: the innermost
        if seen is None:
            break
        if isinstance(seen, aiohttp.http_exceptions.HttpProcessingError):
            parser = seen
        seen = seen.__cause__
    if parser is not None:
        names += f": {type(parser).__name__}"
    return failure, names


def failure_of(exc: BaseException, *, after_head: bool = False) -> tuple[Failure, str]:
    """The facts of any exception raised while a request was sent or its answer read, and the class
    names to show with them. ``after_head``: the answer's head was read (h11 says a body cut short
    and a malformed head with the same class: once the head is in, it is the body)."""
    failure, names = _failure_of(exc)
    if after_head and failure.reason == "malformed":
        return _INCOMPLETE, names
    return failure, names


def _failure_of(exc: BaseException) -> tuple[Failure, str]:
    # The fast transport already classified its errors (a LowerLayerError as cause); an unwrapped
    # httpx-aiohttp transport's are judged by their aiohttp cause; httpx's own by their class.
    cause = exc.__cause__
    if isinstance(cause, LowerLayerError):
        return cause.failure, cause.names
    if _lower(exc) or (isinstance(exc, httpx.HTTPError) and cause is not None and _lower(cause)):
        return lower_failure(exc)
    failure = _lookup(exc) if isinstance(exc, (httpx.HTTPError, OSError, asyncio.TimeoutError)) else None
    if failure is None:
        return Failure("unexpected", f"unexpected {type(exc).__name__}"), type(exc).__name__
    return failure, type(exc).__name__


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


def map_lower_error(exc: Exception, request: httpx.Request | None) -> httpx.TransportError:
    """The scrubbed httpx error for an exception out of the aiohttp layer (see ``_transport``'s docstring).
    Raise it outside the ``except`` block, so that the original is not its ``__context__``."""
    failure, names = lower_failure(exc)
    stand_in = LowerLayerError(exc.__cause__ if isinstance(exc, httpx.HTTPError) and exc.__cause__ else exc,
                               failure, names)
    mapped = failure.httpx_class(f"{failure.text} ({names})", request=request)
    mapped.__cause__ = stand_in
    return mapped


def raise_clean(mapped: httpx.TransportError) -> NoReturn:
    """Raise ``mapped`` with no ``__context__``. Raised outside the ``except`` that made it, it has none on
    3.11+; on 3.10 a task resumed with an exception (asyncio's ``__wakeup``) still counts the lower one as
    being handled, so it became the context (the original aiohttp error, whose repr may hold a secret):
    the context set by the raise is cleared, and the bare ``raise`` keeps it cleared."""
    try:
        raise mapped
    except httpx.TransportError:
        mapped.__context__ = None
        raise
