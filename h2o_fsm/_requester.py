"""The HTTP requester: builds each request, sends it, bounds its step and retries it by the table's
policy; every lower-level error goes through ``_translate`` on its way out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httpx

from . import _refusals as refusals
from ._aio import Deadline
from ._config import Limits, Timeouts
from ._dialects import Body, Dialect
from ._exceptions import (
    H2oError,
    H2oLimitError,
    H2oStateError,
    H2oTimeoutError,
)
from ._hints import status_hint
from ._json import dumps
from ._log import scrub, shown_headers
from ._network import PLAIN_PATH, parse_url, plain_prefix, url_text
from ._phase import Phase
from ._retry import Retries, retry_after_failure
from ._session import Session
from ._step_bound import StepBound
from ._table import SPEC, request_of
from ._table import seconds as seconds_of
from ._translate import translate, translated
from ._transport import GAP_EXTENSION, FastTransport, raw_chunks
from ._version import VERSION

__all__ = ["Requester"]


class Requester:
    """Sends the requests of one deployment over one ``httpx.AsyncClient``. Shared by all conversations
    of a client (and by the sweep); holds no per-conversation state."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        timeouts: Timeouts,
        retries: Retries,
        limits: Limits,
        secrets: tuple[str, ...] = (),
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.http = http
        # With a transport we built (or were handed), requests go to it directly, through its public
        # ``handle_async_request``: the client's cookie jar, auth and redirect layers have nothing to do
        # here (the session keeps the cookies, redirects are not followed). The second send path, kept
        # for a handed-in ``http_client`` only, because it costs: the same aiohttp transport through
        # ``http.send`` takes ~1.4-1.5x the client CPU of the direct path (``FastTransport.send``) at 500 and
        # 1,000 concurrent conversations (benchmarks/concurrency.py, "via http_client.send", same run).
        self.transport = transport
        self.fast = transport if isinstance(transport, FastTransport) else None  # takes our headers as they are
        self.base_url = base_url
        self.prefix = plain_prefix(base_url)
        self.timeouts = timeouts
        self.retries = retries
        self.limits = limits
        self.secrets = secrets  # e.g. the proxy's credentials: never in an error's text
        parts = urlsplit(base_url)
        ours = {"Referer": base_url + "/", "Origin": f"{parts.scheme}://{parts.netloc}",
                "User-Agent": f"h2o-fsm/{VERSION}"}
        theirs = {name.lower() for name in headers or {}}  # the caller's win, whatever their case
        self.headers = {**{k: v for k, v in ours.items() if k.lower() not in theirs}, **(headers or {})}
        self.accept_json = "accept" not in theirs  # chat-ui's errors as JSON, unless the caller chose an Accept
        self.step_seconds = {s.phase: seconds_of(timeouts, s.timeout) for s in SPEC.values() if s.timeout}
        self.http_timeouts = {
            phase: httpx.Timeout(
                t, connect=min(timeouts.connect, t), read=seconds_of(timeouts, gap) if (gap := SPEC[phase].gap) else t
            )
            for phase, t in self.step_seconds.items()
        }
        # The direct path: no pool, head or read timer of the transport's, because every request of ours
        # runs in its step's bound (``StepBound``: the same seconds, started earlier); a token gap bounds each
        # wait between reads of the body, with one timer a body (GAP_EXTENSION), not one a socket read.
        self.extensions: dict[Phase, dict[str, object]] = {}
        for phase, t in self.http_timeouts.items():
            ext = self.extensions[phase] = {"timeout": {**t.as_dict(), "pool": None, "read": None}}
            if SPEC[phase].gap:
                ext[GAP_EXTENSION] = t.read
        self.active: set[Deadline] = set()  # the bounds of the steps in flight
        self.dialect: Dialect | None = None  # whose answers tell a server of another dialect (``_refusals``)
        self.closing = False

    def url(self, path: str) -> httpx.URL:
        return parse_url(self.base_url + path)

    def url_text(self, path: str) -> str:
        """``str(self.url(path))``; for a path of plain segments (the table's, an id in them) without
        parsing it again: httpx leaves such segments as they are after the normalised base URL."""
        if self.prefix is not None and PLAIN_PATH.fullmatch(path):
            return self.prefix + path
        return url_text(self.base_url + path)

    def step(self, phase: Phase, deadline: float | None, cid: str | None) -> StepBound:
        """Bound a whole step (wall clock) by its table timeout and ``deadline`` (loop time), and let
        :meth:`interrupt` end it when the client closes."""
        return StepBound(self, phase, deadline, cid)

    def refuse_late(self, phase: Phase, deadline: float | None, cid: str | None) -> None:
        """Refuse to start a turn's step after its deadline or while the client closes."""
        if self.closing and not SPEC[phase].cleanup:
            raise H2oStateError("the client is closing", phase=phase, conversation_id=cid)
        if deadline is not None and deadline <= asyncio.get_running_loop().time():
            raise H2oTimeoutError("the conversation's deadline passed", phase=phase, conversation_id=cid,
                                  not_sent=True, timeout="deadline")

    def interrupt(self) -> None:
        """End every step in flight in a caller's task now: they fail with ``H2oStateError`` (the client
        is closing); the steps in tasks the client owns (create, stop, delete) go on."""
        self.closing = True
        for bound in list(self.active):
            bound.interrupt()

    async def call(
        self,
        phase: Phase,
        *,
        session: Session,
        body: Body = Body(),  # noqa: B008 - an immutable NamedTuple
        ok: Collection[int] = (200,),
        cid: str | None = None,
        budget: float | None = None,
        each: bool = False,
        request: tuple[str, str] | None = None,
        query: str = "",
        headers: dict[str, str] | None = None,
        on_retry: Callable[[], None] | None = None,
    ) -> httpx.Response:
        """Send ``phase``'s request (its method and path from the table, ``cid`` filled in), retried by the
        table's policy; return the streamed response (the caller reads and closes it). A status outside
        ``ok`` raises ``H2oStatusError``.

        ``budget``: retry until these seconds are spent instead of counting attempts; ``each``: bound
        each attempt by the step's timeout (the DELETE, whose whole is bounded by its budget);
        ``request``: method and path of a request outside the table (chat-ui's model list, say), sent
        with ``phase``'s timeouts and retry policy; ``query`` (``"?..."``) and ``headers`` are added to the
        request (chat-ui's reattach); ``on_retry`` is called before each repeated attempt (the count on the
        transition's record)."""

        method, path = request or request_of(phase, cid)
        path += query
        try:  # the first attempt awaited here: no closure, no frame more per resume (see _retried)
            if not each:
                return await self._once(phase, method, path, session=session, body=body, ok=ok, cid=cid, extra=headers)
            async with self.step(phase, None, cid):
                return await self._once(phase, method, path, session=session, body=body, ok=ok, cid=cid, extra=headers)
        except H2oError as first:
            kw = {"session": session, "body": body, "ok": ok, "cid": cid, "extra": headers}
            return await self._retried(first, phase, method, path, kw, budget=budget, each=each, on_retry=on_retry)

    async def _retried(self, first: H2oError, phase: Phase, method: str, path: str, kw: dict[str, Any], *,
                       budget: float | None, each: bool, on_retry: Callable[[], None] | None) -> httpx.Response:
        """The attempts after a failed first one, by the table's retry policy (``kw``: ``_once``'s)."""

        async def again() -> httpx.Response:
            if on_retry is not None:
                on_retry()
            if not each:
                return await self._once(phase, method, path, **kw)
            async with self.step(phase, None, cid=kw["cid"]):
                return await self._once(phase, method, path, **kw)

        return await retry_after_failure(again, phase, SPEC[phase].idempotent, self.retries, first, budget=budget)

    async def _once(
        self,
        phase: Phase,
        method: str,
        path: str,
        *,
        session: Session,
        body: Body,
        ok: Collection[int],
        cid: str | None,
        extra: dict[str, str] | None = None,
    ) -> httpx.Response:
        headers = dict(self.headers)
        if phase is not Phase.SEND and self.accept_json:  # JSON errors, not an HTML page (chat-ui negotiates)
            headers["Accept"] = "application/json"
        if extra is not None:  # the step's own (the reattach stream's Accept and Last-Event-ID)
            headers.update(extra)
        cookie = session.cookie_header
        if cookie is not None:
            headers["Cookie"] = cookie
        content: bytes | None = None
        if body.json is not None:  # encoded here (orjson when installed), not by httpx's slower json.dumps
            headers["Content-Type"] = "application/json"
            content = dumps(body.json)
        transport = self.transport
        try:  # translated(phase, cid), without a generator-based context manager per request
            if self.fast is not None and body.form is None and body.files is None:  # no httpx.Request made
                response = await self.fast.send(method, self.url_text(path), headers, content, self.extensions[phase])
            elif transport is not None:  # a transport of ours: straight to it (see __init__)
                request = httpx.Request(method, self.url(path), content=content, data=body.form, files=body.files,
                                        headers=headers, extensions=self.extensions[phase])
                response = await transport.handle_async_request(request)
                response.request = request
            else:
                http = self.http
                request = http.build_request(method, self.url(path), content=content, data=body.form,
                                             files=body.files, headers=headers, timeout=self.http_timeouts[phase])
                response = await http.send(request, stream=True)
        except (H2oError, StopAsyncIteration):
            raise
        except Exception as exc:
            raise translate(exc, phase, cid) from exc
        session.established = True
        try:
            if session.update(response):  # the server replaced our session: its settings are gone too
                session.settings_model = None
        except Exception:  # a cookie we cannot take is dropped, never a failure of the step
            pass
        if response.status_code not in ok:
            await self.status_error(response, phase, cid, session)
        return response

    async def snippet(self, response: httpx.Response, limit: int, session: Session) -> str:
        """The first ``limit`` bytes of an answer's body as text, without our secrets; the body is closed
        however this ends (a stalled body must not keep its pooled connection)."""
        try:
            raw = await self.read_up_to(response, limit)
        finally:
            await response.aclose()
        return scrub(raw.decode("utf-8", "replace").strip(), (*self.secrets, *session.cookies.values()))

    async def status_error(self, response: httpx.Response, phase: Phase, cid: str | None, session: Session) -> NoReturn:
        status = response.status_code
        limit = 0 if status == 407 else self.limits.max_error_body_bytes  # a proxy's page may echo our credentials
        text = await self.snippet(response, limit, session)
        hint = status_hint(phase, status, conversation=cid is not None) or response.reason_phrase
        raise refusals.status_error(
            self.dialect, status, hint + (f": {text[:200]}" if text else ""),
            phase=phase, conversation_id=cid, body=text, retry_after=_retry_after(response),
            headers=shown_headers(response.headers, lambda v: scrub(v, (*self.secrets, *session.cookies.values()))),
        )

    async def read_up_to(self, response: httpx.Response, limit: int) -> bytes:
        """At most ``limit`` bytes of the body (an error while reading just ends it). Does not close it."""
        buf = bytearray()
        if limit <= 0:
            return b""
        chunks = raw_chunks(response)
        try:  # aclosing(chunks), inline
            try:
                async for chunk in chunks:
                    buf += chunk
                    if len(buf) >= limit:
                        break
            finally:
                await chunks.aclose()
        except Exception:
            pass
        return bytes(buf[:limit])

    async def read_body(self, response: httpx.Response, phase: Phase, cid: str | None) -> bytes:
        """The whole (small, JSON) body of an answer, bounded by ``Limits.max_json_body_bytes``; closes it."""
        limit = self.limits.max_json_body_bytes
        buf = bytearray()
        try:
            with translated(phase, cid, response.status_code, f"{phase.value} answer"):
                async for chunk in raw_chunks(response):
                    buf += chunk
                    if len(buf) > limit:
                        raise H2oLimitError(f"answer larger than {limit} bytes", phase=phase,
                                            status=response.status_code, conversation_id=cid)
        finally:
            await response.aclose()
        return bytes(buf)

    async def drain(self, response: httpx.Response) -> None:
        """Read (and discard) a small body so the connection goes back to the pool; close it."""
        try:
            await self.read_up_to(response, self.limits.max_error_body_bytes)
        finally:
            await response.aclose()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None
