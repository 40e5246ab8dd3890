"""One chat-ui browser session: its cookies and which settings it already sent.

All steps of a conversation must carry the same session cookie (the server scopes conversations to
it). We keep cookies ourselves instead of in httpx's jar so that many concurrent conversations on one
``httpx.AsyncClient`` can never overwrite each other's session, and so that cookie values never end
up in a repr or a log line.
"""

from __future__ import annotations

import asyncio

import httpx

__all__ = ["Session"]


class Session:
    __slots__ = ("_cookies", "_header", "lock", "settings_model")

    def __init__(self, cookies: dict[str, str] | None = None) -> None:
        self._cookies: dict[str, str] = dict(cookies or {})
        self._header: str | None = self._render()
        self.settings_model: str | None = None
        self.lock = asyncio.Lock()

    def _render(self) -> str | None:
        if not self._cookies:
            return None
        return "; ".join(f"{k}={v}" for k, v in self._cookies.items())

    @property
    def cookie_header(self) -> str | None:
        """The ``Cookie`` header to send, or ``None`` before the server set one."""
        return self._header

    @property
    def cookies(self) -> dict[str, str]:
        """A copy of the cookies (secret: don't log it)."""
        return dict(self._cookies)

    def update(self, response: httpx.Response) -> bool:
        """Take the cookies a response sets; ``True`` when one we had was replaced."""
        # Scan the raw header list: httpx's decoded lookups re-detect the encoding of every header
        # on each call, and this runs for every response.
        values = [v for k, v in response.headers.raw if k.lower() == b"set-cookie"]
        if not values:
            return False
        replaced = False
        for raw in values:
            value = raw.decode("latin-1")
            pair = value.split(";", 1)[0]
            name, sep, val = pair.partition("=")
            name = name.strip()
            if sep and name:
                old = self._cookies.get(name)
                replaced = replaced or (old is not None and old != val.strip())
                self._cookies[name] = val.strip()
        self._header = self._render()
        return replaced

    def __repr__(self) -> str:
        return f"<Session cookies={sorted(self._cookies)} settings_model={self.settings_model!r}>"
