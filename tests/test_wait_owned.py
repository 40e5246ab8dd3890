"""``_aio.wait_owned`` (one future + one callback instead of ``asyncio.shield``): every
semantic of the shield version, on plain asyncio tasks (no server). Orderings only, no wall clock."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

import pytest

from h2o_fsm import H2oStateError
from h2o_fsm._aio import wait_owned


class Boom(Exception):
    pass


async def _gate(ev: asyncio.Event, result: Any = None, exc: BaseException | None = None) -> Any:
    await ev.wait()
    if exc is not None:
        raise exc
    return result


def _callbacks(fut: asyncio.Future[Any]) -> int:
    return len(fut._callbacks or [])  # type: ignore[attr-defined]


async def test_a_task_that_succeeds_returns_none() -> None:
    ev = asyncio.Event()
    task = asyncio.ensure_future(_gate(ev, 42))
    waiter = asyncio.ensure_future(wait_owned(task))
    await asyncio.sleep(0)
    ev.set()
    assert await waiter is None


async def test_a_task_that_fails_raises_its_exception_and_it_is_retrieved() -> None:
    ev = asyncio.Event()
    task = asyncio.ensure_future(_gate(ev, exc=Boom("x")))
    waiter = asyncio.ensure_future(wait_owned(task))
    await asyncio.sleep(0)
    ev.set()
    with pytest.raises(Boom):
        await waiter
    assert task._log_traceback is False  # type: ignore[attr-defined]  # retrieved: no warning at GC


@pytest.mark.parametrize("outcome", ["ok", "fail", "cancelled"])
async def test_a_task_already_done(outcome: str) -> None:
    async def body() -> None:
        if outcome == "fail":
            raise Boom
        if outcome == "cancelled":
            raise asyncio.CancelledError

    task = asyncio.ensure_future(body())
    await asyncio.wait([task])
    if outcome == "ok":
        await wait_owned(task)
    elif outcome == "fail":
        with pytest.raises(Boom):
            await wait_owned(task)
    else:  # cancelled, and the caller was not: the client gave up on it
        with pytest.raises(H2oStateError):
            await wait_owned(task, {task})


async def test_a_task_the_client_cancels_is_a_state_error_for_the_caller() -> None:
    ev = asyncio.Event()
    task = asyncio.ensure_future(_gate(ev))
    waiter = asyncio.ensure_future(wait_owned(task, {task}))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(H2oStateError):
        await waiter
    assert not waiter.cancelled()


async def test_the_callers_cancellation_reaches_it_at_once_and_the_task_goes_on() -> None:
    ev = asyncio.Event()
    task = asyncio.ensure_future(_gate(ev, 1))
    waiter = asyncio.ensure_future(wait_owned(task))
    await asyncio.sleep(0)
    before = _callbacks(task)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert waiter.cancelled() and not task.done()
    assert _callbacks(task) == before - 1  # its callback is gone with it: nothing left on the task
    ev.set()
    assert await task == 1


async def test_both_at_once_the_caller_gets_its_own_cancellation() -> None:
    ev = asyncio.Event()
    task = asyncio.ensure_future(_gate(ev))
    waiter = asyncio.ensure_future(wait_owned(task, {task}))
    await asyncio.sleep(0)
    task.cancel()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert waiter.cancelled()


async def test_the_caller_cancelled_after_the_task_ended_but_before_it_resumed() -> None:
    ev = asyncio.Event()
    task = asyncio.ensure_future(_gate(ev, exc=Boom()))
    waiter = asyncio.ensure_future(wait_owned(task))
    await asyncio.sleep(0)
    # runs right after wait_owned's own callback on the task: the waiter is woken, not resumed yet
    task.add_done_callback(lambda _: waiter.cancel())
    ev.set()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    task.exception()  # (retrieved here: this case is not about retrieval)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.cancelling")
async def test_a_caller_with_a_pending_cancellation_gets_a_cancellation_for_a_cancelled_task() -> None:
    ev = asyncio.Event()
    task = asyncio.ensure_future(_gate(ev))

    async def caller() -> str:
        me = asyncio.current_task()
        assert me is not None
        me.cancel()
        with contextlib.suppress(asyncio.CancelledError):  # swallowed, not uncancelled: cancelling() stays 1
            await asyncio.sleep(0)
        try:
            await wait_owned(task)
        except asyncio.CancelledError:
            return "cancelled"
        except H2oStateError:
            return "state"
        return "none"

    c = asyncio.ensure_future(caller())
    await asyncio.sleep(0)
    task.cancel()
    assert await c == "cancelled"
