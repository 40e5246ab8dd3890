"""What a client shares with its conversations: :class:`Runtime` (the requester, the dialect, the
policies, the live conversations and the tasks the client owns) and the transition observer's type."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ._config import Limits, Timeouts
from ._log import Logger
from ._phase import Phase
from ._records import TransitionRecord

if TYPE_CHECKING:
    from ._dialects import Dialect
    from ._driver import Driver
    from ._journal_lease import ClientJournal
    from ._otel import Telemetry
    from ._requester import Requester

__all__ = ["Runtime", "TransitionObserver"]

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
        self.live: set[Driver] = set()  # conversations that may exist on the server
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
