"""The machine's model: one conversation's data, its guards, and the per-transition bookkeeping.

:class:`Runtime` is the one narrow object a client hands to its conversations (the requester, the
dialect, the policies, the tasks the client owns); :class:`ConversationModel` is what the state callbacks
in ``_steps`` read and write. ``Conversation`` (the public API) builds on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ._config import Limits, Timeouts
from ._exceptions import H2oCleanupError, add_note
from ._log import NULL_LOGGER, Logger, scrub
from ._phase import Phase
from ._protocol import Parameters
from ._records import TransitionRecord
from ._session import Session
from ._table import request_line

if TYPE_CHECKING:
    import httpx
    from transitions.core import EventData

    from ._dialects import Dialect, DialectState
    from ._events import FinalAnswer
    from ._journal_lease import ClientJournal
    from ._otel import Telemetry
    from ._reattach import Resume
    from ._requester import Requester
    from ._stream import Parser
    from ._tail import Tail

__all__ = ["ConversationModel", "Runtime", "TransitionObserver"]

TransitionObserver = Callable[[TransitionRecord], None]


class Runtime:
    """What a client shares with its conversations. The client owns the background tasks created here
    (a cleanup that outlives its caller's deadline) and ``aclose()`` waits for them, bounded."""

    def __init__(
        self,
        *,
        requester: Requester,
        dialect: Dialect,
        timeouts: Timeouts,
        limits: Limits,
        logger: Logger,
        log_content: bool,
        journal: ClientJournal | None,
        observer: TransitionObserver | None,
        max_concurrency: int | None,
        send_settings: bool,
    ) -> None:
        self.requester = requester
        self.dialect = dialect
        self.timeouts = timeouts
        self.limits = limits
        self.log = logger
        self.log_content = log_content
        self.journal = journal
        self.observer = observer
        self.slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        # the table's optional states this client performs: its dialect's, settings as asked
        optional = dialect.optional_steps - {Phase.SETTINGS}
        self.performs = optional | {Phase.SETTINGS} if send_settings else optional
        self.live: set[ConversationModel] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.abandoned: weakref.WeakSet[asyncio.Future[Any]] = weakref.WeakSet()  # cancelled by aclose()
        self.undeleted = 0
        self.tail_errors = 0  # streams whose tail (after a complete answer) failed: logged, never raised
        self.telemetry: Telemetry | None = None  # OpenTelemetry (the otel extra), fed by report()
        self.default_model: Callable[[], Awaitable[str]] | None = None  # the server's, when no model is named

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in a task the client owns (``aclose()`` waits for it)."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


class ConversationModel:
    """One conversation as the machine sees it. ``state`` is set by the machine only."""

    def __init__(self, rt: Runtime, *, model: str, parameters: Parameters, session: Session) -> None:
        self.state: Phase = Phase.NEW
        self.rt = rt
        self.model = model
        self.parameters = parameters
        self.session = session
        self.log: Logger = rt.log
        self.cid: str | None = None
        self.dstate: DialectState = rt.dialect.new_state(None)  # the dialect's own (reset by the first turn)
        self.prompt: str | None = None
        self.prompt_pending = False
        self.generating = False  # a send reached the server and its answer was not read to the end
        self.response: httpx.Response | None = None
        self.parser: Parser | None = None
        self.final: FinalAnswer | None = None
        self.delivered = 0  # characters of answer text the caller got in this turn
        self.resume: Resume | None = None  # chat-ui: this answer's reattaching, after a cut
        self.send_status: int | None = None
        self.deadline: float | None = None
        self.records: list[TransitionRecord] = []
        self.error: BaseException | None = None
        self.cleanup_error: H2oCleanupError | None = None
        self.create_task: asyncio.Task[None] | None = None
        self.end_by = 0.0  # loop time by which the ending (stop and DELETE) must be over
        self.ending: asyncio.Task[None] | None = None
        self.tail: Tail | None = None  # the stream once its answer is complete, until its task reads it
        self.tail_task: asyncio.Task[None] | None = None  # reads the stream's tail (``_tail``)
        self.transitioning = False
        self.busy = False
        self.holds_slot = False
        # per transition, reset by prepare()
        self.t0 = 0.0
        self.stream_t0 = 0.0
        self.status: int | None = None
        self.headers: httpx.Headers | None = None  # the answer's (what the stepper shows)
        self.skipped = False
        self.retries = 0  # how often the step's request was sent again
        self.source: Phase = Phase.NEW

    # ------------------------------------------------------------------ guards (named in the table)
    @property
    def created(self) -> bool:
        """Whether the server holds (or held) this conversation."""
        return self.cid is not None

    @property
    def has_error(self) -> bool:
        """Whether an error or a failed cleanup ended the conversation."""
        return self.error is not None or self.cleanup_error is not None

    # ------------------------------------------------------------------ machine callbacks
    def prepare(self, event: EventData) -> None:
        # ``finish`` is charged with the time spent reading the stream since ``stream`` was entered.
        self.t0 = self.stream_t0 if event.event.name == "finish" else time.perf_counter()
        self.status = None
        self.headers = None
        self.skipped = False
        self.retries = 0
        self.source = self.state

    def finalize(self, event: EventData) -> None:
        if event.transition is None:
            return
        err = event.error
        why = err if err is not None or event.event.name != "abort" else self.error  # what the abort is for
        record = TransitionRecord(
            source=self.source,
            dest=self.state,
            trigger=event.event.name,
            duration_ms=(time.perf_counter() - self.t0) * 1000.0,
            status=self.status,
            error=None if why is None else _describe(why),
            skipped=self.skipped,
            conversation_id=self.cid,
            request=request_line(self.state, self.cid) if self.state is not self.source else None,
            retries=self.retries,
        )
        self.records.append(record)
        if self.state.is_terminal:
            self.on_terminal()
        self.report(record, failed=err is not None)

    def report(self, record: TransitionRecord, *, failed: bool) -> None:
        """Log the transition and hand it to the observer. A log sink or observer that raises is
        noted once on the conversation's error, never allowed to stop the machine."""
        try:
            if self.log is not NULL_LOGGER:
                fields = record.as_dict()
                if failed:
                    self.log.warning("transition_failed", **fields)
                else:
                    self.log.debug("transition", **fields)
            observer = self.rt.observer
            if observer is not None:
                observer(record)
            telemetry = self.rt.telemetry
            if telemetry is not None:
                telemetry.on_transition(self, record)
        except Exception as exc:  # the host's sink failed: the machine goes on
            if self.error is not None:
                add_note(self.error, f"h2o-fsm: logging a transition failed: {type(exc).__name__}")

    def on_terminal(self) -> None:
        """Give back the concurrency slot and leave the client's live set. Idempotent."""
        rt = self.rt
        if self.holds_slot and rt.slots is not None:
            rt.slots.release()
            self.holds_slot = False
        rt.live.discard(self)

    def note(self, event: str, level: str = "warning", **fields: object) -> None:
        """Log about this conversation; a failing log sink is ignored here."""
        with contextlib.suppress(Exception):
            getattr(self.log, level)(event, **fields)

    def scrubbed(self, text: str) -> str:
        """``text`` (something the server sent) without our secrets: cookie values, proxy credentials."""
        return scrub(text, (*self.rt.requester.secrets, *self.session.cookies.values()))


def _describe(err: BaseException) -> str:
    from ._exceptions import H2oError

    if isinstance(err, H2oError):
        return f"{type(err).__name__}: {err.message}"
    if isinstance(err, asyncio.CancelledError):
        return "CancelledError: cancelled by the caller (its cancel() or its own deadline)"
    if isinstance(err, asyncio.TimeoutError):  # not ours (ours are H2oTimeoutError): the caller's deadline
        return "TimeoutError: the caller's deadline passed"
    return type(err).__name__  # its text may hold anything (a header value, a cookie): never logged
