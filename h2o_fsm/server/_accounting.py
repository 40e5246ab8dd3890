"""What happened on the emulator (both dialects), for tests to assert on: counters, ids, messages, requests.

Only this module takes the accounting lock; the apps report through its ``record_*`` methods and
tests read through its properties and snapshots (copies, safe from any thread).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict, deque

__all__ = ["Accounting", "MessageRecord", "RequestRecord", "TurnRecord"]


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    status: int
    session: str
    conversation_id: str | None
    at: float


@dataclasses.dataclass(frozen=True)
class MessageRecord:
    """One message of a chat-ui conversation's tree (``role``: system, user or assistant)."""

    id: str
    role: str
    content: str
    parent: str | None


@dataclasses.dataclass(frozen=True)
class TurnRecord:
    """One chat-ui send: where it hung (``parent``), what it added, whether it started a branch."""

    parent: str
    user: str
    assistant: str
    branched: bool  # the parent was not the newest message of the conversation: history forked


class Accounting:
    """What happened on the server. Thread-safe; every read returns a copy.

    Counters: ``created``, ``deleted``, ``live``, ``deleted_twice`` (a DELETE for a conversation this
    server already deleted), ``requests`` (all, never truncated; the log keeps the newest
    ``request_log_size``), and for chat-ui ``stops`` (stop-generating requests answered 200),
    ``stopped_running`` (those that found a generation running), ``branched`` (sends whose parent was
    not the newest message), ``stop_points`` (the ``seenContentLength`` of each stop, ``None`` when the
    body did not fit the schema and was discarded), the runs (``runs_started``, ``runs_running`` — still
    generating, whatever was deleted — ``runs_completed``, ``runs_interrupted``, ``runs_failed``) and
    ``reattaches`` (``GET /conversation/{id}/stream`` requests; ``reattaches_gone``: no run found).
    Per conversation (the newest ``message_log_size`` ones): its messages and
    turns. Ids a client may legitimately leave live are kept apart, see :meth:`excused_ids`.
    """

    def __init__(self, request_log_size: int = 100_000, message_log_size: int = 10_000) -> None:
        self._lock = threading.Lock()
        self.epoch = 0
        self._request_log_size = request_log_size
        self._message_log_size = message_log_size
        self._reset()

    def _reset(self) -> None:
        self.created = 0
        self.deleted = 0
        self.deleted_twice = 0
        self.stops = 0
        self.stopped_running = 0
        self.branched = 0
        self.stop_points: list[int | None] = []
        self.runs_started = 0
        self.runs_completed = 0
        self.runs_interrupted = 0
        self.runs_failed = 0
        self.reattaches = 0
        self.reattaches_gone = 0
        self.requests_total = 0
        self.requests: deque[RequestRecord] = deque(maxlen=self._request_log_size)  # bounded in long runs
        self._live: set[str] = set()
        self._gone: set[str] = set()
        self._unnamed: set[str] = set()  # created, but the create was answered with an injected error
        self._delete_failed: set[str] = set()  # the last DELETE for it was answered by an injected fault
        self._orphaned: set[str] = set()  # its session was forgotten by the server (forget_sessions)
        self._messages: OrderedDict[str, list[MessageRecord]] = OrderedDict()
        self._turns: dict[str, list[TurnRecord]] = {}

    def reset(self) -> None:
        """Forget everything (counters, ids, messages, the request log)."""
        with self._lock:
            self._reset()
            self.epoch += 1  # a run started before the reset ends uncounted

    # -- reads ---------------------------------------------------------------------------------------

    @property
    def live(self) -> int:
        with self._lock:
            return len(self._live)

    @property
    def runs_running(self) -> int:
        """Runs (generations) still going: a DELETE does not stop them, only stop-generating does."""
        with self._lock:
            return self.runs_started - self.runs_completed - self.runs_interrupted - self.runs_failed

    @property
    def live_ids(self) -> set[str]:
        with self._lock:
            return set(self._live)

    @property
    def gone_ids(self) -> set[str]:
        with self._lock:
            return set(self._gone)

    def excused_ids(self) -> dict[str, set[str]]:
        """Live conversations a correct client may have left behind, by reason:

        * ``create_then_error``: the create succeeded but was answered with an injected error status,
          so the client never learned the id;
        * ``delete_failed``: the last DELETE the server received for it was answered by an injected
          fault (the client tried; a correct client reports it as a cleanup failure);
        * ``orphaned``: its session was forgotten (``LocalServer.forget_sessions``): nobody can reach it.
        """
        with self._lock:
            return {
                "create_then_error": self._unnamed & self._live,
                "delete_failed": self._delete_failed & self._live,
                "orphaned": self._orphaned & self._live,
            }

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "created": self.created,
                "deleted": self.deleted,
                "live": len(self._live),
                "deleted_twice": self.deleted_twice,
                "stops": self.stops,
                "stopped_running": self.stopped_running,
                "branched": self.branched,
                "stop_points": list(self.stop_points),
                "runs_started": self.runs_started,
                "runs_running": self.runs_started - self.runs_completed - self.runs_interrupted - self.runs_failed,
                "runs_completed": self.runs_completed,
                "runs_interrupted": self.runs_interrupted,
                "runs_failed": self.runs_failed,
                "reattaches": self.reattaches,
                "reattaches_gone": self.reattaches_gone,
                "requests": self.requests_total,
                "live_ids": sorted(self._live),
            }

    def requests_for(self, method: str | None = None, path_prefix: str = "") -> list[RequestRecord]:
        with self._lock:
            return [
                r for r in self.requests if (method is None or r.method == method) and r.path.startswith(path_prefix)
            ]

    def messages(self, conversation_id: str) -> list[MessageRecord]:
        """A chat-ui conversation's messages in creation order (kept after it is deleted)."""
        with self._lock:
            return list(self._messages.get(conversation_id, ()))

    def turns(self, conversation_id: str) -> list[TurnRecord]:
        """A chat-ui conversation's sends, in order: ``turns[i].parent == turns[i-1].assistant`` when
        the client followed the linear history (the first turn hangs from the root message)."""
        with self._lock:
            return list(self._turns.get(conversation_id, ()))

    # -- writes (called by the apps) ------------------------------------------------------------------

    def record_request(self, record: RequestRecord | None) -> None:
        """Count a request; log it unless ``record`` is ``None`` (request log off)."""
        with self._lock:
            self.requests_total += 1
            if record is not None:
                self.requests.append(record)

    def record_created(self, cid: str, *, answered_error: bool = False) -> None:
        with self._lock:
            self.created += 1
            self._live.add(cid)
            if answered_error:
                self._unnamed.add(cid)

    def record_deleted(self, cid: str) -> None:
        with self._lock:
            self.deleted += 1
            self._live.discard(cid)
            self._gone.add(cid)
            self._delete_failed.discard(cid)

    def record_delete_unknown(self, cid: str) -> None:
        """A DELETE for a conversation this session does not have (404)."""
        with self._lock:
            if cid in self._gone:
                self.deleted_twice += 1

    def record_delete_fault(self, cid: str) -> None:
        with self._lock:
            if cid in self._live:
                self._delete_failed.add(cid)

    def record_orphaned(self, cids: set[str]) -> None:
        with self._lock:
            self._orphaned |= cids & self._live

    def record_stop(self, *, hit_running: bool, seen: int | None = None) -> None:
        with self._lock:
            self.stops += 1
            self.stop_points.append(seen)
            if hit_running:
                self.stopped_running += 1

    def record_message(self, cid: str, message: MessageRecord) -> None:
        with self._lock:
            messages = self._messages.get(cid)
            if messages is None:
                messages = self._messages[cid] = []
                while len(self._messages) > self._message_log_size:
                    old, _ = self._messages.popitem(last=False)
                    self._turns.pop(old, None)
            messages.append(message)

    def update_message(self, cid: str, message_id: str, content: str) -> None:
        with self._lock:
            messages = self._messages.get(cid, [])
            for i, m in enumerate(messages):
                if m.id == message_id:
                    messages[i] = dataclasses.replace(m, content=content)

    def record_turn(self, cid: str, turn: TurnRecord) -> None:
        with self._lock:
            if cid in self._messages:
                self._turns.setdefault(cid, []).append(turn)
            if turn.branched:
                self.branched += 1

    def record_run(self, *, started: bool, status: str | None = None, epoch: int | None = None) -> None:
        """A run started, or ended with ``status`` (completed, interrupted, error); an end whose start
        was counted before the last :meth:`reset` (``epoch``) is not counted."""
        with self._lock:
            if epoch is not None and epoch != self.epoch:
                return
            if started:
                self.runs_started += 1
            elif status == "completed":
                self.runs_completed += 1
            elif status == "interrupted":
                self.runs_interrupted += 1
            else:
                self.runs_failed += 1

    def record_reattach(self, *, found: bool) -> None:
        with self._lock:
            self.reattaches += 1
            if not found:
                self.reattaches_gone += 1
