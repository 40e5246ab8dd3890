"""Small asyncio helpers of the engine: a deadline that can be brought forward (for every Python we
support), and waiting for a task the client owns without ever holding back the caller's cancellation."""

from __future__ import annotations

import asyncio
import sys
from types import TracebackType
from typing import Any

from ._exceptions import H2oStateError

__all__ = ["Deadline", "wait_owned"]

if sys.version_info >= (3, 11):
    from asyncio import timeout_at as _timeout_at
else:  # pragma: no cover - Python 3.10
    from async_timeout import timeout_at as _timeout_at


class Deadline:
    """``async with Deadline(when):`` bounds the block by the loop time ``when``; its ``TimeoutError``
    propagates and ``fired`` says it was this deadline. A cancellation from outside propagates unchanged.
    :meth:`interrupt` brings the deadline forward to now (``H2oClient.aclose()`` ends steps in flight)."""

    __slots__ = ("_cm", "fired", "interrupted", "when")

    def __init__(self, when: float) -> None:
        self.when = when
        self.fired = False
        self.interrupted = False
        self._cm: Any = None

    async def __aenter__(self) -> Deadline:
        self._cm = _timeout_at(self.when)
        await self._cm.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        try:
            return await self._cm.__aexit__(kind, exc, tb)  # type: ignore[no-any-return]
        except asyncio.TimeoutError:  # TimeoutError since 3.11; async_timeout's class before
            expired = self._cm.expired
            self.fired = bool(expired() if callable(expired) else expired)
            raise

    def interrupt(self) -> None:
        """End the block now (as if the deadline had passed); a no-op once it is over."""
        if self._cm is None:
            return
        self.interrupted = True
        now = asyncio.get_running_loop().time()
        if hasattr(self._cm, "reschedule"):
            self._cm.reschedule(now)
        else:  # pragma: no cover - async_timeout on Python 3.10
            self._cm.update(now)


async def wait_owned(task: asyncio.Future[Any]) -> None:
    """Wait for a task the client owns. If the caller is cancelled meanwhile, the cancellation reaches
    it at once and the task goes on (the client's ``aclose()`` waits for it). If the *task* was cancelled
    (the client gave up on it at the end of ``aclose()``), the caller gets an ``H2oStateError``, not a
    cancellation it never asked for. A task that failed raises its exception here."""
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        mine = current is not None and getattr(current, "cancelling", lambda: 1)() > 0
        if task.cancelled() and not mine:
            raise H2oStateError("the client was closed before this step or ending finished") from None
        raise
