"""How a client reaches its server, checked once at construction: the proxy (explicit, or from the
environment like httpx's ``trust_env``), TLS verification (a bool, a CA bundle path or an
``ssl.SSLContext``) and extra request headers. Same answers for both transports."""

from __future__ import annotations

import functools
import http.cookiejar
import os
import re
import ssl
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

__all__ = [
    "PLAIN_PATH", "Verify", "check_headers", "check_proxy", "env_proxy", "no_cookie_jar", "parse_url", "plain_prefix",
    "proxy_credentials", "proxy_secrets", "tls_context", "url_text",
]

Verify = bool | str | os.PathLike[str] | ssl.SSLContext
PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
_REFUSED_HEADERS = ("cookie", "host", "content-length", "transfer-encoding")


PLAIN_PATH = re.compile(r"(?:/(?:[A-Za-z0-9_~-]|%[0-9A-F]{2})+)+")
"""Path segments httpx leaves as they are after a base URL: no dot segment, nothing it would quote."""
_PROBE = "/h2o-fsm-probe"


@functools.lru_cache(maxsize=1024)
def parse_url(url: str) -> httpx.URL:
    """``httpx.URL(url)``, bounded: the fixed paths stay, a conversation's own is reused by its send and DELETE."""
    return httpx.URL(url)


@functools.lru_cache(maxsize=1024)
def url_text(url: str) -> str:
    """``url`` httpx-normalised and encoded, as an ``httpx.Request`` of it would send it."""
    return str(parse_url(url))


def plain_prefix(base_url: str) -> str | None:
    """What ``url_text(base_url + path)`` starts with for every ``PLAIN_PATH`` path (``None``: no such
    prefix, a base URL with a query or fragment): those URLs are then made without parsing them."""
    probe = url_text(base_url + _PROBE)
    return probe[: -len(_PROBE)] if probe.endswith(_PROBE) and not {"?", "#"} & set(probe) else None


def check_proxy(proxy: object, origin: str = "proxy") -> str | None:
    """A proxy URL of a scheme some transport speaks; its credentials are never in the error."""
    if proxy is None:
        return None
    if not isinstance(proxy, str):
        raise TypeError(f"{origin} must be a URL string or None, not {type(proxy).__name__}")
    scheme = urlsplit(proxy).scheme
    if scheme not in PROXY_SCHEMES:
        raise ValueError(f"{origin} must be an http(s):// or socks5:// URL, not {scheme[:10]!r}")
    return proxy


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    """``NO_PROXY`` as httpx reads it: ``*``, or hosts/domains (a leading dot optional, a scheme
    ignored) that the host is or ends in; with ``:port`` only that port."""
    host = host.lower().rstrip(".")
    for raw in no_proxy.split(","):
        entry = raw.strip().lower().split("://", 1)[-1].lstrip(".")
        if entry == "*":
            return True
        if entry.count(":") == 1 or entry.startswith("["):  # host:port or [v6]:port (bare v6 has more colons)
            name, _, wanted = entry.rpartition(":")
            if not wanted.isdigit() or int(wanted) != port:
                continue
            entry = name
        entry = entry.strip("[]")
        if entry and (host == entry or host.endswith("." + entry)):
            return True
    return False


def env_proxy(url: str) -> str | None:
    """The proxy the environment gives ``url``, read as httpx's ``trust_env`` does: ``HTTP_PROXY`` for
    http://, ``HTTPS_PROXY`` for https://, else ``ALL_PROXY``, none for a host in ``NO_PROXY``; either
    case (the lower-case one wins; the standard library's ``getproxies()`` reads them)."""
    proxies = urllib.request.getproxies()
    parts = urlsplit(url)
    found = proxies.get(parts.scheme) or proxies.get("all")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if not found or _bypassed(parts.hostname or "", port, proxies.get("no", "")):
        return None
    if "://" not in found:  # "proxy:3128", as curl takes it
        found = "http://" + found
    return check_proxy(found, "the environment's proxy")


def proxy_secrets(proxy: str | None) -> tuple[str, ...]:
    """The proxy URL's user and password as written (never to be shown in an error's text)."""
    parts = urlsplit(proxy) if proxy else None
    return tuple(s for s in (parts.username, parts.password) if s) if parts else ()


def proxy_credentials(proxy: str | None) -> tuple[str, str | None, str | None]:
    """``proxy`` without its user and password, and those (decoded): aiohttp takes them apart."""
    if proxy is None:
        return "", None, None
    parts = urlsplit(proxy)
    if parts.username is None:
        return proxy, None, None
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    bare = parts._replace(netloc=netloc).geturl()
    return bare, unquote(parts.username), unquote(parts.password or "")


def tls_context(verify: object, *, trust_env: bool = True) -> ssl.SSLContext:
    """The TLS context of both transports: ``True`` (certifi's bundle, or ``SSL_CERT_FILE``/
    ``SSL_CERT_DIR`` with ``trust_env``, as httpx), ``False`` (no verification), a CA bundle file or
    directory, or a context of your own."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if isinstance(verify, bool):  # one per setting and process: loading the CA bundle costs ~28 ms of CPU
        env = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")) if trust_env else (None, None)
        return _default_context(verify, trust_env, *env)
    if isinstance(verify, (str, os.PathLike)):
        path = os.fspath(verify)
        if os.path.isdir(path):
            return ssl.create_default_context(capath=path)
        if not os.path.isfile(path):
            raise ValueError(f"verify: no CA bundle file or directory at {path!r}")
        try:
            return ssl.create_default_context(cafile=path)
        except ssl.SSLError as exc:
            raise ValueError(f"verify: {path!r} holds no usable CA certificate ({type(exc).__name__})") from None
    raise TypeError(f"verify must be a bool, a CA bundle path or an ssl.SSLContext, not {type(verify).__name__}")


@functools.lru_cache(maxsize=8)
def _default_context(verify: bool, trust_env: bool, cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """httpx's context for ``verify``, shared by the clients of one setting (an ``SSLContext`` serves any
    number of connections; aiohttp shares its default one the same way). The environment's CA settings
    are part of the key: a change of ``SSL_CERT_FILE``/``SSL_CERT_DIR`` makes a new one."""
    return httpx.create_ssl_context(verify=verify, trust_env=trust_env)


def check_headers(headers: object) -> dict[str, str]:
    """Extra headers for every request (a value is never echoed: it may be a token)."""
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a mapping of names to values, not {type(headers).__name__}")
    result: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("headers: names and values must be str")
        if not name or not name.isascii() or any(c in name for c in " \t\r\n:") or not name.isprintable():
            raise ValueError(f"headers: {name[:40]!r} is not a valid header name")
        if name.lower() in _REFUSED_HEADERS:
            hint = " (pass cookies={name: value})" if name.lower() == "cookie" else ""
            raise ValueError(f"headers: {name!r} is set by the client itself{hint}")
        if not value.isascii() or any(c in value for c in "\r\n\0"):
            raise ValueError(f"headers: the value of {name!r} must be printable ASCII on one line")
        result[name] = value
    return result


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
