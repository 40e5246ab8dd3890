"""One conversation: the model of the shared machine, whose state callbacks perform the HTTP steps.

The machine's table lives in ``_machine.py``; this module holds what each state *does*. The driver
methods (``_turn``, ``_abort``, ``_end``) fire triggers and guarantee the cleanup:

* any exception after ``create`` succeeded — an HTTP error, a broken stream, an error event, a
  dropped connection, the consumer leaving the loop, ``task.cancel()``, a timeout around the caller —
  leads through ``abort``/``close`` to ``DELETE``, exactly once;
* the cleanup runs in its own task, shielded from the caller's cancellation and bounded by
  ``Timeouts.cleanup``; a cancellation that arrives during it is re-raised after it;
* the error the caller sees is the one that caused the cleanup; a failed cleanup is attached to it
  (``H2oError.cleanup_error``, or a note on other exceptions), never raised in its place.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import TYPE_CHECKING, NoReturn

import httpx
from transitions.core import EventData

from ._aio import body_chunks, bounded, describe, dumps_json, read_up_to, retry_after, shielded
from ._events import FinalAnswer, StreamError
from ._exceptions import (
    H2oCleanupError,
    H2oError,
    H2oLimitError,
    H2oProtocolError,
    H2oStateError,
    H2oStatusError,
    H2oTimeoutError,
    H2oTransportError,
    H2oUpstreamError,
)
from ._log import NULL_LOGGER, Logger, redact
from ._machine import MACHINE, VALID_TRIGGERS
from ._phase import Phase
from ._protocol import (
    ALREADY_GONE,
    DELETED,
    Messages,
    Parameters,
    conversation_path,
    create_body,
    prompt_text,
    send_body,
    settings_form,
)
from ._records import StepResult, TransitionRecord
from ._retry import is_timeout, retry_after_failure
from ._session import Session
from ._stream import StreamParser, StreamSyntaxError

if TYPE_CHECKING:
    from ._client import H2oClient

__all__ = ["Conversation"]

_CONV_ID_MAX = 128


class Conversation:
    """A server-side conversation driven by the shared machine.

    Use it as an async context manager; leaving the block deletes the conversation (if one was
    created), whatever happened inside::

        async with client.conversation() as conv:
            async for chunk in conv.stream("Hello"):
                print(chunk, end="")
            print(await conv.ask("And again?"))

    Inspect ``state``, ``conversation_id`` and ``history`` at any time.
    """

    def __init__(
        self,
        client: H2oClient,
        *,
        model: str,
        parameters: Parameters,
        session: Session,
        logger: Logger,
    ) -> None:
        self.state: Phase = Phase.NEW
        self._client = client
        self.model = model
        self.parameters = parameters
        self._session = session
        self._log = logger
        self._cid: str | None = None
        self._history: list[TransitionRecord] = []
        self._error: BaseException | None = None
        self._cleanup_error: H2oCleanupError | None = None
        self._prompt: str | None = None
        self._response: httpx.Response | None = None
        self._parser: StreamParser | None = None
        self._final: FinalAnswer | None = None
        self._deadline: float | None = None
        self._busy = False
        self._prompt_pending = False
        self._holds_slot = False
        self._ending: asyncio.Future[None] | None = None
        self._transitioning = False
        # per transition, reset by _prepare
        self._t0 = 0.0
        self._stream_t0 = 0.0
        self._send_status: int | None = None
        self._status: int | None = None
        self._skipped = False
        self._request: str | None = None
        self._source: Phase = Phase.NEW

    # ------------------------------------------------------------------ public
    @property
    def conversation_id(self) -> str | None:
        """The server's id, once ``create`` succeeded."""
        return self._cid

    @property
    def history(self) -> tuple[TransitionRecord, ...]:
        """Every transition so far, in order."""
        return tuple(self._history)

    @property
    def error(self) -> BaseException | None:
        """The error that ended (or is ending) the conversation, if any."""
        return self._error

    @property
    def cleanup_error(self) -> H2oCleanupError | None:
        """Why the DELETE failed, if it did."""
        return self._cleanup_error

    @property
    def final(self) -> FinalAnswer | None:
        """The final event of the last completed turn (``generated_text``, ``details``)."""
        return self._final

    @property
    def created(self) -> bool:
        """Whether the server holds (or held) this conversation. A machine condition."""
        return self._cid is not None

    @property
    def has_error(self) -> bool:
        """Whether an error or a failed cleanup ended the conversation. A machine condition."""
        return self._error is not None or self._cleanup_error is not None

    def __repr__(self) -> str:
        return f"<Conversation state={self.state.value} id={self._cid} model={self.model!r}>"

    async def __aenter__(self) -> Conversation:
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            await self.aclose()
        else:
            await self._abort(exc)

    def stream(self, prompt: str | Messages) -> AsyncGenerator[str, None]:
        """Send one turn and yield the answer's text chunks as they arrive.

        ``prompt`` is a string (sent as is) or a list of ``{"role", "content"}`` messages (formatted
        as the old provider did). Leaving the loop early ends the whole conversation (it is deleted).
        """
        text = prompt_text(prompt)
        self._check_can_send()
        return self._turn(text)

    async def ask(self, prompt: str | Messages) -> str:
        """Send one turn and return the whole answer."""
        text = prompt_text(prompt)
        async with self._turn_scope(text) as reader:
            parts = [chunk async for chunk in reader]
        return "".join(parts)

    async def open(self) -> None:
        """Run ``settings`` and ``create`` now (otherwise the first turn does it)."""
        if self.state is not Phase.NEW:
            raise H2oStateError(f"open() needs state 'new', not {self.state.value!r}", phase=self.state)
        try:
            await self._start_deadline()
            await self._fire("start")
            await self._fire("create")
        except BaseException as exc:
            await self._abort(exc)
            raise

    async def aclose(self) -> None:
        """Delete the conversation (if created) and end in ``closed``. Idempotent.

        Raises :class:`H2oCleanupError` if the DELETE failed and nothing else had failed before.
        """
        if self.state.is_terminal:
            return
        # A turn still suspended mid-stream (the consumer broke out of its loop without closing it)
        # is ended here; when that generator is finalised later it finds the conversation ended.
        await shielded(self._end("close"))
        if self._cleanup_error is not None and self._error is None:
            raise self._cleanup_error

    # ------------------------------------------------------------------ driver
    def _check_can_send(self) -> None:
        if self._busy:
            raise H2oStateError("a turn is already running on this conversation", phase=self.state)
        if self.state not in (Phase.NEW, Phase.CREATE, Phase.READY):
            raise H2oStateError(
                f"cannot send a turn in state {self.state.value!r}", phase=self.state, conversation_id=self._cid
            )

    async def _start_deadline(self) -> None:
        if self.state is Phase.NEW:
            self._client._conversation_started(self)
        total = self._client.timeouts.total
        self._deadline = None if total is None else time.monotonic() + total
        if not self._holds_slot and self._client._slots is not None:
            await self._client._slots.acquire()
            self._holds_slot = True

    @asynccontextmanager
    async def _turn_scope(self, prompt: str) -> AsyncIterator[AsyncGenerator[str, None]]:
        """One turn's steps around the caller's reading of the stream, with the cleanup guarantee.
        Shared by :meth:`stream` (a generator) and :meth:`ask` (which collects without one)."""
        self._check_can_send()
        self._busy = True
        try:
            await self._start_deadline()
            if self.state is Phase.NEW:
                await self._fire("start")
                await self._fire("create")
            self._prompt = prompt
            await self._fire("send")
            await self._fire("stream")
            async with aclosing(self._read()) as reader:
                yield reader
            await self._fire("finish")
        except GeneratorExit:
            # The consumer left the loop (aclose): not an error, but the answer is cut, so we end.
            if not self.state.is_terminal:
                await shielded(self._end("close"))
            raise
        except BaseException as exc:
            await self._abort(exc)
            raise
        finally:
            self._busy = False

    async def _turn(self, prompt: str) -> AsyncGenerator[str, None]:
        async with self._turn_scope(prompt) as reader:
            async for text in reader:
                yield text

    async def _fire(self, trigger: str) -> None:
        if trigger not in VALID_TRIGGERS[self.state]:
            raise H2oStateError(
                f"trigger {trigger!r} is not allowed in state {self.state.value!r}",
                phase=self.state,
                conversation_id=self._cid,
            )
        if self._transitioning:
            raise H2oStateError(
                f"trigger {trigger!r} while another transition is running", phase=self.state, conversation_id=self._cid
            )
        self._transitioning = True
        try:
            await MACHINE.events[trigger].trigger(self)
        finally:
            self._transitioning = False

    def _end(self, trigger: str) -> asyncio.Future[None]:
        """The one task that ends this conversation. Every path that ends it (close, abort, the
        consumer's aclose, a generator finalised by the GC) shares it, so DELETE runs exactly once."""
        if self._ending is None:
            if self._transitioning:  # another task is inside a step right now: ending it is that task's job
                raise H2oStateError(
                    "cannot end the conversation while another task runs one of its steps; cancel that task",
                    phase=self.state,
                    conversation_id=self._cid,
                )
            self._ending = asyncio.ensure_future(self._run_end(trigger))
        return self._ending

    async def _run_end(self, trigger: str) -> None:
        await self._fire(trigger)
        if self.state is Phase.DELETE:
            await self._fire("deleted")

    async def _abort(self, exc: BaseException) -> None:
        """End the conversation because of ``exc``; delete it if it exists. Never raises ``exc``'s
        replacement: a failed cleanup is attached to ``exc``."""
        if self.state.is_terminal:
            return
        if self._error is None:
            self._error = exc
        try:
            ending = self._end("abort")
        except H2oStateError as misuse:  # another task is inside a step: never hide ``exc`` behind that
            if hasattr(exc, "add_note"):
                exc.add_note(f"h2o-fsm: the conversation was not ended here: {misuse}")
            return
        await shielded(ending)
        cleanup = self._cleanup_error
        if cleanup is not None:
            if isinstance(exc, H2oError):
                if exc.cleanup_error is None:
                    exc.cleanup_error = cleanup
            elif hasattr(exc, "add_note"):
                exc.add_note(f"h2o-fsm: deleting the conversation failed too: {cleanup}")

    # ------------------------------------------------------------------ machine callbacks
    def _prepare(self, event: EventData) -> None:
        # ``finish`` is charged with the time spent reading the stream since ``stream`` was entered.
        self._t0 = self._stream_t0 if event.event.name == "finish" else time.perf_counter()
        self._status = None
        self._skipped = False
        self._request = None
        self._source = self.state

    def _finalize(self, event: EventData) -> None:
        if event.transition is None:
            return
        err = event.error
        record = TransitionRecord(
            source=self._source,
            dest=self.state,
            trigger=event.event.name,
            duration_ms=(time.perf_counter() - self._t0) * 1000.0,
            status=self._status,
            error=None if err is None else f"{type(err).__name__}: {err}",
            skipped=self._skipped,
            conversation_id=self._cid,
            request=self._request,
        )
        self._history.append(record)
        if self._log is not NULL_LOGGER:
            fields = {
                "conversation_id": self._cid,
                "source": record.source.value,
                "dest": record.dest.value,
                "trigger": record.trigger,
                "duration_ms": round(record.duration_ms, 3),
                "status": record.status,
            }
            if err is None:
                self._log.debug("transition", skipped=record.skipped, **fields)
            else:
                self._log.warning("transition_failed", error=record.error, **fields)
        if self.state.is_terminal:
            self._on_terminal()
        observer = self._client._observer
        if observer is not None:
            observer(record)

    def _on_terminal(self) -> None:
        if self._holds_slot and self._client._slots is not None:
            self._client._slots.release()
            self._holds_slot = False
        self._client._conversation_ended(self)

    async def _enter_settings(self, event: EventData) -> None:
        session = self._session
        self._request = "POST /settings"
        if session.settings_model == self.model:
            self._skipped = True
            return
        async with session.lock:
            if session.settings_model == self.model:  # another conversation sent them meanwhile
                self._skipped = True
                return
            response = await self._call(
                Phase.SETTINGS, "POST", "/settings", data=settings_form(self.model), ok=range(200, 400)
            )
            html = response.status_code == 200 and "html" in response.headers.get("content-type", "")
            await self._drain(response, self._client.limits.max_error_body_bytes)
            if html:  # chat-ui answers 303; a 200 page is a proxy's, and the settings were not taken
                self._raise(H2oProtocolError, Phase.SETTINGS, "settings answered an HTML page, not the 303", None, 200)
            session.settings_model = self.model

    async def _enter_create(self, event: EventData) -> None:
        self._request = "POST /conversation"
        # Shielded: a cancellation that arrives while the create is in flight waits for its answer
        # (bounded by Timeouts.create), so the id is known and the conversation can be deleted.
        await shielded(asyncio.ensure_future(self._create()))

    async def _create(self) -> None:
        response = await self._call(Phase.CREATE, "POST", "/conversation", json=create_body(self.model))
        raw = await self._read_body(response, Phase.CREATE)
        cid = self._parse_conversation_id(raw)
        self._cid = cid
        self._log = self._log.bind(conversation_id=cid)
        journal = self._client._journal
        if journal is not None:
            journal.add(self._client.base_url, cid, self._session.cookies)

    async def _enter_send(self, event: EventData) -> None:
        assert self._cid is not None and self._prompt is not None
        path = conversation_path(self._cid)
        self._request = f"POST {path}"
        body = send_body(self._prompt, self.parameters)
        if self._client.log_content:
            self._log.debug("send_prompt", prompt=self._prompt, parameters=self.parameters)
        self._prompt_pending = False
        response = await self._call(Phase.SEND, "POST", path, json=body)
        self._send_status = response.status_code
        ctype = response.headers.get("content-type", "")
        if ctype.startswith("text/html"):
            snippet = (await self._read_snippet(response)).strip()
            await response.aclose()
            self._raise(H2oProtocolError, Phase.SEND, f"expected an event stream, got an HTML page: {snippet[:120]!r}")
        self._response = response

    async def _enter_stream(self, event: EventData) -> None:
        self._parser = StreamParser(max_line_bytes=self._client.limits.max_line_bytes)
        self._stream_t0 = time.perf_counter()

    async def _exit_stream(self, event: EventData) -> None:
        response, self._response = self._response, None
        if response is not None:
            await response.aclose()

    async def _enter_delete(self, event: EventData) -> None:
        cid = self._cid
        assert cid is not None
        path = conversation_path(cid)
        self._request = f"DELETE {path}"
        try:
            await bounded(self._delete(path), self._client.timeouts.cleanup)
        except asyncio.TimeoutError as exc:
            err = H2oCleanupError(
                f"DELETE did not finish within {self._client.timeouts.cleanup}s",
                phase=Phase.DELETE,
                conversation_id=cid,
            )
            err.__cause__ = exc
            self._cleanup_error = err
        except H2oError as exc:
            err = H2oCleanupError(
                f"DELETE failed: {exc.message}", phase=Phase.DELETE, status=exc.status, conversation_id=cid
            )
            err.__cause__ = exc
            self._cleanup_error = err
        else:
            journal = self._client._journal
            if journal is not None:
                journal.remove(self._client.base_url, cid)

    async def _delete(self, path: str) -> None:
        response = await self._call(Phase.DELETE, "DELETE", path, ok=(*DELETED, ALREADY_GONE))
        await self._drain(response, self._client.limits.max_error_body_bytes)

    # ------------------------------------------------------------------ stream reading
    async def _read(self) -> AsyncGenerator[str, None]:
        response, parser = self._response, self._parser
        assert response is not None and parser is not None
        limits = self._client.limits
        max_bytes, max_tokens = limits.max_stream_bytes, limits.max_tokens
        deadline = self._deadline
        # closed explicitly (not left to the GC's asyncgen finaliser task) however we leave
        body = body_chunks(response)
        try:
            tokens = 0
            while True:
                try:
                    chunk = await body.__anext__()
                except StopAsyncIteration:
                    break
                except httpx.HTTPError as exc:
                    if is_timeout(exc):
                        self._raise(
                            H2oTimeoutError, Phase.STREAM, "no data from the stream within the token timeout", exc
                        )
                    self._raise(H2oTransportError, Phase.STREAM, f"stream interrupted: {describe(exc)}", exc)
                try:
                    events = parser.feed(chunk)
                except StreamSyntaxError as exc:
                    self._raise(H2oProtocolError, Phase.STREAM, str(exc), exc)
                if parser.bytes_seen > max_bytes:
                    self._raise(H2oLimitError, Phase.STREAM, f"stream exceeded {max_bytes} bytes")
                if deadline is not None and time.monotonic() > deadline:
                    self._raise(H2oTimeoutError, Phase.STREAM, "the conversation's deadline passed while streaming")
                for ev in events:
                    if type(ev) is str:
                        tokens += 1
                        if tokens > max_tokens:
                            self._raise(H2oLimitError, Phase.STREAM, f"stream exceeded {max_tokens} tokens")
                        yield ev
                    elif type(ev) is StreamError:
                        self._upstream(ev)
            try:
                tail = parser.close()
            except StreamSyntaxError as exc:
                self._raise(H2oProtocolError, Phase.STREAM, str(exc), exc)
            for ev in tail:
                if type(ev) is str:
                    yield ev
                elif type(ev) is StreamError:
                    self._upstream(ev)
        finally:
            await body.aclose()
        self._final = parser.final

    def _upstream(self, ev: StreamError) -> NoReturn:
        raise H2oUpstreamError(
            f"the model server reported an error: {ev.message}",
            phase=Phase.STREAM,
            status=self._send_status,
            conversation_id=self._cid,
            error_type=ev.error_type,
        )

    # ------------------------------------------------------------------ HTTP helpers
    def _raise(
        self,
        cls: type[H2oError],
        phase: Phase,
        message: str,
        cause: BaseException | None = None,
        status: int | None = None,
    ) -> NoReturn:
        if status is None and phase is Phase.STREAM:
            status = self._send_status  # the stream is the body of the send step's answer
        raise cls(message, phase=phase, status=status, conversation_id=self._cid) from cause

    def _timeout(self, phase: Phase) -> httpx.Timeout:
        if self._deadline is None or phase is Phase.DELETE:
            return self._client._step_timeouts[phase]
        t = self._client._step_timeouts[phase]
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            self._raise(H2oTimeoutError, phase, "the conversation's deadline passed")
        assert t.pool is not None and t.connect is not None and t.read is not None
        return httpx.Timeout(min(t.pool, remaining), connect=min(t.connect, remaining), read=min(t.read, remaining))

    async def _call(
        self,
        phase: Phase,
        method: str,
        path: str,
        *,
        json: object = None,
        data: dict[str, str] | None = None,
        ok: Sequence[int] = (200,),
    ) -> httpx.Response:
        async def once() -> httpx.Response:
            return await self._call_once(phase, method, path, json=json, data=data, ok=ok)

        try:
            return await once()
        except H2oError as exc:
            return await retry_after_failure(once, phase, self._client.retries, exc)

    async def _call_once(
        self,
        phase: Phase,
        method: str,
        path: str,
        *,
        json: object,
        data: dict[str, str] | None,
        ok: Sequence[int],
    ) -> httpx.Response:
        client = self._client
        headers = dict(client._headers)
        cookie = self._session.cookie_header
        if cookie is not None:
            headers["Cookie"] = cookie
        http = client._http
        if json is not None:  # encoded here (orjson when installed), not by httpx's slower json.dumps
            headers["Content-Type"] = "application/json"
            content: bytes | None = dumps_json(json)
        else:
            content = None
        request = http.build_request(
            method, client._url(path), content=content, data=data, headers=headers, timeout=self._timeout(phase)
        )
        try:
            response = await http.send(request, stream=True)
        except httpx.HTTPError as exc:
            if is_timeout(exc):
                self._raise(H2oTimeoutError, phase, f"{phase.value} timed out: {describe(exc)}", exc)
            self._raise(H2oTransportError, phase, f"{phase.value} failed: {describe(exc)}", exc)
        self._status = response.status_code
        self._session.update(response)
        if response.status_code not in ok:
            if response.status_code == 405:  # the session lost its accepted settings: send them again next time
                self._session.settings_model = None
            await self._status_error(response, phase)
        return response

    async def _status_error(self, response: httpx.Response, phase: Phase) -> NoReturn:
        snippet = (await self._read_snippet(response)).strip()
        await response.aclose()
        status = response.status_code
        hint = {
            401: "no session",
            403: "refused (CSRF: missing or foreign Referer?)",
            404: "unknown conversation (or another session's)",
            405: "the welcome modal was not accepted (settings step skipped?)",
            410: "model no longer available",
            429: "rate limited",
        }.get(status, response.reason_phrase)
        raise H2oStatusError(
            f"{phase.value} failed: HTTP {status} {hint}" + (f": {snippet[:200]}" if snippet else ""),
            phase=phase,
            status=status,
            conversation_id=self._cid,
            body=snippet,
            retry_after=retry_after(response),
        )

    async def _read_snippet(self, response: httpx.Response) -> str:
        limit = self._client.limits.max_error_body_bytes
        return (await read_up_to(response, limit)).decode("utf-8", "replace")

    async def _drain(self, response: httpx.Response, limit: int) -> None:
        """Read (and discard) a small body so the connection goes back to the pool."""
        try:
            await read_up_to(response, limit)
        finally:
            await response.aclose()

    async def _read_body(self, response: httpx.Response, phase: Phase) -> bytes:
        limit = self._client.limits.max_json_body_bytes
        buf = bytearray()
        try:
            async with aclosing(body_chunks(response)) as chunks:
                async for chunk in chunks:
                    buf += chunk
                    if len(buf) > limit:
                        self._raise(H2oLimitError, phase, f"{phase.value} answer larger than {limit} bytes")
        except httpx.HTTPError as exc:
            if is_timeout(exc):
                self._raise(H2oTimeoutError, phase, f"{phase.value} timed out reading the answer", exc)
            self._raise(H2oTransportError, phase, f"{phase.value} answer interrupted: {describe(exc)}", exc)
        finally:
            await response.aclose()
        return bytes(buf)

    def _parse_conversation_id(self, raw: bytes) -> str:
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            snippet = raw[:120].decode("utf-8", "replace")
            self._raise(H2oProtocolError, Phase.CREATE, f"create answered 200 but not JSON: {snippet!r}", exc, 200)
        cid = obj.get("conversationId") if isinstance(obj, dict) else None
        if not isinstance(cid, str) or not cid or len(cid) > _CONV_ID_MAX or "/" in cid:
            self._raise(H2oProtocolError, Phase.CREATE, "create answered without a usable 'conversationId'", None, 200)
        return cid

    # ------------------------------------------------------------------ stepping (issue 4)
    async def step(self, prompt: str | Messages | None = None) -> StepResult:
        """Run exactly one phase and return what it did.

        From ``new`` it posts settings; then create; then ``send`` (needs ``prompt`` for the turn, or
        the one given earlier to :meth:`queue`); then ``stream`` (enters the state); then reads the
        whole stream (``finish``); from ``ready`` without a prompt it deletes (``close``), and from
        ``delete`` it ends. A step after a terminal state raises :class:`H2oStateError`. Any failure
        aborts (and deletes) like the other entry points.
        """
        if prompt is not None:
            self.queue(prompt)
        state = self.state
        if state.is_terminal:
            raise H2oStateError(f"the conversation already ended ({state.value})", phase=state)
        if self._busy:
            raise H2oStateError("a turn is running on this conversation", phase=state)
        trigger = self.next_trigger()
        t0 = time.perf_counter()
        text: str | None = None
        before = len(self._history)
        self._busy = True  # one step at a time, and no turn meanwhile
        try:
            if trigger == "start" or (trigger == "send" and state is Phase.READY):
                await self._start_deadline()  # a new turn: its own deadline
            if trigger == "close":
                await shielded(self._end("close"))
            elif trigger == "finish":
                parts = [chunk async for chunk in self._read()]
                text = "".join(parts)
                await self._fire("finish")
            else:
                await self._fire(trigger)
        except BaseException as exc:
            await self._abort(exc)
            raise
        finally:
            self._busy = False
        new = self._history[before:]
        last = new[0] if new else None
        return StepResult(
            state=self.state,
            trigger=trigger,
            request=last.request if last else None,
            status=last.status if last else None,
            elapsed_ms=(time.perf_counter() - t0) * 1000.0,
            skipped=last.skipped if last else False,
            text=text,
        )

    def queue(self, prompt: str | Messages) -> None:
        """Set the prompt the next ``send`` step will post."""
        self._prompt = prompt_text(prompt)
        self._prompt_pending = True

    def next_trigger(self) -> str:
        """The trigger :meth:`step` would fire now."""
        s = self.state
        if s is Phase.NEW:
            return "start"
        if s is Phase.SETTINGS:
            return "create"
        if s is Phase.CREATE:
            if self._prompt is None:
                raise H2oStateError("no prompt queued for the send step; pass one to step()", phase=s)
            return "send"
        if s is Phase.SEND:
            return "stream"
        if s is Phase.STREAM:
            return "finish"
        if s is Phase.READY:
            return "send" if self._prompt_pending else "close"
        if s is Phase.DELETE:
            return "deleted"
        raise H2oStateError(f"the conversation already ended ({s.value})", phase=s)

    def diagram(self, fmt: str = "mermaid") -> str:
        """The machine's diagram with this conversation's current state highlighted."""
        from ._diagram import render

        if fmt not in ("mermaid", "dot"):
            raise ValueError(f"unknown diagram format {fmt!r}; expected 'mermaid' or 'dot'")
        return render("mermaid" if fmt == "mermaid" else "dot", highlight=self.state)

    def describe_next(self) -> str:
        """What the next step will send, with secrets redacted (for ``--step``)."""
        trigger = self.next_trigger()
        base = redact(self._client.base_url)
        path = conversation_path(self._cid or "{id}")
        if trigger == "start":
            skip = " (skipped: this session already sent them)" if self._session.settings_model == self.model else ""
            return f"POST {base}/settings form activeModel={self.model!r} (+4 fixed fields){skip}"
        if trigger == "create":
            return f"POST {base}/conversation json {{'model': {self.model!r}}}"
        if trigger == "send":
            shown = self._prompt if self._client.log_content else f"<{len(self._prompt or '')} chars>"
            return f"POST {base}{path} json inputs={shown} parameters={self.parameters}"
        if trigger == "stream":
            return "read the event stream of the answer"
        if trigger == "finish":
            return "read the event stream to its final event"
        if trigger in ("close", "deleted"):
            return f"DELETE {base}{path}" if self._cid and trigger == "close" else "end"
        return trigger
