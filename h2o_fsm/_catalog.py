"""A client's requests outside any conversation: the server's models (and its default model, looked up
once per client), the session's conversations, delete-all, and which dialect the server speaks.

Method and path of each request, and the readers of the answers, come from the dialect's ``catalog``
(chat-ui's: ``_dialects/chatui/catalog``; a dialect without one has no such lists, and says so); the
detection's one request is the registry's ``PROBE``. They are sent through the client's requester (the
same headers, timeouts, retries and error translation as a conversation's steps: a GET is bounded and
retried like the ``fetch`` step, delete-all like ``delete``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Final

from ._dialects import PROBE, detected, get_dialect, with_catalog, wrong_dialect_advice
from ._exceptions import H2oDialectError, H2oProtocolError, H2oStateError, H2oStatusError
from ._listing_types import ConversationSummary, ModelInfo
from ._phase import Phase
from ._session import Session
from ._table import DELETE_OK

if TYPE_CHECKING:
    from ._dialects import Dialect
    from ._listing_types import CatalogWire, Request
    from ._log import Logger
    from ._otel import Telemetry
    from ._requester import Requester
    from ._runtime import Runtime

__all__ = [
    "DEFAULT_MAX_PAGES", "Catalog", "CatalogMethods", "ConversationSummary", "ModelInfo", "check_parameters",
]

DEFAULT_MAX_PAGES: Final = 50
"""Pages of the conversation list :meth:`Catalog.conversations` reads at most (chat-ui: 50 a page)."""

Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


class Catalog:
    """What a client asks its server outside conversations. ``spawn`` runs a task the client owns."""

    def __init__(self, requester: Requester, log: Logger, spawn: Spawn) -> None:
        self._rq, self._log, self._spawn = requester, log, spawn
        self._models: tuple[ModelInfo, ...] | None = None
        self._lookup: asyncio.Task[tuple[ModelInfo, ...]] | None = None

    def _wire(self, what: str, phase: Phase = Phase.FETCH) -> CatalogWire:
        """The catalog of the client's dialect (known: every method is called after detection); a dialect
        without one refuses before any request."""
        dialect = self._rq.dialect
        wire = None if dialect is None else dialect.catalog
        if wire is None:
            has = with_catalog()
            raise H2oStateError(f"the {dialect.name if dialect else 'undetected'} dialect has no {what}" + (
                f" ({' and '.join(has)} {'has' if len(has) == 1 else 'have'} one)" if has else ""), phase=phase)
        return wire

    async def _get(self, phase: Phase, request: Request, session: Session,
                   ok: tuple[int, ...] = (200,)) -> bytes:
        rq = self._rq
        try:
            async with rq.step(phase, None, None):
                response = await rq.call(phase, session=session, request=request, ok=ok)
                return await rq.read_body(response, phase, None)
        except H2oStatusError as exc:
            if exc.status != 404:
                raise
            # what the 404 means here, as its detail (no conversation is named: not "unknown conversation");
            # a sign of the other dialect stays an H2oDialectError, its advice in the message
            what = f"this server has no {request[1].partition('?')[0]}"
            other = exc.suggested_dialect if isinstance(exc, H2oDialectError) else ""
            err = (H2oDialectError if other else H2oStatusError)(
                f"HTTP 404 {what}" + (f" — {wrong_dialect_advice(other)}" if other else ""), detail=what,
                phase=phase, status=404, body=exc.body, retry_after=exc.retry_after, headers=exc.headers)
            if isinstance(err, H2oDialectError):
                err.suggested_dialect = other
            raise err from exc

    def _parsed(self, phase: Phase, parse: Callable[[bytes], Any], raw: bytes) -> Any:
        try:
            return parse(raw)
        except ValueError as exc:
            raise H2oProtocolError(str(exc), phase=phase, status=200) from exc

    async def models(self, session: Session) -> tuple[ModelInfo, ...]:
        """``GET /api/v2/models``: the server's models, its default first (asked each time)."""
        wire = self._wire("model list")
        return self._keep(wire, await self._get(Phase.FETCH, wire.models_request, session))

    def _keep(self, wire: CatalogWire, raw: bytes) -> tuple[ModelInfo, ...]:
        models: tuple[ModelInfo, ...] = self._parsed(Phase.FETCH, wire.parse_models, raw)
        self._models = models
        return models

    async def default_model(self, session: Session) -> str:
        """The server's default model (its first listed), looked up once per client: concurrent first
        callers share one request (a failed lookup is tried again by the next caller)."""
        if self._models is None:
            task = self._lookup
            if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
                task = self._lookup = self._spawn(self.models(session))
                # its callers were cancelled or the client closed: its failure is theirs, not asyncio's
                # "Task exception was never retrieved" at garbage collection
                task.add_done_callback(_retrieved)
            models = await asyncio.shield(task)
        else:
            models = self._models
        if not models:
            raise H2oProtocolError("the server lists no model: name one (model=...)", phase=Phase.FETCH, status=200)
        return models[0].id

    async def conversations(self, session: Session, max_pages: int = DEFAULT_MAX_PAGES) -> list[ConversationSummary]:
        """The session's conversations, newest first, from at most ``max_pages`` pages."""
        if isinstance(max_pages, bool) or not isinstance(max_pages, int) or max_pages < 1:
            raise ValueError(f"max_pages must be an int >= 1, got {max_pages!r}")
        wire = self._wire("conversation list")
        found: list[ConversationSummary] = []
        seen: set[str] = set()
        for page in range(max_pages):
            raw = await self._get(Phase.FETCH, wire.conversations_page(page), session)
            items, more = self._parsed(Phase.FETCH, wire.parse_conversation_list, raw)
            fresh = [c for c in items if c.id not in seen]  # a page that moved under us repeats some
            seen.update(c.id for c in fresh)
            found.extend(fresh)
            if not more or not items:
                break
        return found

    async def delete_all(self, session: Session) -> int | None:
        """``DELETE /api/v2/conversations``: every conversation of the session; how many, if the server says."""
        wire = self._wire("delete-all", Phase.DELETE)
        raw = await self._get(Phase.DELETE, wire.delete_all_request, session, ok=tuple(DELETE_OK))
        count: int | None = self._parsed(Phase.DELETE, wire.parse_delete_all, raw)
        with contextlib.suppress(Exception):
            self._log.info("conversations_deleted_all", count=count)
        return count

    async def detect(self, session: Session) -> str:
        """Which dialect the server speaks, from one ``GET /api/v2/models`` (no conversation created): the
        registered dialect whose ``probe`` holds the answer's status (a model list, kept: it names the
        default model → ``chat-ui``; 404/405 → ``h2o``, the 2023 server has no ``/api/v2``); a 200 that
        is not a model list, or any other failure, is raised."""
        asked = f"{PROBE[0]} {PROBE[1]}"
        try:
            raw = await self._get(Phase.FETCH, PROBE, session)
            name = detected(200)
            wire = None if name is None else get_dialect(name).catalog
            if name is None or wire is None:  # pragma: no cover - chat-ui's probe is 200, its model list
                raise H2oProtocolError(f"no registered dialect answers {asked} with a model list",
                                       phase=Phase.FETCH, status=200)
            self._keep(wire, raw)  # the model list: kept (it names the default model)
        except H2oDialectError:  # pragma: no cover - the requester has no dialect while detecting
            raise
        except H2oStatusError as exc:
            name = None if exc.status is None else detected(exc.status)
            if name is None:
                raise
            return self._detected(name, f"{asked} answered {exc.status}")
        except H2oProtocolError as exc:
            raise H2oProtocolError(f"cannot tell the server's dialect: {exc.message}; choose one (dialect=...)",
                                   phase=Phase.FETCH, status=200) from exc
        return self._detected(name, f"{asked} answered a model list")

    def _detected(self, dialect: str, reason: str) -> str:
        with contextlib.suppress(Exception):  # a failing log sink never stops the client
            self._log.info("dialect_detected", dialect=dialect, reason=reason)
        return dialect


class CatalogMethods:
    """``H2oClient``'s methods outside conversations, and its ``dialect="auto"``: detected once (the first
    ``async with``, ask, stream, sweep, models... or :meth:`detect_dialect`), before any conversation."""

    _rt: Runtime
    _runtime: functools.partial[Runtime]
    _settings: bool | None
    _catalog: Catalog
    _detected: asyncio.Lock | None  # None: the dialect is known
    _telemetry: Telemetry | None
    _cookies: dict[str, str]
    _session: Session
    dialect: str

    def _use_dialect(self, dialect: Dialect, *, detected: bool = True) -> Runtime:
        """The runtime of ``dialect`` (with ``"auto"``: built again once detected, before any conversation)."""
        rt = self._runtime(dialect=dialect, send_settings=(
            dialect.settings_by_default if self._settings is None else self._settings))
        # the client's own session: the lookup's cookie is the one its conversations then carry (a session of
        # its own would leave one more session on the server per client)
        rt.default_model = lambda: self._catalog.default_model(self._session)
        if self._telemetry is not None:  # OpenTelemetry (the otel extra) follows the runtime in use
            self._telemetry.watch(rt)
            rt.telemetry = self._telemetry
        if detected:
            rt.requester.dialect, self.dialect, self._detected = dialect, dialect.name, None
        self._rt = rt
        return rt

    async def detect_dialect(self) -> str:
        """The dialect this client speaks; with ``dialect="auto"`` detected now (once; logged as
        ``dialect_detected``): ``GET /api/v2/models`` answering a model list means chat-ui, 404/405 the
        2023 protocol. No conversation is created."""
        lock = self._detected
        if lock is not None:
            async with lock:
                if self._detected is not None:
                    name = await self._catalog.detect(self._session)
                    self._use_dialect(get_dialect(name))
        return self._rt.dialect.name

    async def _ready(self) -> None:
        if self._detected is not None:
            await self.detect_dialect()

    def _check_detected(self) -> None:
        if self._detected is not None:
            raise H2oStateError("dialect='auto' is not detected yet: use `async with H2oClient(...)` "
                                "or `await client.detect_dialect()` first")

    def _check_parameters(self, params: dict[str, object]) -> None:
        """Refuse keyword arguments the dialect does not know (a typo, or a parameter of the other dialect)."""
        check_parameters(self._rt.dialect, params)

    async def models(self) -> tuple[ModelInfo, ...]:
        """The models the server offers (chat-ui's ``GET /api/v2/models``), its default first."""
        await self._ready()
        return await self._catalog.models(self._session)

    async def list_conversations(self, *, max_pages: int = DEFAULT_MAX_PAGES) -> list[ConversationSummary]:
        """The conversations of this client's session (chat-ui's paged ``GET /api/v2/conversations``)."""
        await self._ready()
        return await self._catalog.conversations(self._session, max_pages)

    async def delete_all_conversations(self) -> int | None:
        """Delete every conversation of this client's session (chat-ui's ``DELETE /api/v2/conversations``;
        for a session that hit the usage limit); how many, when the server says."""
        await self._ready()
        return await self._catalog.delete_all(self._session)


def check_parameters(dialect: Dialect, params: Mapping[str, object], option: str | None = None) -> None:
    """A ``TypeError`` naming the parameters ``dialect`` knows when ``params`` names others (as keyword
    arguments; ``option``: as that command-line option's names)."""
    known = dialect.parameters
    unknown = sorted(name for name in params if name not in known)
    if unknown:
        takes = ", ".join(sorted(known - {"stream"})) or "none"
        what = f"{option} name" if option else "keyword argument"
        raise TypeError(f"unknown {what}{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; the "
                        f"{dialect.name} dialect's generation parameters: {takes}"
                        + ("" if option else " (a mapping given as parameters= may name others)"))


def _retrieved(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
