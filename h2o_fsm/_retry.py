"""Which failures are retried, how long to wait, and the retry loop (tenacity's, nothing hand-written).

What is *safe* to repeat is the table's ``idempotent`` flag of the failing state (``_machine.SPEC``):

* idempotent steps (settings, fetch, stop, delete): transport errors, 429 and 5xx are retried;
* the others (create, send): a lost answer can leave a conversation the client cannot name, or a
  message twice in the history; only failures that prove the request never reached the application
  are retried: connection errors (nothing was sent) and 429 (refused before handling);
* ``stream`` is never retried: the answer is half delivered;
* an answer that could not be read (``reason="malformed"``: a bad status line, a head over the
  limits) is not retried by any step: the request was sent (a DELETE may have been carried out) and
  asking again gets the same answer; a request that could not be sent as given neither;
* chat-ui's usage limit (a 429 about too many conversations) and the answer of a server of the other
  dialect are never retried: no retry can help (``_refusals``).

The facts are the fields ``H2oTransportError`` carries (``not_sent``, ``reason``), classified once
(``_failures``): no message is read here.

Waits double from ``backoff`` (capped at ``max_wait``), at least a ``Retry-After``. A step retries up to
``attempts`` times; the DELETE retries until its cleanup budget is spent, whatever the count.
The first attempt runs outside tenacity, so the happy path pays nothing for retries.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_before_delay,
)
from tenacity.stop import stop_base

from ._exceptions import H2oDialectError, H2oError, H2oStatusError, H2oTransportError, H2oUsageLimitError
from ._phase import Phase

__all__ = ["Retries", "delay", "is_retryable", "retry_after_failure"]

T = TypeVar("T")
_NEVER_AGAIN = frozenset({"malformed", "invalid_request", "unsupported"})


@dataclasses.dataclass(frozen=True)
class Retries:
    """Retry policy. ``attempts`` counts the first try; ``attempts=1`` disables retries (but the DELETE,
    which retries until ``Timeouts.cleanup`` is spent).

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


def is_retryable(phase: Phase, idempotent: bool, exc: BaseException) -> bool:
    """Whether ``exc`` raised by a request of ``phase`` may be retried (see module docstring)."""
    if isinstance(exc, (H2oUsageLimitError, H2oDialectError)):  # no retry can help: deleting, or the other dialect
        return False
    if isinstance(exc, H2oStatusError):
        status = exc.status or 0
        return status == 429 or (idempotent and status >= 500)
    if isinstance(exc, H2oTransportError):
        if exc.reason in _NEVER_AGAIN or exc.timeout == "deadline":  # the caller's time is up
            return False
        return idempotent or exc.not_sent
    return False


def delay(policy: Retries, failures: int, exc: BaseException | None) -> float:
    """The wait after the ``failures``-th failure: backoff doubling from ``policy.backoff``, at least
    a ``Retry-After``, at most ``policy.max_wait``."""
    seconds = policy.backoff * (2 ** (failures - 1))
    if isinstance(exc, H2oStatusError) and exc.retry_after is not None:
        seconds = max(seconds, exc.retry_after)
    return float(min(seconds, policy.max_wait))


def _wait(policy: Retries) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        return delay(policy, state.attempt_number, state.outcome.exception() if state.outcome else None)

    return wait


async def retry_after_failure(
    call: Callable[[], Awaitable[T]],
    phase: Phase,
    idempotent: bool,
    policy: Retries,
    first: H2oError,
    *,
    budget: float | None = None,
) -> T:
    """Retry ``call`` after its first attempt failed with ``first``; re-raise the last error.

    ``budget`` (seconds): retry until it is spent instead of counting attempts (the DELETE)."""
    if not is_retryable(phase, idempotent, first) or (budget is None and policy.attempts <= 1):
        raise first
    stop: stop_base = stop_before_delay(budget) if budget is not None else (
        stop_after_attempt(policy.attempts) | stop_after_delay(policy.max_time)
    )
    retrying = AsyncRetrying(
        stop=stop,
        wait=_wait(policy),
        retry=retry_if_exception(lambda e: is_retryable(phase, idempotent, e)),
        reraise=True,
    )
    replay = True  # tenacity's first attempt is the failure that already happened: it then does the waiting
    async for attempt in retrying:
        with attempt:
            if replay:
                replay = False
                raise first
            return await call()
    raise first  # pragma: no cover - AsyncRetrying either returns or re-raises
