"""One chat-ui generation: a task that writes ``MessageUpdate`` JSON lines, detached from the response.

As in chat-ui, the generation goes on when the client disconnects (until it ends or is stopped by
``stop-generating``); the response only reads what it wrote. Stream faults fire inside it.
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

__all__ = ["PADDING", "Generation", "Message", "pad"]

PADDING = 4096  # spaces written after finalAnswer, before the closing status
_DROP = object()
_WIRE = StreamWire(
    malformed=b'{"type":"stream","token":"oops"\n',
    error_event=lambda fault: _line({"type": "status", "status": "error", "message": "injected fault: model overloaded",
                                     "statusCode": fault.status}),
)
_END = object()


@dataclasses.dataclass
class Message:
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
    """Writes one answer into a queue; :meth:`stop` interrupts it (``finalAnswer`` then says so)."""

    def __init__(
        self,
        config: ServerConfig,
        accounting: Accounting,
        cid: str,
        message: Message,
        *,
        tokens: list[str],
        reasoning: list[str],
        title: str | None,
        fault: Fault | None,
    ) -> None:
        self._cfg = config
        self._acct = accounting
        self._cid = cid
        self._message = message
        self._tokens = tokens
        self._reasoning = reasoning
        self._title = title
        self._fault = fault
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._stopped = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Still generating (not finished, not told to stop)."""
        return self.task is not None and not self.task.done() and not self._stopped.is_set()

    def start(self) -> Generation:
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    def stop(self) -> None:
        self._stopped.set()

    async def body(self) -> AsyncIterator[bytes]:
        """The response body: what the generation writes, until it ends (or the injected drop)."""
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if item is _DROP:
                raise Dropped("injected fault: connection dropped mid-stream")
            assert isinstance(item, bytes)
            yield item

    def _put(self, update: dict[str, object]) -> None:
        self._queue.put_nowait(_line(update))

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
        try:
            await self._generate()
        finally:
            self._queue.put_nowait(_END)

    async def _generate(self) -> None:
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
                if injected.drop or injected.last is not None:
                    self._queue.put_nowait(_DROP if injected.drop else injected.last)
                    return
            if i == len(self._tokens) or self._stopped.is_set():
                break
            if cfg.token_delay:
                await self._wait(cfg.token_delay)
                if self._stopped.is_set():
                    break
            self._put({"type": "stream", "token": pad(self._tokens[i])})
            text += self._tokens[i]
            msg.content = text
            self._acct.update_message(self._cid, msg.id, text)
            if cfg.unknown_updates and i == 0:
                self._put({"type": "futureUpdate", "subtype": "unknown", "detail": {"x": 1}})
        interrupted = self._stopped.is_set()
        self._put({"type": "finalAnswer", "text": text, "interrupted": interrupted})
        if self._title is not None and cfg.title == "after":
            self._put({"type": "title", "title": self._title})
        tail = b" " * PADDING
        if cfg.finished_status:
            tail += _line({"type": "status", "status": "finished"})
        self._queue.put_nowait(tail)
