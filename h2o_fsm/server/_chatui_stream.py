"""One chat-ui generation: a run of its own (a task) that writes the answer's ``MessageUpdate`` lines
and an append-only event log, independent of any HTTP connection.

As in chat-ui (2026), the run goes on when the client disconnects (until it ends or is stopped by
``stop-generating``; a DELETE does not stop it); the answer's response only reads the lines it wrote,
and the reattach endpoint reads its event log. The log is not the answer's lines: keepAlive is not
logged and consecutive stream tokens are coalesced into one event (unpadded), flushed when another
update comes or a reader catches up. Stream faults fire inside the run: ``drop`` ends the run and the
connection, ``cut`` ends only the connection (the run goes on).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator

from ._accounting import Accounting
from ._faults import Fault, StreamWire, stream_fault
from ._state import Dropped, ServerConfig

__all__ = ["PADDING", "Generation", "StoredMessage", "pad"]

PADDING = 4096  # spaces written after finalAnswer, before the closing status
_WIRE = StreamWire(
    malformed=b'{"type":"stream","token":"oops"\n',
    error_event=lambda fault: _line({"type": "status", "status": "error", "message": "injected fault: model overloaded",
                                     "statusCode": fault.status}),
)


@dataclasses.dataclass
class StoredMessage:
    """One node of a stored chat-ui conversation's message tree."""

    id: str
    role: str  # "system" | "user" | "assistant" (chat-ui's ``from``)
    content: str
    ancestors: list[str]
    children: list[str] = dataclasses.field(default_factory=list)
    reasoning: str = ""

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "id": self.id,
            "from": self.role,
            "content": self.content,
            "ancestors": list(self.ancestors),
            "children": list(self.children),
        }
        if self.reasoning:
            out["reasoning"] = self.reasoning
        return out


def pad(token: str) -> str:
    """A stream token as chat-ui sends it: NUL-padded to 16 characters."""
    return token.ljust(16, "\0")


def _line(update: dict[str, object]) -> bytes:
    return json.dumps(update, separators=(",", ":")).encode() + b"\n"


class Generation:
    """One run: writes the answer's lines and its event log; :meth:`stop` interrupts it (``finalAnswer``
    then says so, its text clamped to a valid stop point)."""

    def __init__(
        self,
        config: ServerConfig,
        accounting: Accounting,
        cid: str,
        message: StoredMessage,
        *,
        tokens: list[str],
        reasoning: list[str],
        title: str | None,
        fault: Fault | None,
        generation_id: str = "",
    ) -> None:
        self._cfg = config
        self._acct = accounting
        self._cid = cid
        self._message = message
        self._tokens = tokens
        self._reasoning = reasoning
        self._title = title
        self._fault = fault
        self.generation_id = generation_id
        self.lines: list[bytes] = []  # the answer's body, as written
        self.log: list[dict[str, object]] = []  # the event log: seq = index + 1
        self._pending: list[str] = []  # stream tokens not yet in the log (coalesced when flushed)
        self._changed = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stop_at: int | None = None
        self._cut_at: int | None = None  # the answer's connection ends after this many lines
        self.status: str | None = None  # "completed" | "interrupted" | "error" once the run ended
        self.task: asyncio.Task[None] | None = None
        self._epoch = 0

    @property
    def running(self) -> bool:
        """Still generating (not finished, not told to stop)."""
        return self.status is None and not self._stopped.is_set()

    def start(self) -> Generation:
        self._epoch = self._acct.epoch
        self._acct.record_run(started=True)
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    def stop(self, seen: int | None = None) -> None:
        """Interrupt the run; ``seen`` (a valid stop point) clamps the answer to that many characters."""
        if seen is not None and self._stop_at is None:
            self._stop_at = seen
            self._message.content = self._message.content[:seen]
            self._acct.update_message(self._cid, self._message.id, self._message.content)
        self._stopped.set()

    # -------------------------------------------------------------------------------- readers
    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def body(self) -> AsyncIterator[bytes]:
        """The answer's response body: the lines the run writes, until it ends; an injected cut or drop
        closes the connection mid-line."""
        i = 0
        while True:
            changed = self._changed
            if self._cut_at is not None and i >= self._cut_at:
                if i < len(self.lines):  # half of the next line, then the connection is gone
                    yield self.lines[i][: max(1, len(self.lines[i]) // 2)]
                    raise Dropped("injected fault: connection cut mid-stream")
                if self.status is not None:
                    raise Dropped("injected fault: connection dropped mid-stream")
                await changed.wait()
                continue
            if i < len(self.lines):
                i += 1
                yield self.lines[i - 1]
                continue
            if self.status is not None:
                return
            await changed.wait()

    def flush(self) -> None:
        """Put the tokens written since the last flush into the log, as one event."""
        if self._pending:
            self.log.append({"type": "stream", "token": "".join(self._pending)})
            self._pending = []

    async def events(self, after: int) -> AsyncIterator[tuple[int, dict[str, object]] | None]:
        """The logged events with seq > ``after`` as ``(seq, update)``, waiting for new ones; ``None``
        after ``ServerConfig.heartbeat`` seconds without one (the caller writes a heartbeat). Ends after
        the run's last event."""
        seq = max(0, after)
        while True:
            changed = self._changed
            if seq >= len(self.log):
                self.flush()
            if seq < len(self.log):
                seq += 1
                yield seq, self.log[seq - 1]
                continue
            if self.status is not None:
                return
            try:
                await asyncio.wait_for(changed.wait(), self._cfg.heartbeat)
            except asyncio.TimeoutError:
                yield None

    # -------------------------------------------------------------------------------- the run
    def _put(self, update: dict[str, object]) -> None:
        if update.get("type") == "stream":
            token = str(update["token"])
            self.lines.append(_line({"type": "stream", "token": pad(token)}))
            self._pending.append(token)
        else:
            self.lines.append(_line(update))
            if update != {"type": "status", "status": "keepAlive"}:
                self.flush()
                self.log.append(update)
        self._notify()

    def _raw(self, data: bytes) -> None:
        self.lines.append(data)
        self._notify()

    async def _wait(self, seconds: float) -> None:
        """Wait ``seconds`` (less if stopped), writing keepAlive lines every ``keep_alive`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        every = self._cfg.keep_alive
        while not self._stopped.is_set():
            left = deadline - loop.time()
            if left <= 0:
                return
            step = min(left, every) if every > 0 else left
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), step)
            if every > 0 and loop.time() < deadline and not self._stopped.is_set():
                self._put({"type": "status", "status": "keepAlive"})

    async def _run(self) -> None:
        status = "error"
        try:
            status = await self._generate()
        finally:
            self.flush()
            self.status = status
            self._acct.record_run(started=False, status=status, epoch=self._epoch)
            self._notify()

    async def _generate(self) -> str:
        cfg, fault, msg = self._cfg, self._fault, self._message
        self._put({"type": "status", "status": "started"})
        if cfg.unknown_updates:
            self._put({"type": "routerMetadata", "route": "emulator", "model": "emulator", "provider": "local"})
        for token in self._reasoning:
            self._put({"type": "reasoning", "subtype": "stream", "token": token})
        msg.reasoning = "".join(self._reasoning)
        if self._title is not None and cfg.title == "before":
            self._put({"type": "title", "title": self._title})
        text = ""
        for i in range(len(self._tokens) + 1):
            injected = stream_fault(fault, i, len(self._tokens), _WIRE)
            if injected is not None:
                if injected.stall:
                    await self._wait(injected.stall)
                if injected.drop:  # the answer's connection ends here; a drop ends the run too, a cut does not
                    self._cut_at = len(self.lines)
                    if not injected.cut:
                        return "error"
                if injected.last is not None:
                    self._raw(injected.last)
                    if fault is not None and fault.kind == "error_event":
                        self.log.append(json.loads(injected.last))
                    return "error"
            if i == len(self._tokens) or self._stopped.is_set():
                break
            if cfg.token_delay:
                await self._wait(cfg.token_delay)
                if self._stopped.is_set():
                    break
            self._put({"type": "stream", "token": self._tokens[i]})
            text += self._tokens[i]
            msg.content = text if self._stop_at is None else text[: self._stop_at]
            self._acct.update_message(self._cid, msg.id, msg.content)
            if cfg.unknown_updates and i == 0:
                self._put({"type": "futureUpdate", "subtype": "unknown", "detail": {"x": 1}})
        interrupted = self._stopped.is_set()
        if self._stop_at is not None:
            text = text[: self._stop_at]
        self._put({"type": "finalAnswer", "text": text, "interrupted": interrupted})
        if self._title is not None and cfg.title == "after":
            self._put({"type": "title", "title": self._title})
        if cfg.finished_status:
            self._raw(b" " * PADDING + _line({"type": "status", "status": "finished"}))
            self.log.append({"type": "status", "status": "finished"})
        else:
            self._raw(b" " * PADDING)
        return "interrupted" if interrupted else "completed"
