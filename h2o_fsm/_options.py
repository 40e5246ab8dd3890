"""``H2oClient``'s constructor arguments, checked before anything is built: the base URL (never guessed),
the transport choice and the types of the option objects."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import httpx

from ._config import Limits, Timeouts
from ._protocol import DEFAULT_BASE_URL, normalize_base_url
from ._retry import Retries

__all__ = ["base_url_of", "check_options", "default_base_url"]


def default_base_url() -> str:
    """``$H2O_FSM_BASE_URL`` when set, else the 2023 deployment's URL (the seed API's ``H2o.url``)."""
    return os.environ.get("H2O_FSM_BASE_URL") or DEFAULT_BASE_URL


def base_url_of(base_url: str | None) -> str:
    """The client's base URL: the one given, else ``$H2O_FSM_BASE_URL``; neither is a ``ValueError`` (the
    2023 deployment, ``H2o.url``'s default, is long gone: never guessed here)."""
    if base_url is None:
        base_url = os.environ.get("H2O_FSM_BASE_URL") or None
    if base_url is None:
        raise ValueError("no base URL: pass H2oClient(base_url) or set H2O_FSM_BASE_URL")
    normalized = normalize_base_url(base_url)
    if urlsplit(normalized).username is not None:
        raise ValueError("base URL must not carry credentials (user:password@); hand them in as cookies")
    return normalized


def check_options(
    *,
    http_client: httpx.AsyncClient | None,
    transport: object,
    proxy: str | None,
    timeouts: object,
    limits: object,
    retries: object,
    max_concurrency: object,
    settings: object,
) -> None:
    """Refuse contradictory or mistyped options (a ``ValueError``/``TypeError`` before any request)."""
    custom = transport not in (None, "auto")
    if http_client is not None and (custom or proxy is not None):
        raise ValueError("give either http_client or transport/proxy, not both")
    if isinstance(transport, str) and transport not in ("auto", "httpx", "aiohttp"):
        raise ValueError(f"transport must be 'auto', 'httpx', 'aiohttp' or a transport, not {transport!r}")
    if isinstance(transport, httpx.AsyncBaseTransport) and proxy is not None:
        raise ValueError("a custom transport handles proxies itself; give either transport or proxy")
    for name, value, expected in (("timeouts", timeouts, Timeouts), ("limits", limits, Limits),
                                  ("retries", retries, Retries)):
        if value is not None and not isinstance(value, expected):
            raise TypeError(f"{name} must be a {expected.__name__}, not {type(value).__name__}")
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1
    ):
        raise ValueError(f"max_concurrency must be an int >= 1, got {max_concurrency!r}")
    if settings is not None and not isinstance(settings, bool):
        raise TypeError(f"settings must be a bool or None, not {type(settings).__name__}")
