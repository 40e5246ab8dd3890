"""The native client: one ``httpx.AsyncClient`` (owned or handed in), many concurrent conversations."""

from __future__ import annotations

import asyncio
import enum
import functools
import importlib.util
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Literal, cast
from urllib.parse import urlsplit

import httpx

from ._config import Limits, Timeouts
from ._conversation import Conversation
from ._exceptions import H2oStateError
from ._log import Logger, default_logger, redact
from ._phase import Phase
from ._protocol import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    Messages,
    merge_parameters,
    normalize_base_url,
    prompt_text,
)
from ._records import TransitionRecord
from ._retry import Retries
from ._session import Session

if TYPE_CHECKING:
    from ._journal import Journal
    from ._sweep import SweepReport

__all__ = ["ClientState", "H2oClient", "TransitionObserver", "TransportChoice", "fast_available", "fast_transport"]

TransitionObserver = Callable[[TransitionRecord], None]


class ClientState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class _NoCookies(httpx.Cookies):
    """The cookies of a client we create: none. The session object keeps them (see ``_session``), so
    httpx's jar must neither store nor send any; and skipping its extraction saves ~12 µs a response
    (it builds urllib request objects even when there is no Set-Cookie)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None

    def set_cookie_header(self, request: httpx.Request) -> None:
        return None

    def set(self, name: str, value: str, domain: str = "", path: str = "/") -> None:
        return None


def _check_proxy(proxy: object) -> str | None:
    if proxy is None:
        return None
    if not isinstance(proxy, str):
        raise TypeError(f"proxy must be a URL string or None, not {type(proxy).__name__}")
    scheme = urlsplit(proxy).scheme
    if scheme not in ("http", "https", "socks5", "socks5h"):
        raise ValueError(f"proxy must be an http(s):// or socks5:// URL, got {redact(proxy)!r}")
    return proxy


class H2oClient:
    """Runs conversations against one chat-ui deployment over one connection pool.

    Use it as an async context manager (it closes the ``httpx.AsyncClient`` it created; a client
    you hand in stays yours)::

        async with H2oClient("http://127.0.0.1:8000") as client:
            print(await client.ask([{"role": "user", "content": "Hi"}]))
            async with client.conversation() as conv:   # several turns, deleted on exit
                print(await conv.ask("Hello"))
                print(await conv.ask("And again"))

    Args:
        base_url: the deployment (``http://`` or ``https://``).
        model: default model of new conversations.
        http_client: an ``httpx.AsyncClient`` to use; otherwise one is created (and closed by us).
        transport: for the client we create: an ``httpx.AsyncBaseTransport``, or ``"auto"`` (default:
            ``httpx-aiohttp`` when the ``fast`` extra is installed and no proxy is given, else httpx's own),
            ``"httpx"`` (httpx's own, e.g. for respx), ``"aiohttp"`` (:func:`fast_transport`).
        proxy: proxy URL for the client we create.
        verify: TLS verification for the client we create (on by default).
        timeouts, limits, retries: see :class:`Timeouts`, :class:`Limits`, :class:`Retries`.
        logger: a structlog logger; default: ``structlog.get_logger("h2o_fsm")`` if structlog is
            configured, else silent.
        log_content: also log prompts (off by default; cookies are never logged).
        max_concurrency: at most this many conversations in flight; others wait for a slot.
        max_connections: size of the pool of the client we create.
        share_session: conversations share one chat-ui session (settings are sent once per model);
            with ``False`` every conversation gets a fresh session.
        journal: a :class:`~h2o_fsm.Journal` recording live conversations for crash-safe cleanup.
        on_transition: a callback receiving every :class:`TransitionRecord` (tracing).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        model: str = DEFAULT_MODEL,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | TransportChoice | None = "auto",
        proxy: str | None = None,
        verify: bool = True,
        timeouts: Timeouts | None = None,
        limits: Limits | None = None,
        retries: Retries | None = None,
        logger: Logger | None = None,
        log_content: bool = False,
        max_concurrency: int | None = None,
        max_connections: int = 100,
        share_session: bool = True,
        journal: Journal | None = None,
        on_transition: TransitionObserver | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        if not isinstance(model, str) or not model.strip():
            raise TypeError("model must be a non-empty str")
        custom = transport not in (None, "auto")
        if http_client is not None and (custom or proxy is not None):
            raise ValueError("give either http_client or transport/proxy, not both")
        if isinstance(transport, str) and transport not in ("auto", "httpx", "aiohttp"):
            raise ValueError(f"transport must be 'auto', 'httpx', 'aiohttp' or a transport, not {transport!r}")
        if custom and transport != "httpx" and proxy is not None:
            raise ValueError("a custom transport handles proxies itself; give either transport or proxy")
        for name, value in (("timeouts", timeouts), ("limits", limits), ("retries", retries)):
            expected = {"timeouts": Timeouts, "limits": Limits, "retries": Retries}[name]
            if value is not None and not isinstance(value, expected):
                raise TypeError(f"{name} must be a {expected.__name__}, not {type(value).__name__}")
        if max_concurrency is not None and (
            isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1
        ):
            raise ValueError(f"max_concurrency must be an int >= 1, got {max_concurrency!r}")
        self.model = model
        self.timeouts = timeouts or Timeouts()
        self.limits = limits or Limits()
        self.retries = retries or Retries()
        t = self.timeouts
        # per-step httpx timeouts, built once (the deadline, when set, narrows them per request)
        self._step_timeouts = {
            phase: httpx.Timeout(step, connect=t.connect, read=t.token if phase is Phase.SEND else step)
            for phase, step in (
                (Phase.SETTINGS, t.settings),
                (Phase.CREATE, t.create),
                (Phase.SEND, t.send),
                (Phase.DELETE, t.delete),
            )
        }
        self.log_content = bool(log_content)
        self._log: Logger = logger if logger is not None else default_logger()
        self._share_session = share_session
        self._session = Session()
        self._journal = journal
        self._observer = on_transition
        self._slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._live: set[Conversation] = set()
        self._idle: asyncio.Event | None = None
        origin = self.base_url
        self._headers = {"Referer": origin + "/", "Origin": _origin(origin), "User-Agent": "h2o-fsm/0.1"}
        if http_client is not None:
            self._http = http_client
            self._owns_http = False
        else:
            chosen: httpx.AsyncBaseTransport | None
            if transport == "aiohttp" or (transport in (None, "auto") and proxy is None and fast_available()):
                chosen = fast_transport(verify=verify, max_connections=max_connections)
            elif isinstance(transport, httpx.AsyncBaseTransport):
                chosen = transport
            else:
                chosen = None  # httpx's own
            self._http = httpx.AsyncClient(
                transport=chosen,
                proxy=_check_proxy(proxy),
                verify=verify,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            )
            if isinstance(getattr(self._http, "_cookies", None), httpx.Cookies):
                self._http._cookies = _NoCookies()  # the public setter would copy it into a plain Cookies
            self._owns_http = True
        self.state = ClientState.OPEN

    def _url(self, path: str) -> httpx.URL:
        """The URL of ``path``, parsed once while recently used (httpx's parsing costs ~8 µs)."""
        return _parse_url(self.base_url + path)

    def __repr__(self) -> str:
        return f"<H2oClient {redact(self.base_url)} live={len(self._live)} {self.state.value}>"

    async def __aenter__(self) -> H2oClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def live_conversations(self) -> int:
        """Conversations started and not yet ended."""
        return len(self._live)

    async def aclose(self) -> None:
        """Wait (up to ``Timeouts.cleanup``) for running conversations to end, then close the pool."""
        if self.state is ClientState.CLOSED:
            return
        if self._live:
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=self.timeouts.cleanup)
            except asyncio.TimeoutError:
                self._log.warning("client_closed_with_live_conversations", live=len(self._live))
        self.state = ClientState.CLOSED
        if self._owns_http:
            await self._http.aclose()

    def conversation(
        self,
        model: str | None = None,
        *,
        parameters: Mapping[str, object] | None = None,
        new_session: bool = False,
        **params: object,
    ) -> Conversation:
        """A new conversation (nothing is sent until its first step or turn).

        ``parameters``/``**params`` are generation parameters merged over the defaults.
        """
        if self.state is ClientState.CLOSED:
            raise H2oStateError("the client is closed")
        if model is not None and not isinstance(model, str):
            raise TypeError(f"model must be a str, not {type(model).__name__}")
        merged = dict(parameters or {})
        merged.update(params)
        session = self._session if self._share_session and not new_session else Session()
        conv = Conversation(
            self,
            model=model or self.model,
            parameters=merge_parameters(merged),
            session=session,
            logger=self._log,
        )
        return conv

    def _conversation_started(self, conv: Conversation) -> None:
        self._live.add(conv)

    def _conversation_ended(self, conv: Conversation) -> None:
        self._live.discard(conv)
        if not self._live and self._idle is not None:
            self._idle.set()

    async def sweep(self, journal: Journal, *, include_live_processes: bool = False) -> SweepReport:
        """Delete the conversations of this deployment that a dead process left in ``journal``."""
        from ._sweep import sweep

        return await sweep(self, journal, include_live_processes=include_live_processes)

    async def ask(self, messages: str | Messages, model: str | None = None, **params: object) -> str:
        """One-shot: create a conversation, send ``messages``, return the answer, delete it."""
        text = prompt_text(messages)
        async with self.conversation(model, parameters=params) as conv:
            return await conv.ask(text)

    async def stream(self, messages: str | Messages, model: str | None = None, **params: object) -> AsyncIterator[str]:
        """One-shot, streamed: yield the answer's chunks; the conversation is deleted at the end,
        on error, or when the consumer stops early."""
        text = prompt_text(messages)
        # the turn's scope directly, not conv.stream(): one generator layer less per token
        async with self.conversation(model, parameters=params) as conv, conv._turn_scope(text) as reader:
            async for chunk in reader:
                yield chunk


TransportChoice = Literal["auto", "httpx", "aiohttp"]


def fast_available() -> bool:
    """Whether the ``fast`` extra (``httpx-aiohttp``) is installed."""
    return importlib.util.find_spec("httpx_aiohttp") is not None


def fast_transport(*, verify: bool = True, max_connections: int = 100) -> httpx.AsyncBaseTransport:
    """An ``httpx-aiohttp`` transport (the ``fast`` extra): about 40 % less client CPU per conversation
    than httpx's own transport (``benchmarks/run.py``). Its aiohttp session keeps no cookies (ours
    does), like the httpx clients we create."""
    try:
        import aiohttp
        from httpx_aiohttp import AiohttpTransport
    except ImportError as exc:
        raise ImportError("fast_transport() needs the 'fast' extra: pip install 'h2o-fsm[fast]'") from exc
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)

    def session() -> aiohttp.ClientSession:
        # the transport's own SSL context (built once, ~19 ms): the one its checks report is the one used
        connector = aiohttp.TCPConnector(limit=max_connections, ssl=transport.ssl_context, keepalive_timeout=5.0)
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    transport = AiohttpTransport(verify=verify, limits=limits, client=session)
    return cast("httpx.AsyncBaseTransport", transport)


@functools.lru_cache(maxsize=1024)
def _parse_url(url: str) -> httpx.URL:
    # Bounded: the fixed paths stay, and a conversation's own path is reused by its send and delete.
    return httpx.URL(url)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
