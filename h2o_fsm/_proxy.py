"""The proxy URL a client is given: checked before any connection, and the credentials in it (secrets
every error and log of the requester redacts)."""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["check_proxy", "proxy_secrets"]


def check_proxy(proxy: object) -> str | None:
    if proxy is None:
        return None
    if not isinstance(proxy, str):
        raise TypeError(f"proxy must be a URL string or None, not {type(proxy).__name__}")
    scheme = urlsplit(proxy).scheme
    if scheme not in ("http", "https", "socks5", "socks5h"):
        raise ValueError(f"proxy must be an http(s):// or socks5:// URL, not {scheme[:10]!r}")
    return proxy


def proxy_secrets(proxy: str | None) -> tuple[str, ...]:
    parts = urlsplit(proxy) if proxy else None
    return tuple(s for s in (parts.username, parts.password) if s) if parts else ()
