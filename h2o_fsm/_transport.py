"""The transports of the clients we create: httpx-aiohttp (the ``fast`` extra) behind one seam, and a
cookie jar that keeps nothing (the conversation's session keeps the cookies)."""

from __future__ import annotations

import importlib.util
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import cast

import httpx

__all__ = ["fast_available", "fast_transport", "no_cookie_jar"]


def fast_available() -> bool:
    """Whether the ``fast`` extra (``httpx-aiohttp``) is installed."""
    return importlib.util.find_spec("httpx_aiohttp") is not None


def no_cookie_jar() -> CookieJar:
    """A jar whose policy accepts and returns no cookie: the public way to keep httpx from storing any."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def fast_transport(*, verify: bool = True, max_connections: int = 100) -> httpx.AsyncBaseTransport:
    """An ``httpx-aiohttp`` transport (the ``fast`` extra). Its aiohttp session keeps no cookies."""
    try:
        import aiohttp
        from httpx_aiohttp import AiohttpTransport
    except ImportError as exc:
        raise ImportError("fast_transport() needs the 'fast' extra: pip install 'h2o-fsm[fast]'") from exc
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=max_connections, ssl=transport.ssl_context, keepalive_timeout=5.0)
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    transport = AiohttpTransport(verify=verify, limits=limits, client=session)
    return cast("httpx.AsyncBaseTransport", transport)
