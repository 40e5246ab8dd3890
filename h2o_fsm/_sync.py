"""``H2oSyncClient``: the async client driven from synchronous code (scripts, notebooks, threads).

A thin bridge: the client owns a private event loop running in a thread of its own; each call is
submitted to it and the caller's thread waits for the result; async iterators are bridged chunk by
chunk. So it works from any thread, several at once, and inside a running event loop (Jupyter: the
calls never touch the caller's loop). A new method of ``H2oClient`` needs no line here (``__getattr__``).

The guarantee is the async one: leaving a ``with`` block — or ``KeyboardInterrupt`` (Ctrl-C) in the
middle of a call or a stream — cancels what runs on the private loop and waits (bounded by
``Timeouts.cleanup``) for the conversation to be deleted before the exception goes on.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from ._bridge import Bridge, invoke, now
from ._client import H2oClient
from ._conversation import Conversation
from ._events import FinalAnswer
from ._exceptions import H2oError
from ._journal import Journal
from ._phase import Phase
from ._protocol import Messages
from ._records import StepResult, TransitionRecord
from ._sweep import SweepReport

__all__ = ["H2oSyncClient", "SyncConversation"]


class SyncConversation:
    """A :class:`Conversation` for synchronous code; ``with`` deletes it at the end of the block."""

    def __init__(self, bridge: Bridge, conv: Conversation) -> None:
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
        aiter = self._bridge.call(now(self._conv.stream, prompt))  # the prompt is checked now
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
        self._bridge.call(now(self._conv.queue, prompt))

    def next_trigger(self) -> str:
        return self._bridge.call(now(self._conv.next_trigger))

    def describe_next(self) -> str:
        return self._bridge.call(now(self._conv.describe_next))

    def diagram(self, fmt: str = "mermaid") -> str:
        return self._bridge.call(now(self._conv.diagram, fmt))

    def __getattr__(self, name: str) -> Any:
        """Any other public method or attribute of :class:`Conversation`, bridged."""
        if name.startswith("_"):
            raise AttributeError(name)
        return _bridged(self._bridge, getattr(self._conv, name))

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
        self._bridge = Bridge(getattr(timeouts, "cleanup", 10.0))
        try:
            self._client: H2oClient = self._bridge.call(now(H2oClient, base_url, **options))
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
        self.detect_dialect()  # as ``async with H2oClient(...)``: dialect="auto" is detected here
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

    @property
    def tail_errors(self) -> int:
        return self._client.tail_errors

    def close(self) -> None:
        """End every conversation, wait for their deletion (bounded), stop the private loop. Idempotent."""
        self._finalizer()

    # -- the client's methods: one line each --------------------------------------------------------------
    def detect_dialect(self) -> str:
        """The dialect spoken; with ``dialect="auto"`` detected now (once), see :meth:`H2oClient.detect_dialect`."""
        return self._bridge.call(self._client.detect_dialect())

    def conversation(self, model: str | None = None, **options: Any) -> SyncConversation:
        self.detect_dialect()  # without ``with``: dialect="auto" detected first (once; a no-op after)
        return SyncConversation(self._bridge, self._bridge.call(now(self._client.conversation, model, **options)))

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
        return _bridged(self._bridge, getattr(self._client, name))


def _bridged(bridge: Bridge, attr: Any) -> Any:
    """``attr`` of the async object for sync callers (see ``H2oSyncClient.__getattr__``)."""
    if not callable(attr):
        return attr

    def call(*args: Any, **kwargs: Any) -> Any:
        result = bridge.call(invoke(attr, args, kwargs))
        if isinstance(result, Conversation):
            return SyncConversation(bridge, result)
        if hasattr(result, "__anext__"):
            return bridge.iterate(lambda: result)
        return result

    return call


def _close(bridge: Bridge, client: H2oClient) -> None:
    if bridge.loop.is_closed():
        return
    try:
        bridge.call(client.aclose())
    finally:
        bridge.stop()
