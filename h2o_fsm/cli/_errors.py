"""One-line rendering of every way a command can fail: usage mistakes (exit 2) and failed conversations (exit 1)."""

from __future__ import annotations

import weakref
from collections.abc import Sequence

from .._dialects import suggested
from .._exceptions import (
    H2oDialectError,
    H2oError,
    H2oStatusError,
    H2oTimeoutError,
    H2oTransportError,
    H2oUsageLimitError,
)
from .._hints import status_hint
from .._log import redact
from .._phase import Phase

__all__ = [
    "EXIT_ABORTED",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "Aborted",
    "UsageError",
    "error_line",
    "is_refused",
    "os_error_text",
]

EXIT_FAILED, EXIT_USAGE, EXIT_ABORTED, EXIT_INTERRUPTED = 1, 2, 3, 130

SERVER_EXTRA = "pip install 'h2o-fsm[server]'"


class UsageError(Exception):
    """A mistake in the command line or its files: shown as one line, exit 2."""


class Aborted(Exception):
    """The user quit at a ``--step`` pause."""


def os_error_text(exc: OSError) -> str:
    """``OSError`` without Python's ``[Errno N]`` noise: ``No such file or directory``."""
    return exc.strerror or str(exc) or type(exc).__name__


def is_refused(exc: BaseException) -> bool:
    """True for a refused connection (a fact the engine classified once: ``H2oTransportError.reason``)."""
    return isinstance(exc, H2oTransportError) and exc.reason == "refused"


def _message(exc: H2oError) -> str:
    """What happened, without the phase (said by us once): the error's ``detail``."""
    return exc.detail.strip()


def _other_dialect(exc: H2oError, dialect: str | None) -> str | None:
    """The dialect a status suggests the server speaks instead, if it looks like the wrong one."""
    if isinstance(exc, H2oDialectError):  # the engine recognised the other dialect's answer
        return exc.suggested_dialect or None
    if not isinstance(exc, H2oStatusError):
        return None
    if _about_the_model(exc):
        return None  # a server of this dialect, refusing the model
    return suggested(exc.phase, exc.status, dialect)  # each dialect's signs (2023: the welcome gate's 405)


def _about_the_model(exc: H2oError) -> bool:
    """The server's answer names the model (``Invalid model: 'x'``, ``Model not found``)."""
    return isinstance(exc, H2oStatusError) and exc.status in (400, 404, 422) and "model" in exc.body.lower()


_OFFERED: weakref.WeakKeyDictionary[H2oError, tuple[str, ...]] = weakref.WeakKeyDictionary()


def about_the_model(exc: H2oError) -> bool:
    """``exc`` is the server refusing the model (its answer names it)."""
    return _about_the_model(exc)


def maybe_the_model(exc: H2oError) -> bool:
    """``exc`` may be the model refused without a word of it (chat-ui's create: 400 "Invalid request" for a
    bad body or an unknown model): the server's model list tells (:func:`offer_models`)."""
    return _about_the_model(exc) or (isinstance(exc, H2oStatusError) and exc.status in (400, 422)
                                     and exc.phase in (Phase.SETTINGS, Phase.CREATE))


def offer_models(exc: H2oError, ids: Sequence[str]) -> None:
    """The models the server lists, for the advice of ``exc`` (a refused model, one the list lacks): "check
    --model" naming them, bounded and scrubbed
    (the server's words are untrusted: printable characters only, at most 10 ids of 80 characters)."""
    shown = ["".join(ch for ch in str(i)[:80] if ch.isprintable()) for i in list(ids)[:10]]
    _OFFERED[exc] = tuple(s for s in shown if s) + (("…",) if len(ids) > 10 else ())


def _advice(exc: H2oError, base_url: str, dialect: str | None = None, *, debug: bool = False) -> str:
    where = redact(base_url)
    if _about_the_model(exc) or exc in _OFFERED:
        offered = _OFFERED.get(exc)
        if offered:
            return f"check --model (the server does not offer that one; it offers: {', '.join(offered)})"
        return "check --model (the server does not offer that one)"
    other = _other_dialect(exc, dialect)
    if other is not None:
        return f"is this a server of the other dialect? try --dialect {other}"
    if isinstance(exc, H2oUsageLimitError):
        return "retrying cannot help: delete old conversations (h2o-fsm conversations --delete-all --yes, or a sweep)"
    if isinstance(exc, H2oTimeoutError):
        return "the server is slow or stalled; raise --timeout or try again later"
    if isinstance(exc, H2oTransportError) and is_refused(exc):
        return "is the server running? (set --base-url or H2O_FSM_BASE_URL)"
    if isinstance(exc, H2oTransportError) and exc.reason == "incomplete" and exc.phase is Phase.STREAM:
        return "the server cut the answer short; try again"
    if isinstance(exc, H2oTransportError):
        return f"is the server running and reachable at {where}? (set --base-url or H2O_FSM_BASE_URL)"
    if isinstance(exc, H2oStatusError) and exc.status is not None:
        status = exc.status
        if status == 429:
            return f"try again{f' after {exc.retry_after:g}s' if exc.retry_after is not None else ' later'}"
        if status == 404 and exc.phase in (Phase.SETTINGS, Phase.CREATE):
            return f"check --base-url ({where} does not look like a chat-ui deployment)"
        if status == 404:
            return "start a new conversation"
        if status in (400, 422):
            return "check --model and --param values"
        if status == 401:
            return "pass the session cookies with --cookie NAME=VALUE (or H2O_FSM_COOKIES)"
        if status >= 500:
            return "try again later"
    return "the traceback above has the details" if debug else "run again with --debug for details"


def error_line(exc: H2oError, base_url: str, dialect: str | None = None, *, debug: bool = False) -> str:
    """``h2o-fsm: send failed (HTTP 404): <what happened> — <what to do>``: the phase said once."""
    phase = exc.phase.value if exc.phase else "request"
    shown = exc.status is not None and (isinstance(exc, H2oStatusError) or exc.status >= 400)
    status = f" (HTTP {exc.status})" if shown else ""  # not the 200 of a stream that broke later
    if isinstance(exc, H2oTransportError) and not isinstance(exc, H2oTimeoutError) and is_refused(exc):
        what = f"connection refused by {redact(base_url)}"
    else:
        what = _message(exc)
        if isinstance(exc, H2oStatusError) and exc.status is not None:
            # the explanation of the status comes from the one table of hints (fitting the step), then
            # what the server said; the engine's own wording of it is not repeated
            hint = "usage limit reached" if isinstance(exc, H2oUsageLimitError) else status_hint(
                exc.phase, exc.status, conversation=exc.conversation_id is not None)
            if hint:
                body = " ".join(exc.body.split())[:200]
                what = f"{hint}: {body}" if body else hint
    what = " ".join(what.split()) or type(exc).__name__
    cleanup = " — and deleting the conversation failed too" if exc.cleanup_error is not None else ""
    return f"h2o-fsm: {phase} failed{status}: {what}{cleanup} — {_advice(exc, base_url, dialect, debug=debug)}"
