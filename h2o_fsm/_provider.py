"""``H2o``: the deprecated provider's public API, running on the state machine.

Same class attributes and classmethods as the old g4f provider, so existing callers keep working::

    async for chunk in H2o.create_async_generator(model, messages, proxy, temperature=0.5):
        print(chunk, end="")

What changed underneath: every created conversation is deleted whatever happens, statuses are
checked, the stream is parsed properly, and one ``httpx.AsyncClient`` is reused per event loop (and
per proxy/base URL) instead of a new session per call. That client is closed when the loop shuts its
async generators down (``asyncio.run`` does) or by ``await H2o.aclose()``.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Generator
from typing import ClassVar, TypeVar

from ._client import H2oClient, default_base_url
from ._protocol import DEFAULT_MODEL, Messages, normalize_base_url, prompt_text

__all__ = ["H2o"]

T = TypeVar("T")

_Key = tuple[str, "str | None", str]


class _LoopClients:
    """The clients of one event loop, closed by the loop's async-generator shutdown."""

    def __init__(self) -> None:
        self.clients: dict[_Key, H2oClient] = {}
        self.closer: AsyncGenerator[None, None] | None = None

    async def aclose(self) -> None:
        clients, self.clients = list(self.clients.values()), {}
        for client in clients:
            await client.aclose()


_REGISTRY: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClients] = weakref.WeakKeyDictionary()


async def _closer(entry: _LoopClients) -> AsyncGenerator[None, None]:
    # Registered with the loop's asyncgen hooks: ``loop.shutdown_asyncgens()`` closes it.
    try:
        yield
    finally:
        await entry.aclose()


async def _client_for(url: str, proxy: str | None, dialect: str) -> H2oClient:
    loop = asyncio.get_running_loop()
    entry = _REGISTRY.get(loop)
    if entry is None:
        entry = _REGISTRY[loop] = _LoopClients()
        entry.closer = _closer(entry)
        await entry.closer.__anext__()
    key = (url, proxy, dialect)
    client = entry.clients.get(key)
    if client is None:
        client = entry.clients[key] = H2oClient(url, proxy=proxy, dialect=dialect)
    await client.detect_dialect()  # dialect="auto": detected once per client (a no-op after)
    return client


class H2o:
    """The old provider's API. Assign ``H2o.url`` to use another deployment, ``H2o.dialect`` (``"h2o"``, the
    2023 protocol, by default; ``"chat-ui"``, or ``"auto"``: detected) for a server of today's chat-ui."""

    url: ClassVar[str] = default_base_url()
    dialect: ClassVar[str] = "h2o"
    model: ClassVar[str] = DEFAULT_MODEL
    working: ClassVar[bool] = True
    supports_stream: ClassVar[bool] = True
    supports_message_history: ClassVar[bool] = True

    @classmethod
    async def create_async_generator(
        cls,
        model: str,
        messages: Messages,
        proxy: str | None = None,
        **kwargs: object,
    ) -> AsyncIterator[str]:
        """Yield the answer's text chunks. ``model`` empty → the default; ``kwargs`` are generation
        parameters merged over the defaults (``stream`` is ignored); ``proxy`` goes to httpx."""
        url = normalize_base_url(cls.url)
        if model is not None and not isinstance(model, str):
            raise TypeError(f"model must be a str, not {type(model).__name__}")
        prompt_text(messages)  # refused before any request
        client = await _client_for(url, proxy, cls.dialect)
        conv = client.conversation(model or cls.model, parameters=kwargs)
        async with conv, conv.turn(messages) as reader:  # the turn's scope: one generator layer less per token
            async for chunk in reader:
                yield chunk

    @classmethod
    async def create_async(cls, model: str, messages: Messages, **kwargs: object) -> str:
        """The whole answer as one string."""
        kwargs.pop("stream", None)
        parts = [chunk async for chunk in cls.create_async_generator(model, messages, **kwargs)]  # type: ignore[arg-type]
        return "".join(parts)

    @classmethod
    def create_completion(
        cls, model: str, messages: Messages, stream: bool = True, **kwargs: object
    ) -> Generator[str, None, None]:
        """Synchronous generator: the chunks (``stream=True``) or the whole answer at once.

        Runs on a private event loop in a background thread, so its client is reused across calls.
        Closing the generator early deletes the conversation before ``close()`` returns.
        """
        runner = _SyncRunner.get()
        if not stream:
            yield runner.run(cls.create_async(model, messages, **kwargs))
            return
        it = cls.create_async_generator(model, messages, **kwargs).__aiter__()  # type: ignore[arg-type]
        try:
            while True:
                try:
                    chunk = runner.run(_anext(it))
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            runner.run(_aclose(it))

    @classmethod
    async def aclose(cls) -> None:
        """Close the clients this event loop uses for the classmethods (optional: loop shutdown does it)."""
        entry = _REGISTRY.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry.aclose()
            if entry.closer is not None:
                await entry.closer.aclose()


async def _anext(it: AsyncIterator[str]) -> str:
    return await it.__anext__()


async def _aclose(it: AsyncIterator[str]) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        await aclose()


class _SyncRunner:
    """One event loop in a daemon thread for the synchronous API."""

    _instance: ClassVar[_SyncRunner | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="h2o-fsm-sync", daemon=True)
        self.thread.start()
        atexit.register(self.close)

    @classmethod
    def get(cls) -> _SyncRunner:
        with cls._lock:
            if cls._instance is None:
                cls._instance = _SyncRunner()
            return cls._instance

    def close(self, timeout: float = 10.0) -> None:
        """Close this loop's clients and stop the thread (registered with ``atexit``)."""
        if not self.loop.is_running():
            return
        try:
            asyncio.run_coroutine_threadsafe(H2o.aclose(), self.loop).result(timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout)
            self.loop.close()
            with _SyncRunner._lock:
                if _SyncRunner._instance is self:
                    _SyncRunner._instance = None

    def run(self, coro: Coroutine[object, object, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()
