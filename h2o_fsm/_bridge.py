"""The bridge under ``H2oSyncClient``: a private event loop running in a daemon thread, the caller
threads waiting on it, async iterators bridged chunk by chunk, and an interruption of the waiting
caller (``KeyboardInterrupt``) turned into a cancellation that is awaited before the caller goes on."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from ._exceptions import H2oStateError

__all__ = ["Bridge", "invoke", "now"]

T = TypeVar("T")


async def now(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args)`` run on the private loop's thread (the engine's objects are used only there)."""
    return fn(*args, **kwargs)


async def invoke(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``fn(*args, **kwargs)`` on the private loop, awaited if it returns an awaitable."""
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


class Bridge:
    """A private event loop in a daemon thread, and the waiting of caller threads on it."""

    def __init__(self, cleanup: float) -> None:
        self.cleanup = cleanup  # how long an interrupted call may take to finish its cancellation
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="h2o-fsm-sync", daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop; an interruption of the waiting caller (``KeyboardInterrupt``)
        cancels it and waits for it to finish before going on."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise H2oStateError("H2oSyncClient called from its own event loop (use H2oClient there)")
        done: concurrent.futures.Future[T] = concurrent.futures.Future()
        tasks: list[asyncio.Task[T]] = []

        def copy(task: asyncio.Task[T]) -> None:
            if task.cancelled():
                done.cancel()
            elif task.exception() is not None:
                done.set_exception(task.exception())
            else:
                done.set_result(task.result())

        def start() -> None:
            task = self.loop.create_task(coro)
            tasks.append(task)
            task.add_done_callback(copy)

        def cancel() -> None:  # after ``start`` if that was queued at all (one FIFO queue)
            if tasks:
                tasks[0].cancel()
            else:  # the interruption came before ``start`` was queued: it never will be
                coro.close()
                done.cancel()

        try:
            try:
                self.loop.call_soon_threadsafe(start)
            except RuntimeError:  # the loop is closed
                coro.close()
                raise H2oStateError("the client is closed") from None
            return done.result()
        except BaseException:
            # interrupted (KeyboardInterrupt) anywhere after the coroutine was made: it is cancelled, and
            # awaited, so that what it ran (a stream's generator) is free again before the caller goes on
            if not done.done() and not self.loop.is_closed():
                self.loop.call_soon_threadsafe(cancel)
                with contextlib.suppress(concurrent.futures.CancelledError, concurrent.futures.TimeoutError):
                    done.exception(timeout=self.cleanup + 1.0)
            raise

    def iterate(self, make: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
        """A sync iterator over the async iterator ``make()`` (made on the loop); closing it early, or
        an interruption, closes the async one there."""
        aiter = self.call(now(make))
        try:
            while True:
                try:
                    yield self.call(_await(aiter.__anext__()))
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(aiter, "aclose", None)
            if aclose is not None:
                self.call(_await(aclose()))

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()
