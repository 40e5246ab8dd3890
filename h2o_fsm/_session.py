"""One chat-ui browser session: its cookies (parsed with the standard library) and which settings it sent.

All steps of a conversation must carry the same session cookie (the server scopes conversations to
it). We keep cookies ourselves instead of in httpx's jar so that many concurrent conversations on one
``httpx.AsyncClient`` can never overwrite each other's session, and so that cookie values never end
up in a repr or a log line.

``Set-Cookie`` headers are split by ``http.cookiejar.parse_ns_headers`` (the standard library's
Netscape/RFC 6265 parser, which ``CookieJar`` itself uses; ``http.cookies.SimpleCookie`` turns an
unknown attribute such as ``Priority=High`` into a second cookie and drops a whole header that ends
in the ``Partitioned`` flag). ``Max-Age`` wins over ``Expires`` (RFC 6265 §5.3); a ``Max-Age`` <= 0
or an ``Expires`` in the past removes the cookie. A name that is not an RFC 6265 token or a value
with other octets than RFC 6265's cookie-octets (a non-ASCII byte, a space, a comma...) is ignored,
so the ``Cookie`` header we send is always plain ASCII. Domain and path are ignored: one session
talks to one deployment.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import re
import time
from collections.abc import Callable, Mapping

import httpx

__all__ = ["Session"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token = cookie-name
_OCTETS = r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*"  # RFC 6265 cookie-octet
_VALUE = re.compile(f'{_OCTETS}|"{_OCTETS}"')
_MAX_AGE = re.compile(r"-?[0-9]+")

# Public name, in the standard library since Python 2.4 and what CookieJar.make_cookies runs, but
# missing from the docs and from typeshed: typed here once. tests/test_session.py pins its behaviour.
_Attrs = list[tuple[str, "str | float | None"]]
parse_ns_headers: Callable[[list[str]], list[_Attrs]] = http.cookiejar.parse_ns_headers  # type: ignore[attr-defined]


def _valid(name: str, value: str) -> bool:
    return _TOKEN.fullmatch(name) is not None and _VALUE.fullmatch(value) is not None


def _expired(attrs: _Attrs, now: float) -> bool:
    """Whether the attributes ask to delete the cookie: Max-Age <= 0, else an Expires in the past."""
    expires: float | None = None
    for key, val in attrs:
        if key == "max-age" and isinstance(val, str) and _MAX_AGE.fullmatch(val):
            return int(val) <= 0  # the first valid Max-Age decides; Expires no longer matters
        if key == "expires" and isinstance(val, (int, float)):
            expires = float(val)  # parse_ns_headers gives epoch seconds, or None if unparsable
    return expires is not None and expires <= now


class Session:
    """The cookies and settings state shared by the conversations of one browser session.

    ``Session(cookies={...})`` starts with cookies the user hands in (e.g. HuggingChat's ``hf-chat``
    and ``token``); they are validated like the server's, and a bad one raises ``TypeError`` or
    ``ValueError`` naming the cookie, never showing its value."""

    __slots__ = ("_cookies", "_header", "established", "lock", "settings_model")

    def __init__(self, cookies: Mapping[str, str] | None = None) -> None:
        self._cookies: dict[str, str] = _checked(cookies) if cookies is not None else {}
        self._header: str | None = self._render()
        self.settings_model: str | None = None
        self.established = False  # the server answered in this session (and set its cookie if it wanted)
        self.lock = asyncio.Lock()

    def _render(self) -> str | None:
        if not self._cookies:
            return None
        return "; ".join(f"{k}={v}" for k, v in self._cookies.items())

    @property
    def cookie_header(self) -> str | None:
        """The ``Cookie`` header to send (plain ASCII), or ``None`` before the server set one."""
        return self._header

    @property
    def cookies(self) -> dict[str, str]:
        """A copy of the cookies (secret: don't log it)."""
        return dict(self._cookies)

    def update(self, response: httpx.Response) -> bool:
        """Take the cookies a response sets, drop the ones it expires, ignore invalid ones.

        Returns ``True`` when a cookie the session already had was replaced by another value or
        removed - the server no longer knows our session, so the settings it had must be sent
        again - and ``False`` otherwise (nothing set, a new cookie, or the same value refreshed)."""
        # Scan the raw header list: httpx's decoded lookups re-detect the encoding of every header
        # on each call, and this runs for every response.
        values = [v for k, v in response.headers.raw if k.lower() == b"set-cookie"]
        if not values:
            return False
        lost = False
        changed = False
        now = time.time()
        for parsed in parse_ns_headers([raw.decode("latin-1") for raw in values]):
            name, value = parsed[0]
            if not isinstance(value, str) or not _valid(name, value):
                continue  # no "=", or octets we could not send back: ignored, as a browser would
            old = self._cookies.get(name)
            if _expired(parsed[1:], now):
                if old is not None:
                    del self._cookies[name]
                    lost = changed = True
            elif old != value:
                self._cookies[name] = value
                changed = True
                lost = lost or old is not None
        if changed:
            self._header = self._render()
        return lost

    def __repr__(self) -> str:
        return f"<Session cookies={sorted(self._cookies)} settings_model={self.settings_model!r}>"


def _checked(cookies: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(cookies, Mapping):
        raise TypeError(f"cookies must be a mapping of names to values, not {type(cookies).__name__}")
    result: dict[str, str] = {}
    for name, value in cookies.items():
        if not isinstance(name, str):
            raise TypeError(f"cookie names must be str, not {type(name).__name__}")
        if not isinstance(value, str):
            raise TypeError(f"cookie {name!r}: the value must be a str, not {type(value).__name__}")
        if "=" in name:  # probably "name=value" given as a name: don't echo it
            raise ValueError("cookie names cannot contain '=' (pass cookies={name: value})")
        if _TOKEN.fullmatch(name) is None:
            raise ValueError(f"cookie name {name!r} is not a valid cookie name (RFC 6265 token)")
        if _VALUE.fullmatch(value) is None:
            raise ValueError(
                f"cookie {name!r}: the value has characters a cookie cannot carry (RFC 6265: printable "
                "ASCII without space, '\"', ',', ';' or '\\')"
            )
        result[name] = value
    return result
