"""The HTTP requester: builds each request, sends it, bounds its step, retries it by the table's policy,
and translates every lower-level error into an ``H2oError`` in one place (:func:`translated`)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import NoReturn
from urllib.parse import quote, urlsplit

import httpx

from ._aio import expired_at
from ._config import Limits, Timeouts
from ._dialects import Body
from ._exceptions import (
    H2oError,
    H2oLimitError,
    H2oStatusError,
    H2oTimeoutError,
    H2oTransportError,
)
from ._hints import status_hint
from ._json import dumps
from ._log import scrub
from ._phase import Phase
from ._retry import Retries, retry_after_failure
from ._session import Session
from ._table import SPEC
from ._transport import is_timeout, transport_error_text
from ._version import VERSION

__all__ = ["Requester", "conversation_path", "segment", "translate", "translated"]

def segment(cid: str) -> str:
    """A server-chosen id (validated when it arrived) as one encoded path segment, whatever it holds."""
    return quote(cid, safe="")


def conversation_path(cid: str, suffix: str = "") -> str:
    """``/conversation/{id}`` (+ ``suffix``)."""
    return f"/conversation/{segment(cid)}{suffix}"


def _describe(exc: httpx.HTTPError) -> str:
    """A transport error in a few words, never its own text (it can carry raw headers or cookies)."""
    seen: BaseException | None = exc
    for _ in range(8):  # "refused" is worth saying as such, on either transport
        if seen is None:
            break
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        seen = seen.__cause__ or seen.__context__
    return transport_error_text(exc)


def translate(exc: Exception, phase: Phase, cid: str | None, status: int | None = None, what: str = "") -> H2oError:
    """THE translation of a lower-level error (httpx's, the transport's, anything unexpected raised while
    a request is built, sent or read) into an ``H2oError``; the caller raises it ``from exc``."""
    if isinstance(exc, H2oError):
        return exc
    what = what or phase.value
    if isinstance(exc, httpx.HTTPError) and is_timeout(exc):
        return H2oTimeoutError(f"{what} timed out ({_describe(exc)})", phase=phase, status=status, conversation_id=cid)
    if isinstance(exc, httpx.HTTPError):
        return H2oTransportError(f"{what} failed: {_describe(exc)}", phase=phase, status=status, conversation_id=cid)
    # a header that cannot be encoded, a transport's own error class, ...: its text is never shown
    return H2oTransportError(f"{what} failed: unexpected {type(exc).__name__}", phase=phase, status=status,
                             conversation_id=cid)


@contextmanager
def translated(phase: Phase, cid: str | None, status: int | None = None, what: str = "") -> Iterator[None]:
    """:func:`translate` as a context manager. ``H2oError``, the end of an iteration and cancellations
    pass through."""
    try:
        yield
    except (H2oError, StopAsyncIteration):
        raise
    except Exception as exc:
        raise translate(exc, phase, cid, status, what) from exc


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
    ) -> None:
        self.http = http
        # With a transport we built (or were handed), requests go to it directly, through its public
        # ``handle_async_request``: the client's cookie jar, auth and redirect layers have nothing to do
        # here (the session keeps the cookies, redirects are not followed) and cost ~10 % of client CPU.
        self.transport = transport
        self.base_url = base_url
        self.timeouts = timeouts
        self.retries = retries
        self.limits = limits
        self.secrets = secrets  # e.g. the proxy's credentials: never in an error's text
        parts = urlsplit(base_url)
        self.headers = {"Referer": base_url + "/", "Origin": f"{parts.scheme}://{parts.netloc}",
                        "User-Agent": f"h2o-fsm/{VERSION}"}
        self.step_seconds = {s.phase: float(getattr(timeouts, s.timeout)) for s in SPEC.values() if s.timeout}
        self.http_timeouts = {
            phase: httpx.Timeout(
                seconds, connect=min(timeouts.connect, seconds), read=timeouts.token if phase is Phase.SEND else seconds
            )
            for phase, seconds in self.step_seconds.items()
        }
        self.extensions = {phase: {"timeout": t.as_dict()} for phase, t in self.http_timeouts.items()}

    def url(self, path: str) -> httpx.URL:
        return _parse_url(self.base_url + path)

    @asynccontextmanager
    async def step(self, phase: Phase, deadline: float | None, cid: str | None) -> AsyncIterator[None]:
        """Bound a whole step (wall clock) by its table timeout and the turn's ``deadline`` (loop time)."""
        loop_now = asyncio.get_running_loop().time()
        when = loop_now + self.step_seconds[phase]
        if deadline is not None:
            if deadline <= loop_now:
                raise H2oTimeoutError("the conversation's deadline passed", phase=phase, conversation_id=cid)
            when = min(when, deadline)
        try:
            async with expired_at(when) as fired:
                yield
        except asyncio.TimeoutError as exc:
            if not fired[0]:
                raise
            raise H2oTimeoutError(
                f"no complete answer within {when - loop_now:.3g}s", phase=phase, conversation_id=cid
            ) from exc

    async def call(
        self,
        phase: Phase,
        method: str,
        path: str,
        *,
        session: Session,
        body: Body = Body(),  # noqa: B008 - an immutable NamedTuple
        ok: Collection[int] = (200,),
        cid: str | None = None,
        budget: float | None = None,
        each: bool = False,
    ) -> httpx.Response:
        """Send one request of ``phase`` (retried by the table's policy); return the streamed response
        (the caller reads and closes it). A status outside ``ok`` raises ``H2oStatusError``.

        ``budget``: retry until these seconds are spent instead of counting attempts; ``each``: bound
        each attempt by the step's timeout (the DELETE, whose whole is bounded by its budget)."""

        async def once() -> httpx.Response:
            if not each:
                return await self._once(phase, method, path, session=session, body=body, ok=ok, cid=cid)
            async with self.step(phase, None, cid):
                return await self._once(phase, method, path, session=session, body=body, ok=ok, cid=cid)

        try:
            return await once()
        except H2oError as first:
            return await retry_after_failure(once, phase, SPEC[phase].idempotent, self.retries, first, budget=budget)

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
    ) -> httpx.Response:
        headers = dict(self.headers)
        cookie = session.cookie_header
        if cookie is not None:
            headers["Cookie"] = cookie
        content: bytes | None = None
        if body.json is not None:  # encoded here (orjson when installed), not by httpx's slower json.dumps
            headers["Content-Type"] = "application/json"
            content = dumps(body.json)
        transport = self.transport
        try:
            if transport is not None:  # a transport of ours: straight to it (see __init__)
                request = httpx.Request(method, self.url(path), content=content, data=body.form, files=body.files,
                                        headers=headers, extensions=self.extensions[phase])
                response = await transport.handle_async_request(request)
                response.request = request
            else:
                http = self.http
                request = http.build_request(method, self.url(path), content=content, data=body.form,
                                             files=body.files, headers=headers, timeout=self.http_timeouts[phase])
                response = await http.send(request, stream=True)
        except H2oError:
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

    async def status_error(self, response: httpx.Response, phase: Phase, cid: str | None, session: Session) -> NoReturn:
        status = response.status_code
        snippet = b"" if status == 407 else (await self.read_up_to(response, self.limits.max_error_body_bytes))
        await response.aclose()
        text = scrub(snippet.decode("utf-8", "replace").strip(), (*self.secrets, *session.cookies.values()))
        hint = status_hint(phase, status) or response.reason_phrase
        raise H2oStatusError(
            f"HTTP {status} {hint}" + (f": {text[:200]}" if text else ""),
            phase=phase, status=status, conversation_id=cid, body=text, retry_after=_retry_after(response),
        )

    async def read_up_to(self, response: httpx.Response, limit: int) -> bytes:
        """At most ``limit`` bytes of the body (an error while reading just ends it). Does not close it."""
        buf = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                buf += chunk
                if len(buf) >= limit:
                    break
        except Exception:
            pass
        return bytes(buf[:limit])

    async def read_body(self, response: httpx.Response, phase: Phase, cid: str | None) -> bytes:
        """The whole (small, JSON) body of an answer, bounded by ``Limits.max_json_body_bytes``; closes it."""
        limit = self.limits.max_json_body_bytes
        buf = bytearray()
        try:
            with translated(phase, cid, response.status_code, f"{phase.value} answer"):
                async for chunk in response.aiter_bytes():
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


@functools.lru_cache(maxsize=1024)
def _parse_url(url: str) -> httpx.URL:
    # Bounded: the fixed paths stay, and a conversation's own path is reused by its send and delete.
    return httpx.URL(url)
