"""The native client: one ``httpx.AsyncClient`` (owned or handed in), many concurrent conversations,
and the background cleanup tasks it owns."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

import httpx

from ._catalog import Catalog, CatalogMethods
from ._client_journal import JournalClientPart
from ._config import Limits, Timeouts
from ._conversation import Conversation
from ._dialects import AUTO, DEFAULT_DIALECT, get_dialect
from ._dialects import chosen as named_dialect
from ._exceptions import H2oStateError
from ._journal_lease import JournalValue, open_journal
from ._log import Logger, default_logger, redact
from ._network import Verify, check_headers, proxy_secrets
from ._options import base_url_of, check_options, default_base_url
from ._otel import telemetry_for
from ._pool import TransportChoice, check_reach, open_pool
from ._protocol import Messages, merge_parameters, validate_model
from ._requester import Requester
from ._retry import Retries
from ._runtime import Runtime, TransitionObserver
from ._session import Session
from ._turn import OneShot

__all__ = ["ClientState", "DialectChoice", "H2oClient", "TransportChoice", "default_base_url"]

DialectChoice = Literal["auto", "h2o", "chat-ui"]


class ClientState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class H2oClient(CatalogMethods, JournalClientPart):
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
            ``$H2O_FSM_BASE_URL`` (neither is a ``ValueError``: no host is guessed).
        dialect: ``"h2o"`` (the 2023 protocol, default), ``"chat-ui"`` (chat-ui since mid-2024), the name
            of a dialect registered with ``h2o_fsm._dialects.register``, or ``"auto"`` (detected once, by
            ``async with`` or :meth:`detect_dialect`; see the README).
        model: default model of new conversations (default: the dialect's — chat-ui: the server's
            default model, its first listed, looked up once per client).
        cookies: cookies to start every session with (a logged-in HuggingChat session's ``hf-chat`` and
            ``token``, say). Secret: never logged, never in an error or a repr.
        settings: post the settings step (default: the 2023 dialect does, chat-ui does not).
        http_client: an ``httpx.AsyncClient`` to use; otherwise one is created (and closed by us).
        transport: for the client we create: an ``httpx.AsyncBaseTransport``, or ``"auto"`` (default: the
            aiohttp transport, :func:`fast_transport`; httpx's own for a socks5:// proxy), ``"httpx"``
            (httpx's own, e.g. for respx), ``"aiohttp"``.
        proxy: an http(s):// (or, on httpx's transport, socks5://) proxy URL for the client we create;
            its credentials are sent, never shown.
        trust_env: without ``proxy``, take it from ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``/``NO_PROXY``
            (either case), and CA certificates from ``SSL_CERT_FILE``/``SSL_CERT_DIR``, as httpx does.
        verify: TLS verification: ``True`` (default), ``False``, a CA bundle file/directory or an
            ``ssl.SSLContext``.
        headers: extra headers for every request (they replace ours of the same name, such as the
            default ``User-Agent: h2o-fsm/<version>``); never logged.
        timeouts, limits, retries: see :class:`Timeouts`, :class:`Limits`, :class:`Retries`.
        logger: a structlog logger; default: ``structlog.get_logger("h2o_fsm")`` if structlog is
            configured, else silent.
        log_content: also log prompts (off by default; cookies are never logged).
        max_concurrency: at most this many conversations in flight; others wait for a slot.
        max_connections: size of the pool of the client we create.
        share_session: conversations share one chat-ui session (settings are sent once per model);
            with ``False`` every conversation gets a fresh session.
        journal: where live conversations are recorded for crash-safe cleanup: a :class:`~h2o_fsm.Journal`,
            :class:`~h2o_fsm.RedisJournal` or :class:`~h2o_fsm.PostgresJournal`, a file path (SQLite), or a
            ``redis://``/``rediss://``/``postgresql://`` URL.
        background_sweep: with a journal, sweep what dead owners left, at start and every lease period.
        on_transition: a callback receiving every :class:`TransitionRecord` (tracing).
        tracer_provider, meter_provider: OpenTelemetry providers (the ``otel`` extra); by default the
            global ones once the application imported OpenTelemetry (see ``h2o_fsm._otel``).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        dialect: DialectChoice | str = DEFAULT_DIALECT,
        model: str | None = None,
        cookies: Mapping[str, str] | None = None,
        settings: bool | None = None,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | TransportChoice | None = "auto",
        proxy: str | None = None,
        verify: Verify = True,
        headers: Mapping[str, str] | None = None,
        trust_env: bool = True,
        timeouts: Timeouts | None = None,
        limits: Limits | None = None,
        retries: Retries | None = None,
        logger: Logger | None = None,
        log_content: bool = False,
        max_concurrency: int | None = None,
        max_connections: int = 100,
        share_session: bool = True,
        journal: JournalValue = None,
        on_transition: TransitionObserver | None = None,
        background_sweep: bool = True,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        self.base_url = base_url_of(base_url)
        named = named_dialect(dialect)
        auto = named is None
        chosen_dialect = named or get_dialect(DEFAULT_DIALECT)  # with "auto": replaced once detected
        check_options(http_client=http_client, transport=transport, proxy=proxy, timeouts=timeouts, limits=limits,
                      retries=retries, max_concurrency=max_concurrency, settings=settings)
        # validated now; every fresh session starts from a copy
        self._cookies = Session(dict(cookies) if cookies else None).cookies
        self.model = None if model is None else validate_model(model)
        self.dialect: str = AUTO if auto else chosen_dialect.name
        self.timeouts = timeouts or Timeouts()
        self.limits = limits or Limits()
        self.retries = retries or Retries()
        self.log_content = bool(log_content)
        extra_headers = check_headers(headers)
        via, tls = check_reach(self.base_url, transport=transport, proxy=proxy, http_client=http_client,
                               verify=verify, trust_env=trust_env)
        store, owned = open_journal(journal)  # after every check, before the pool: a bad value leaves nothing open
        http, self._owns_http, direct = open_pool(http_client, transport, proxy=proxy, via=via, tls=tls,
                                                  trust_env=trust_env, max_connections=max_connections)
        self._http = http
        requester = Requester(http, self.base_url, timeouts=self.timeouts, retries=self.retries, limits=self.limits,
                              secrets=proxy_secrets(via), transport=direct, headers=extra_headers)
        log = logger if logger is not None else default_logger()
        self._runtime = functools.partial(
            Runtime,
            requester=requester,
            timeouts=self.timeouts,
            limits=self.limits,
            logger=log,
            log_content=self.log_content,
            journal=self._own_journal(store, owned=owned, logger=log, background=background_sweep),
            observer=on_transition,
            max_concurrency=max_concurrency,
        )
        self._settings = settings
        self._telemetry = telemetry_for(tracer_provider, meter_provider, base_url=self.base_url,
                                        log_content=self.log_content)  # (the otel extra; see _otel)
        self._catalog = Catalog(requester, log,
                                lambda coro: self._rt.spawn(coro))  # noqa: PLW0108 - the runtime may be rebuilt
        self._detected: asyncio.Lock | None = asyncio.Lock() if auto else None
        self._rt = self._use_dialect(chosen_dialect, detected=not auto)
        self._share_session = share_session
        self._session = Session(self._cookies)
        self.state = ClientState.OPEN

    def __repr__(self) -> str:
        return f"<H2oClient {redact(self.base_url)} {self.dialect} live={len(self._rt.live)} {self.state.value}>"

    async def __aenter__(self) -> H2oClient:
        try:
            await self._ready()  # dialect="auto": the detection may fail (nothing listens, say)
            self._start_journal()
        except BaseException:  # no __aexit__ follows a failed __aenter__: close the pool here
            await self.aclose()
            raise
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
            await self._stop_journal()
            rt.requester.interrupt()  # steps in callers' tasks fail now: those callers end their conversations
            for live in list(rt.live):  # idle ones, and turns whose reader was abandoned mid-answer
                live.close_soon()
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
            await self._close_journal()
            if self._owns_http:
                await self._http.aclose()

    def conversation(
        self,
        model: str | None = None,
        *,
        parameters: Mapping[str, object] | None = None,
        new_session: bool = False,
        conversation_id: str | None = None,
        **params: object,
    ) -> Conversation:
        """A new conversation (nothing is sent until its first step or turn); with ``conversation_id``, one
        on the server (attached: continued, and deleted at its end unless :meth:`Conversation.detach`).

        ``parameters``/``**params``: generation parameters over the defaults (the 2023 dialect sends them;
        chat-ui takes none). A keyword argument the dialect does not know is a ``TypeError``.
        """
        if self.state is ClientState.CLOSED:
            raise H2oStateError("the client is closed")
        self._check_detected()
        self._check_parameters(params)
        self._start_journal()
        if model is not None:
            validate_model(model)
        merged = dict(parameters or {})
        merged.update(params)
        session = self._session if self._share_session and not new_session else Session(self._cookies)
        chosen = model or self.model or self._rt.dialect.default_model or ""  # "": the server's, looked up
        conv = Conversation(self._rt, model=chosen, parameters=merge_parameters(merged), session=session)
        if conversation_id is not None:
            conv.attach(conversation_id)
        return conv

    async def ask(self, messages: str | Messages, model: str | None = None, **params: object) -> str:
        """One-shot: create a conversation, send ``messages``, return the answer as soon as it is complete;
        the stream's tail and the DELETE go on in a task of this client (:meth:`aclose` waits for it)."""
        await self._ready()
        self._check_parameters(params)
        conv = self.conversation(model, parameters=params)
        scope = conv.turn(messages)  # validated before anything is sent
        async with OneShot(conv), scope as reader:
            parts = [chunk async for chunk in reader]
        return "".join(parts)

    async def stream(self, messages: str | Messages, model: str | None = None, **params: object) -> AsyncIterator[str]:
        """One-shot, streamed: yield the answer's chunks; the loop ends with the answer. The conversation
        is deleted after it (in a task of this client), on error, or when the consumer stops early."""
        await self._ready()
        self._check_parameters(params)
        conv = self.conversation(model, parameters=params)
        scope = conv.turn(messages)
        async with OneShot(conv), scope as reader:
            async for chunk in reader:
                yield chunk
