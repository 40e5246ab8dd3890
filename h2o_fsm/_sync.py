"""``H2oSyncClient``: the async client driven from synchronous code (scripts, notebooks, threads).

A thin bridge: the client owns a private event loop running in a thread of its own; each call is
submitted to it and the caller's thread waits for the result; async iterators are bridged chunk by
chunk. So it works from any thread, several at once, and inside a running event loop (Jupyter: the
calls never touch the caller's loop). A new async method of ``H2oClient`` is one line here.

The guarantee is the async one: leaving a ``with`` block — or ``KeyboardInterrupt`` (Ctrl-C) in the
middle of a call or a stream — cancels what runs on the private loop and waits (bounded by
``Timeouts.cleanup``) for the conversation to be deleted before the exception goes on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar

from ._client import H2oClient
from ._conversation import Conversation
from ._events import FinalAnswer
from ._exceptions import H2oError, H2oStateError
from ._journal import Journal
from ._phase import Phase
from ._protocol import Messages
from ._records import StepResult, TransitionRecord
from ._sweep import SweepReport

__all__ = ["H2oSyncClient", "SyncConversation"]

T = TypeVar("T")


async def _now(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args)`` run on the private loop's thread (the engine's objects are used only there)."""
    return fn(*args, **kwargs)


async def _invoke(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``fn(*args, **kwargs)`` on the private loop, awaited if it returns an awaitable."""
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


class _Bridge:
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
        aiter = self.call(_now(make))
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


class SyncConversation:
    """A :class:`Conversation` for synchronous code; ``with`` deletes it at the end of the block."""

    def __init__(self, bridge: _Bridge, conv: Conversation) -> None:
        self._bridge, self._conv = bridge, conv

    def __repr__(self) -> str:
        return repr(self._conv).replace("<Conversation", "<SyncConversation", 1)

    # -- what the conversation is (read only: safe from any thread) ----------------------------------
    @property
    def state(self) -> Phase:
        return self._conv.state

    @property
    def conversation_id(self) -> str | None:
        return self._conv.conversation_id

    @property
    def history(self) -> tuple[TransitionRecord, ...]:
        return self._conv.history

    @property
    def final(self) -> FinalAnswer | None:
        return self._conv.final

    # -- turns -------------------------------------------------------------------------------------------
    def ask(self, prompt: str | Messages) -> str:
        return self._bridge.call(self._conv.ask(prompt))

    def stream(self, prompt: str | Messages) -> Iterator[str]:
        """The answer's chunks as they arrive; leaving the loop early deletes the conversation."""
        aiter = self._bridge.call(_now(self._conv.stream, prompt))  # the prompt is checked now
        return self._bridge.iterate(lambda: aiter)

    def open(self) -> None:
        self._bridge.call(self._conv.open())

    def close(self) -> None:
        """Delete the conversation (if created); idempotent."""
        self._bridge.call(self._conv.aclose())

    # -- the stepper ---------------------------------------------------------------------------------------
    def step(self, prompt: str | Messages | None = None) -> StepResult:
        return self._bridge.call(self._conv.step(prompt))

    def queue(self, prompt: str | Messages) -> None:
        self._bridge.call(_now(self._conv.queue, prompt))

    def next_trigger(self) -> str:
        return self._bridge.call(_now(self._conv.next_trigger))

    def describe_next(self) -> str:
        return self._bridge.call(_now(self._conv.describe_next))

    def diagram(self, fmt: str = "mermaid") -> str:
        return self._bridge.call(_now(self._conv.diagram, fmt))

    def __enter__(self) -> SyncConversation:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.close()
            return
        self._bridge.call(self._conv.__aexit__(kind, exc, tb))
        # the engine does not wait for the ending after an interruption; here the caller's thread blocks
        # anyway, so it waits; the error in flight is the story (a failed DELETE is on the conversation)
        with contextlib.suppress(H2oError):
            self._bridge.call(self._conv.aclose())


class H2oSyncClient:
    """:class:`H2oClient` for synchronous code: the same constructor arguments, blocking methods.

    ::

        with H2oSyncClient(url) as client:
            print(client.ask("Hello"))
            with client.conversation() as conv:
                for chunk in conv.stream("Tell me more"):
                    print(chunk, end="")

    Leaving the block (or ``close()``) ends every conversation and waits for their deletion, at most
    ``Timeouts.cleanup``. An ``http_client`` given here must not be used on another event loop.
    """

    def __init__(self, base_url: str | None = None, **options: Any) -> None:
        timeouts = options.get("timeouts")
        self._bridge = _Bridge(getattr(timeouts, "cleanup", 10.0))
        try:
            self._client: H2oClient = self._bridge.call(_now(H2oClient, base_url, **options))
        except BaseException:
            self._bridge.stop()
            raise
        self._bridge.cleanup = self._client.timeouts.cleanup
        # never closed (a notebook's kernel going down, a script without ``with``): at garbage collection or
        # interpreter exit the conversations are still ended and deleted, bounded by Timeouts.cleanup
        self._finalizer = weakref.finalize(self, _close, self._bridge, self._client)

    def __repr__(self) -> str:
        return repr(self._client).replace("<H2oClient", "<H2oSyncClient", 1)

    def __enter__(self) -> H2oSyncClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def client(self) -> H2oClient:
        """The async client underneath (use it only on this client's loop)."""
        return self._client

    @property
    def base_url(self) -> str:
        return self._client.base_url

    @property
    def live_conversations(self) -> int:
        return self._client.live_conversations

    @property
    def undeleted_conversations(self) -> int:
        return self._client.undeleted_conversations

    def close(self) -> None:
        """End every conversation, wait for their deletion (bounded), stop the private loop. Idempotent."""
        self._finalizer()

    # -- the client's methods: one line each --------------------------------------------------------------
    def conversation(self, model: str | None = None, **options: Any) -> SyncConversation:
        return SyncConversation(self._bridge, self._bridge.call(_now(self._client.conversation, model, **options)))

    def ask(self, messages: str | Messages, model: str | None = None, **params: object) -> str:
        return self._bridge.call(self._client.ask(messages, model, **params))

    def stream(self, messages: str | Messages, model: str | None = None, **params: object) -> Iterator[str]:
        return self._bridge.iterate(lambda: self._client.stream(messages, model, **params))

    def sweep(self, journal: Journal, *, include_live_processes: bool = False) -> SweepReport:
        return self._bridge.call(self._client.sweep(journal, include_live_processes=include_live_processes))

    def __getattr__(self, name: str) -> Any:
        """Any other public method of :class:`H2oClient`, bridged the same way: a coroutine's result is
        waited for, an async iterator becomes an iterator, a :class:`Conversation` a :class:`SyncConversation`."""
        if name.startswith("_"):
            raise AttributeError(name)
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def bridged(*args: Any, **kwargs: Any) -> Any:
            result = self._bridge.call(_invoke(attr, args, kwargs))
            if isinstance(result, Conversation):
                return SyncConversation(self._bridge, result)
            if hasattr(result, "__anext__"):
                return self._bridge.iterate(lambda: result)
            return result

        return bridged


def _close(bridge: _Bridge, client: H2oClient) -> None:
    if bridge.loop.is_closed():
        return
    try:
        bridge.call(client.aclose())
    finally:
        bridge.stop()
