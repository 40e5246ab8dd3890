"""The client's connection pool: which transport carries its requests (ours on aiohttp, httpx's own, or
the caller's), with which proxy and TLS settings, and the ``httpx.AsyncClient`` over it. Checked
(:func:`check_reach`) before anything is opened, opened (:func:`open_pool`) last."""

from __future__ import annotations

import ssl
from typing import Literal

import httpx

from ._network import Verify, check_proxy, env_proxy, tls_context
from ._transport import fast_transport, no_cookie_jar

__all__ = ["TransportChoice", "check_reach", "open_pool"]

TransportChoice = Literal["auto", "httpx", "aiohttp"]


def check_reach(
    base_url: str, *, transport: httpx.AsyncBaseTransport | TransportChoice | None, proxy: str | None,
    http_client: httpx.AsyncClient | None, verify: Verify, trust_env: object,
) -> tuple[str | None, ssl.SSLContext | None]:
    """``(the proxy the requests go through, the TLS context of a pool we create)``: the explicit
    ``proxy``, else the environment's (``trust_env``, and not for a transport or client of the caller's)."""
    if not isinstance(trust_env, bool):
        raise TypeError(f"trust_env must be a bool, not {type(trust_env).__name__}")
    own = isinstance(transport, httpx.AsyncBaseTransport)
    via = check_proxy(proxy) or (env_proxy(base_url) if trust_env and not own and not http_client else None)
    tls = tls_context(verify, trust_env=trust_env) if http_client is None else None
    if transport == "aiohttp" and via is not None and not via.startswith("http"):
        raise ValueError("the aiohttp transport takes http(s):// proxies; socks5:// needs transport='httpx'")
    return via, tls


def open_pool(
    http_client: httpx.AsyncClient | None, transport: httpx.AsyncBaseTransport | TransportChoice | None, *,
    proxy: str | None, via: str | None, tls: ssl.SSLContext | None, trust_env: bool, max_connections: int,
) -> tuple[httpx.AsyncClient, bool, httpx.AsyncBaseTransport | None]:
    """``(the client, whether we own it, the transport the requests may go to directly)``: the caller's
    ``http_client`` as it is, or a new one on the chosen transport."""
    if http_client is not None:
        return http_client, False, None
    chosen: httpx.AsyncBaseTransport | None
    assert tls is not None  # check_reach makes it when there is no http_client
    if transport == "aiohttp" or (transport in (None, "auto") and (via is None or via.startswith("http"))):
        chosen = fast_transport(verify=tls, max_connections=max_connections, proxy=via, trust_env=trust_env)
    elif isinstance(transport, httpx.AsyncBaseTransport):
        chosen = transport
    else:
        chosen = None  # httpx's own, with its proxy handling (environment included)
    http = httpx.AsyncClient(
        transport=chosen,
        proxy=proxy if chosen is None else None,  # a transport we chose carries its proxy
        verify=tls,
        trust_env=trust_env,
        follow_redirects=False,
        cookies=no_cookie_jar(),  # the sessions keep them, per conversation
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )
    return http, True, chosen
