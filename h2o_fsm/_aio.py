"""Small asyncio helpers of the engine: a deadline context manager for every Python we support, and
waiting for a task without ever holding back the caller's own cancellation."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

__all__ = ["expired_at", "wait_owned"]

if sys.version_info >= (3, 11):
    from asyncio import timeout_at as _timeout_at
else:  # pragma: no cover - Python 3.10
    from async_timeout import timeout_at as _timeout_at


@asynccontextmanager
async def expired_at(when: float) -> AsyncIterator[list[bool]]:
    """Bound the block by the loop-time ``when``. Yields a one-item list that is ``[True]`` after the
    block was stopped by this deadline (its ``TimeoutError`` then propagates); a cancellation from
    outside propagates unchanged."""
    fired = [False]
    cm = _timeout_at(when)
    try:
        async with cm:
            yield fired
    except asyncio.TimeoutError:  # TimeoutError since 3.11; async_timeout's class before
        fired[0] = cm.expired() if callable(cm.expired) else bool(cm.expired)
        raise


async def wait_owned(task: asyncio.Future[Any]) -> None:
    """Wait for a task the client owns. If the caller is cancelled meanwhile, the cancellation reaches
    it at once and the task goes on (the client's ``aclose()`` waits for it). Never raises the task's
    own exception: the task reports through the conversation it ends."""
    await asyncio.shield(task)
