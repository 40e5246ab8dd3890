"""Small asyncio helpers of the engine: a deadline that can be brought forward (for every Python we
support), and waiting for a task the client owns without ever holding back the caller's cancellation."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Container
from types import TracebackType
from typing import Any

from ._exceptions import H2oStateError

__all__ = ["Deadline", "wait_owned"]

if sys.version_info >= (3, 11):
    from asyncio import timeout_at as _timeout_at
else:  # pragma: no cover - Python 3.10

    class _timeout_at:
        """Python 3.10 has no ``asyncio.timeout_at``; async_timeout's cancels whichever task reschedules
        it, so ``interrupt()`` from ``aclose()`` would cancel the wrong task. This one always cancels the
        task that entered it (on 3.10 a cancellation from outside at the same instant reads as ours)."""

        def __init__(self, when: float) -> None:
            self._when, self._fired = when, False
            self._task: asyncio.Task[Any] | None = None
            self._handle: asyncio.Handle | None = None

        async def __aenter__(self) -> None:
            self._task = asyncio.current_task()
            self.reschedule(self._when)

        async def __aexit__(self, kind: Any, exc: Any, tb: Any) -> None:
            if self._handle is not None:
                self._handle.cancel()
            if self._fired and kind is asyncio.CancelledError:
                raise asyncio.TimeoutError from exc

        def _fire(self) -> None:
            if self._task is not None and not self._task.done():
                self._fired = True
                self._task.cancel()

        def expired(self) -> bool:
            return self._fired

        def reschedule(self, when: float) -> None:
            if self._handle is not None:
                self._handle.cancel()
            self._handle = asyncio.get_running_loop().call_at(when, self._fire)


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
        except asyncio.TimeoutError:  # the builtin TimeoutError since 3.11
            self.fired = bool(self._cm.expired())
            raise

    def interrupt(self) -> None:
        """End the block now (as if the deadline had passed); a no-op once it is over."""
        if self._cm is None:
            return
        self.interrupted = True
        self._cm.reschedule(asyncio.get_running_loop().time())


async def wait_owned(task: asyncio.Future[Any], abandoned: Container[asyncio.Future[Any]] = ()) -> None:
    """Wait for a task the client owns. If the caller is cancelled meanwhile, the cancellation reaches
    it at once and the task goes on (the client's ``aclose()`` waits for it). If the *task* was cancelled
    (the client gave up on it at the end of ``aclose()``), the caller gets an ``H2oStateError``, not a
    cancellation it never asked for (``abandoned``: the tasks the client gave up on; Python 3.10 cannot
    tell otherwise). A task that failed raises its exception here.

    What ``await asyncio.shield(task)`` does, with one future and one callback instead of shield's
    future, two callbacks and their closures (the create of every conversation waits here)."""
    if not task.done():
        waiter = task.get_loop().create_future()

        def wake(_: object) -> None:
            if not waiter.done():
                waiter.set_result(None)

        task.add_done_callback(wake)
        try:
            await waiter
        except asyncio.CancelledError:  # the caller's own cancellation: the task goes on
            task.remove_done_callback(wake)
            raise
    if task.cancelled():
        current = asyncio.current_task()
        cancelling = getattr(current, "cancelling", None)
        mine = cancelling() > 0 if cancelling is not None else task not in abandoned
        if not mine:
            raise H2oStateError("the client was closed before this step or ending finished") from None
        raise asyncio.CancelledError
    task.result()
