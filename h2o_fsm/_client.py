"""The native client: one ``httpx.AsyncClient`` (owned or handed in), many concurrent conversations,
and the background cleanup tasks it owns."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import httpx

from ._config import Limits, Timeouts
from ._conversation import Conversation
from ._dialects import DialectName, get_dialect
from ._exceptions import H2oStateError
from ._log import Logger, default_logger, redact
from ._model import Runtime, TransitionObserver
from ._protocol import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    Messages,
    merge_parameters,
    normalize_base_url,
    validate_model,
)
from ._requester import Requester
from ._retry import Retries
from ._session import Session
from ._tail import OneShot
from ._transport import fast_available, fast_transport, no_cookie_jar

if TYPE_CHECKING:
    from ._journal import Journal
    from ._sweep import SweepReport

__all__ = ["ClientState", "H2oClient", "TransportChoice", "default_base_url"]

TransportChoice = Literal["auto", "httpx", "aiohttp"]


def default_base_url() -> str:
    """``$H2O_FSM_BASE_URL`` when set, else the 2023 deployment's URL."""
    return os.environ.get("H2O_FSM_BASE_URL") or DEFAULT_BASE_URL


class ClientState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


def _check_proxy(proxy: object) -> str | None:
    if proxy is None:
        return None
    if not isinstance(proxy, str):
        raise TypeError(f"proxy must be a URL string or None, not {type(proxy).__name__}")
    scheme = urlsplit(proxy).scheme
    if scheme not in ("http", "https", "socks5", "socks5h"):
        raise ValueError(f"proxy must be an http(s):// or socks5:// URL, not {scheme[:10]!r}")
    return proxy


def _proxy_secrets(proxy: str | None) -> tuple[str, ...]:
    parts = urlsplit(proxy) if proxy else None
    return tuple(s for s in (parts.username, parts.password) if s) if parts else ()


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
        base_url: the deployment (``http://`` or ``https://``, no credentials in it); default:
            ``$H2O_FSM_BASE_URL``, else the 2023 H2O deployment.
        dialect: ``"h2o"`` (the 2023 protocol, default) or ``"chat-ui"`` (chat-ui since mid-2024).
        model: default model of new conversations.
        cookies: cookies to start every session with (a logged-in HuggingChat session's ``hf-chat`` and
            ``token``, say). Secret: never logged, never in an error or a repr.
        settings: post the settings step (default: the 2023 dialect does, chat-ui does not).
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
        base_url: str | None = None,
        *,
        dialect: DialectName = "h2o",
        model: str = DEFAULT_MODEL,
        cookies: Mapping[str, str] | None = None,
        settings: bool | None = None,
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
        self.base_url = normalize_base_url(default_base_url() if base_url is None else base_url)
        if urlsplit(self.base_url).username is not None:
            raise ValueError("base URL must not carry credentials (user:password@); hand them in as cookies")
        chosen_dialect = get_dialect(dialect)
        custom = transport not in (None, "auto")
        if http_client is not None and (custom or proxy is not None):
            raise ValueError("give either http_client or transport/proxy, not both")
        if isinstance(transport, str) and transport not in ("auto", "httpx", "aiohttp"):
            raise ValueError(f"transport must be 'auto', 'httpx', 'aiohttp' or a transport, not {transport!r}")
        if custom and transport != "httpx" and proxy is not None:
            raise ValueError("a custom transport handles proxies itself; give either transport or proxy")
        for name, value, expected in (("timeouts", timeouts, Timeouts), ("limits", limits, Limits),
                                      ("retries", retries, Retries)):
            if value is not None and not isinstance(value, expected):
                raise TypeError(f"{name} must be a {expected.__name__}, not {type(value).__name__}")
        if max_concurrency is not None and (
            isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1
        ):
            raise ValueError(f"max_concurrency must be an int >= 1, got {max_concurrency!r}")
        if settings is not None and not isinstance(settings, bool):
            raise TypeError(f"settings must be a bool or None, not {type(settings).__name__}")
        # validated now; every fresh session starts from a copy
        self._cookies = Session(dict(cookies) if cookies else None).cookies
        self.model = validate_model(model)
        self.dialect: DialectName = chosen_dialect.name
        self.timeouts = timeouts or Timeouts()
        self.limits = limits or Limits()
        self.retries = retries or Retries()
        self.log_content = bool(log_content)
        direct: httpx.AsyncBaseTransport | None = None  # a transport the requests may go to directly
        if http_client is not None:
            http, self._owns_http = http_client, False
        else:
            chosen: httpx.AsyncBaseTransport | None
            if transport == "aiohttp" or (transport in (None, "auto") and proxy is None and fast_available()):
                chosen = fast_transport(verify=verify, max_connections=max_connections)
            elif isinstance(transport, httpx.AsyncBaseTransport):
                chosen = transport
            else:
                chosen = None  # httpx's own, with its proxy handling (environment included)
            direct = chosen
            http = httpx.AsyncClient(
                transport=chosen,
                proxy=_check_proxy(proxy),
                verify=verify,
                follow_redirects=False,
                cookies=no_cookie_jar(),  # the sessions keep them, per conversation
                limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            )
            self._owns_http = True
        self._http = http
        requester = Requester(http, self.base_url, timeouts=self.timeouts, retries=self.retries, limits=self.limits,
                              secrets=_proxy_secrets(proxy), transport=direct)
        self._rt = Runtime(
            requester=requester,
            dialect=chosen_dialect,
            timeouts=self.timeouts,
            limits=self.limits,
            retries=self.retries,
            logger=logger if logger is not None else default_logger(),
            log_content=self.log_content,
            journal=journal,
            observer=on_transition,
            max_concurrency=max_concurrency,
            send_settings=chosen_dialect.settings_by_default if settings is None else settings,
        )
        self._share_session = share_session
        self._session = Session(self._cookies)
        self.state = ClientState.OPEN

    def __repr__(self) -> str:
        return f"<H2oClient {redact(self.base_url)} {self.dialect} live={len(self._rt.live)} {self.state.value}>"

    async def __aenter__(self) -> H2oClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def live_conversations(self) -> int:
        """Conversations started and not yet ended."""
        return len(self._rt.live)

    @property
    def undeleted_conversations(self) -> int:
        """Conversations whose DELETE failed or was given up (their ids are logged and stay in the
        journal, if there is one, for a later sweep)."""
        return self._rt.undeleted

    @property
    def tail_errors(self) -> int:
        """Answers whose stream failed after the answer was complete (the caller had it; logged, not raised)."""
        return self._rt.tail_errors

    async def aclose(self) -> None:
        """End every conversation still open (idle ones are deleted), wait for the cleanup tasks this
        client owns — at most ``Timeouts.cleanup`` — then close the pool. What is still undeleted then
        is logged and counted in :attr:`undeleted_conversations`."""
        if self.state is ClientState.CLOSED:
            return
        self.state = ClientState.CLOSED
        rt = self._rt
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeouts.cleanup
        try:
            rt.requester.interrupt()  # steps in callers' tasks fail now: those callers end their conversations
            for conv in list(rt.live):  # idle ones, and turns whose reader was abandoned mid-answer
                if isinstance(conv, Conversation):
                    conv.close_soon()
            while (rt.tasks or rt.live) and loop.time() < deadline:
                pending = set(rt.tasks)
                if pending:
                    await asyncio.wait(pending, timeout=min(0.05, deadline - loop.time()))
                else:  # an interrupted caller has yet to run its abort: let it
                    await asyncio.sleep(min(0.01, max(0.0, deadline - loop.time())))
            left = set(rt.tasks)
            for task in left:
                rt.abandoned.add(task)
                task.cancel()
            if left:
                await asyncio.wait(left, timeout=1.0)
            if rt.live or left:
                with contextlib.suppress(Exception):  # the host's log sink: never in the way of closing
                    rt.log.warning("client_closed_with_live_conversations", live=len(rt.live),
                                   undeleted=rt.undeleted)
        finally:
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

        ``parameters``/``**params`` are generation parameters merged over the defaults (the 2023
        dialect sends them; chat-ui's server takes none — its model's configuration rules).
        """
        if self.state is ClientState.CLOSED:
            raise H2oStateError("the client is closed")
        if model is not None:
            validate_model(model)
        merged = dict(parameters or {})
        merged.update(params)
        session = self._session if self._share_session and not new_session else Session(self._cookies)
        return Conversation(self._rt, model=model or self.model, parameters=merge_parameters(merged), session=session)

    async def sweep(self, journal: Journal, *, include_live_processes: bool = False) -> SweepReport:
        """Delete the conversations of this deployment that a dead process left in ``journal``."""
        from ._sweep import sweep

        return await sweep(self._rt.requester, journal, include_live_processes=include_live_processes)

    async def ask(self, messages: str | Messages, model: str | None = None, **params: object) -> str:
        """One-shot: create a conversation, send ``messages``, return the answer as soon as it is complete;
        the stream's tail and the DELETE go on in a task of this client (:meth:`aclose` waits for it)."""
        conv = self.conversation(model, parameters=params)
        scope = conv.turn(messages)  # validated before anything is sent
        async with OneShot(conv), scope as reader:
            parts = [chunk async for chunk in reader]
        return "".join(parts)

    async def stream(self, messages: str | Messages, model: str | None = None, **params: object) -> AsyncIterator[str]:
        """One-shot, streamed: yield the answer's chunks; the loop ends with the answer. The conversation
        is deleted after it (in a task of this client), on error, or when the consumer stops early."""
        conv = self.conversation(model, parameters=params)
        scope = conv.turn(messages)
        async with OneShot(conv), scope as reader:
            async for chunk in reader:
                yield chunk
