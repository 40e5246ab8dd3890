"""THE translation of lower-level errors into ``H2oError`` (à la httpx's ``map_httpcore_exceptions``):
httpx's, the transport's, and anything unexpected raised while a request is built, sent or read. The
facts come from the one table of ``_failures`` and travel as fields of ``H2oTransportError``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ._exceptions import H2oError, H2oTimeoutError, H2oTransportError
from ._failures import failure_of
from ._phase import Phase

__all__ = ["translate", "translated"]


def translate(exc: Exception, phase: Phase, cid: str | None, status: int | None = None, what: str = "") -> H2oError:
    """THE translation of a lower-level error (httpx's, the transport's, anything unexpected raised while
    a request is built, sent or read) into an ``H2oError``; the caller raises it ``from exc``. Its text
    is never shown (it can carry raw headers or cookies): fixed words and class names."""
    if isinstance(exc, H2oError):
        return exc
    what = what or phase.value
    failure, names = failure_of(exc, after_head=status is not None)
    if failure.reason == "refused":
        detail = failure.text  # worth saying as such, on either transport
    elif failure.reason == "unexpected" and failure.text.startswith("unexpected "):
        detail = failure.text  # a header that cannot be encoded, a transport's own error class...
    else:
        detail = f"{failure.text} ({names})"
    if failure.timeout is not None:
        return H2oTimeoutError(f"{what} timed out ({detail})", phase=phase, status=status, conversation_id=cid,
                               detail=f"timed out ({detail})", reason=failure.reason, not_sent=failure.not_sent,
                               timeout=failure.timeout)
    return H2oTransportError(f"{what} failed: {detail}", phase=phase, status=status, conversation_id=cid,
                             detail=detail, reason=failure.reason, not_sent=failure.not_sent)


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
