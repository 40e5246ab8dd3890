"""Shared constants and helpers of the test suite (imported as a plain module: ``from support import ...``)."""

from __future__ import annotations

import asyncio
import sys
from contextlib import AbstractAsyncContextManager
from types import TracebackType

from h2o_fsm import H2oClient, Retries, Timeouts
from h2o_fsm.server import LocalServer

__all__ = [
    "FAST_RETRIES", "FAST_TIMEOUTS", "TRANSPORTS", "assert_clean", "caller_timeout", "client_for", "no_task_left",
]

# Fast but real: small waits so that fault tests stay quick.
FAST_RETRIES = Retries(attempts=3, backoff=0.01, max_wait=0.05, max_time=2.0)
FAST_TIMEOUTS = Timeouts(connect=2.0, settings=5.0, create=5.0, send=5.0, token=5.0, delete=2.0, cleanup=5.0)

# The transports an engine test runs on: httpx-aiohttp (the default with the fast extra) and httpx's own.
TRANSPORTS = ("aiohttp", "httpx")


def client_for(server: LocalServer, transport: str, **kw: object) -> H2oClient:
    """A client of ``server`` on ``transport`` with the suite's fast retries and timeouts (``kw`` wins)."""
    kw.setdefault("retries", FAST_RETRIES)
    kw.setdefault("timeouts", FAST_TIMEOUTS)
    kw.setdefault("dialect", server.dialect)
    return H2oClient(server.url, transport=transport, **kw)  # type: ignore[arg-type]


def assert_clean(server: LocalServer) -> None:
    """Every conversation the server created was deleted, exactly once."""
    acct = server.accounting
    assert acct.live == 0, acct.snapshot()
    assert acct.deleted == acct.created
    assert acct.deleted_twice == 0


async def no_task_left(wait: float = 1.0) -> set[asyncio.Task[object]]:
    """The tasks other than the current one still running after up to ``wait`` seconds (finalisers of
    async generators the GC collected may need a few loop iterations); empty when nothing was left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        left = {t for t in asyncio.all_tasks() if not t.done() and t is not asyncio.current_task()}
        if not left or loop.time() >= deadline:
            return left
        await asyncio.sleep(0.01)


def caller_timeout(delay: float) -> AbstractAsyncContextManager[object]:
    """A deadline around the caller's code: ``asyncio.timeout`` (3.11+), or an equivalent on 3.10
    (cancel the current task after ``delay``, raise ``TimeoutError`` if that cancelled it)."""
    if sys.version_info >= (3, 11):
        return asyncio.timeout(delay)
    return _Timeout310(delay)


class _Timeout310:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.fired = False
        self.handle: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> _Timeout310:
        task = asyncio.current_task()
        assert task is not None

        def fire() -> None:
            self.fired = True
            task.cancel()

        self.handle = asyncio.get_running_loop().call_later(self.delay, fire)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.handle is not None:
            self.handle.cancel()
        if self.fired and et is asyncio.CancelledError:
            raise TimeoutError from e
