"""Logging seam: the host injects a structlog logger; without one we stay silent.

A library must not configure logging, and an unconfigured structlog prints to stdout. So the default
is: structlog's ``get_logger("h2o_fsm")`` when the host has configured structlog, a no-op otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import structlog

__all__ = ["Logger", "default_logger", "redact", "scrub", "shown_headers"]


class Logger(Protocol):
    """The part of a structlog bound logger that h2o-fsm uses."""

    def bind(self, **new_values: object) -> Logger: ...
    def debug(self, event: str, **kw: object) -> object: ...
    def info(self, event: str, **kw: object) -> object: ...
    def warning(self, event: str, **kw: object) -> object: ...


class _NullLogger:
    __slots__ = ()

    def bind(self, **new_values: object) -> _NullLogger:
        return self

    def debug(self, event: str, **kw: object) -> None:
        return None

    info = warning = debug


NULL_LOGGER: Logger = _NullLogger()


def default_logger() -> Logger:
    """``structlog.get_logger("h2o_fsm")`` if the host configured structlog, else a silent logger."""
    if structlog.is_configured():
        logger: Logger = structlog.get_logger("h2o_fsm")
        return logger
    return NULL_LOGGER


_USERINFO = re.compile(r"(?<=//)[^/@\s]+@")


def redact(text: str) -> str:
    """Remove ``user:password@`` from any URL inside ``text``."""
    return _USERINFO.sub("***@", text)


_SECRET_HEADERS = re.compile(r"(?i)((?:proxy-authorization|authorization|cookie|set-cookie|x-api-key)\s*[:=])[^\r\n<]*")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` (something a server sent back, say) without credentials: URL userinfo, the values of
    secret-bearing header lines, and every occurrence of the given ``secrets`` (cookie values...)."""
    text = _SECRET_HEADERS.sub(r"\1 ***", redact(text))
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


SHOWN_HEADERS = ("content-type", "content-length", "location", "retry-after")
"""The answer headers a step's result shows (``--step``); a ``set-cookie`` is named, never shown."""


def shown_headers(headers: Mapping[str, str], clean: Callable[[str], str]) -> tuple[tuple[str, str], ...]:
    """The headers of an answer worth showing a person debugging it, each value passed through ``clean``
    (a scrubber) and bounded; whether the server set a cookie, without its value."""
    shown = [(name, clean(headers[name])[:200]) for name in SHOWN_HEADERS if name in headers]
    if "set-cookie" in headers:
        shown.append(("set-cookie", "***"))
    return tuple(shown)
