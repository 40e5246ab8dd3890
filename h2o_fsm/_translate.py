"""THE translation of lower-level errors into ``H2oError`` (à la httpx's ``map_httpcore_exceptions``):
httpx's, the transport's, and anything unexpected raised while a request is built, sent or read."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from ._exceptions import H2oError, H2oTimeoutError, H2oTransportError
from ._phase import Phase
from ._transport import is_timeout, transport_error_text

__all__ = ["translate", "translated"]


def _describe(exc: httpx.HTTPError) -> str:
    """A transport error in a few words, never its own text (it can carry raw headers or cookies)."""
    seen: BaseException | None = exc
    for _ in range(8):  # "refused" is worth saying as such, on either transport
        if seen is None:
            break
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        seen = seen.__cause__ or seen.__context__
    return transport_error_text(exc)


def translate(exc: Exception, phase: Phase, cid: str | None, status: int | None = None, what: str = "") -> H2oError:
    """THE translation of a lower-level error (httpx's, the transport's, anything unexpected raised while
    a request is built, sent or read) into an ``H2oError``; the caller raises it ``from exc``."""
    if isinstance(exc, H2oError):
        return exc
    what = what or phase.value
    if isinstance(exc, httpx.HTTPError) and is_timeout(exc):
        return H2oTimeoutError(f"{what} timed out ({_describe(exc)})", phase=phase, status=status, conversation_id=cid)
    if isinstance(exc, httpx.HTTPError):
        return H2oTransportError(f"{what} failed: {_describe(exc)}", phase=phase, status=status, conversation_id=cid)
    # a header that cannot be encoded, a transport's own error class, ...: its text is never shown
    return H2oTransportError(f"{what} failed: unexpected {type(exc).__name__}", phase=phase, status=status,
                             conversation_id=cid)


@contextmanager
def translated(phase: Phase, cid: str | None, status: int | None = None, what: str = "") -> Iterator[None]:
    """:func:`translate` as a context manager. ``H2oError``, the end of an iteration and cancellations
    pass through."""
    try:
        yield
    except (H2oError, StopAsyncIteration):
        raise
    except Exception as exc:
        raise translate(exc, phase, cid, status, what) from exc
