"""Which failures are retried, how long to wait, and the retry loop (tenacity).

Decision per phase (what is *safe* to repeat):

* ``settings`` — idempotent: transport errors, 429 and 5xx are retried.
* ``create`` — not idempotent: a lost answer can leave a conversation the client cannot name. Only
  failures that prove the request never reached the application are retried: connection errors
  (nothing was sent) and 429 (refused before handling).
* ``send`` — not idempotent either (a repeated message enters the history twice): same rule as create.
* ``delete`` — idempotent (404 counts as deleted): transport errors, 429 and 5xx are retried.
* ``stream`` — never retried: the answer is half delivered.

The first attempt runs outside tenacity, so the happy path pays nothing for retries.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_after_delay

from ._exceptions import H2oError, H2oStatusError, H2oTransportError
from ._phase import Phase

__all__ = ["Retries", "is_retryable", "is_timeout", "never_reached", "retry_after_failure"]

T = TypeVar("T")
_IDEMPOTENT = frozenset({Phase.SETTINGS, Phase.DELETE})
_NOT_REACHED = (httpx.ConnectError, httpx.ConnectTimeout)


@dataclasses.dataclass(frozen=True)
class Retries:
    """Retry policy. ``attempts`` counts the first try; ``attempts=1`` disables retries.

    Waits grow from ``backoff`` (doubling, capped at ``max_wait``); a ``Retry-After`` header is
    honoured up to ``max_wait``. No retry starts after ``max_time`` seconds from the first failure.
    """

    attempts: int = 3
    backoff: float = 0.1
    max_wait: float = 2.0
    max_time: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"Retries.attempts must be an int >= 1, got {self.attempts!r}")
        for name in ("backoff", "max_wait", "max_time"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"Retries.{name} must be a number >= 0, got {value!r}")


def _from_aiohttp(exc: BaseException | None) -> bool:
    return exc is not None and type(exc).__module__.split(".", 1)[0] == "aiohttp"


def is_timeout(exc: httpx.HTTPError) -> bool:
    """Whether an httpx error really is a timeout. httpx-aiohttp 0.2 maps *every* aiohttp
    ``ClientConnectionError`` (refused, reset, server disconnected) to ``httpx.ConnectTimeout``; its
    cause tells the truth."""
    if not isinstance(exc, httpx.TimeoutException):
        return False
    cause = exc.__cause__
    return not (_from_aiohttp(cause) and not isinstance(cause, asyncio.TimeoutError))


def never_reached(exc: BaseException) -> bool:
    """Whether the request provably never reached the server (no connection was made)."""
    cause = exc.__cause__
    if not isinstance(cause, _NOT_REACHED):
        return False
    inner = cause.__cause__
    if _from_aiohttp(inner):
        return any(c.__name__ == "ClientConnectorError" for c in type(inner).__mro__)
    return True


def is_retryable(phase: Phase, exc: BaseException) -> bool:
    """Whether ``exc`` raised by a request of ``phase`` may be retried (see module docstring)."""
    if isinstance(exc, H2oStatusError):
        status = exc.status or 0
        if status == 429:
            return phase is not Phase.STREAM
        return phase in _IDEMPOTENT and status >= 500
    if isinstance(exc, H2oTransportError):
        if phase in _IDEMPOTENT:
            return True
        return phase in (Phase.CREATE, Phase.SEND) and never_reached(exc)
    return False


def _delay(policy: Retries, failures: int, exc: BaseException | None) -> float:
    """The wait after the ``failures``-th failure: backoff doubling from ``policy.backoff``, at least
    a ``Retry-After``, at most ``policy.max_wait``."""
    delay = policy.backoff * (2 ** (failures - 1))
    if isinstance(exc, H2oStatusError) and exc.retry_after is not None:
        delay = max(delay, exc.retry_after)
    return float(min(delay, policy.max_wait))


async def retry_after_failure(call: Callable[[], Awaitable[T]], phase: Phase, policy: Retries, first: H2oError) -> T:
    """Retry ``call`` after its first attempt failed with ``first``; re-raise the last error."""
    if policy.attempts <= 1 or not is_retryable(phase, first):
        raise first
    await asyncio.sleep(_delay(policy, 1, first))

    def wait(state: RetryCallState) -> float:
        # tenacity counts only its own attempts; the first failure happened before it started
        return _delay(policy, state.attempt_number + 1, state.outcome.exception() if state.outcome else None)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts - 1) | stop_after_delay(policy.max_time),
        wait=wait,
        retry=retry_if_exception(lambda e: is_retryable(phase, e)),
        reraise=True,
    )
    return await retrying(call)
