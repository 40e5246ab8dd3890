"""Ctrl-C (SIGINT) and SIGTERM while ``chat`` runs a coroutine on its own event loop.

The first signal cancels the coroutine (the engine then deletes what it created) and the command says
so at once; a second one stops waiting for that cleanup, and the command says honestly what may be left.

Both handlers are the loop's own (``loop.add_signal_handler``: a wake-up fd, so a signal delivered to
any thread wakes the loop), installed whatever disposition the process inherited. ``asyncio.run``'s
handler is only installed when SIGINT is at Python's default: a ``chat`` started with SIGINT ignored —
any background job of a non-interactive shell (a CI script, ``cmd &``) — lost every ``kill -INT`` and
streamed on to the end, and a SIGTERM (``timeout``, ``docker stop``, ``kill``) ended the process
without its DELETE. Stopping here always deletes, so honouring a signal is never the harmful choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["Interrupted", "Signals", "terminate_raises"]

T = TypeVar("T")
_HANDLED = (signal.SIGINT, signal.SIGTERM)
_ABANDONED: list[object] = []


def _quiet_at_exit(coroutines: set[int]) -> None:
    """At interpreter exit the abandoned coroutines are closed mid-``await`` ("coroutine ignored
    GeneratorExit"): that is the stop the user asked for, not a traceback to show them."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if id(unraisable.object) not in coroutines:
            previous(unraisable)

    sys.unraisablehook = hook


class Interrupted(Exception):
    """A signal stopped the coroutine; ``gave_up``: a second one came before its cleanup finished."""

    def __init__(self, signum: int, *, gave_up: bool = False) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum, self.gave_up = signum, gave_up

    @property
    def code(self) -> int:
        """The shell's exit code of a process ended by the signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """While no loop runs (``chat`` waiting at its prompt): SIGTERM raises :class:`Interrupted` in the
    main thread, as Ctrl-C raises ``KeyboardInterrupt`` there, instead of ending the process undeleted."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupted(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


class Signals:
    """Runs coroutines on ``loop`` with SIGINT/SIGTERM handled; ``stopping()`` is said at the first signal."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stopping: Callable[[], None]) -> None:
        self.loop, self.stopping = loop, stopping
        # After a run a signal stopped, its handlers stay until the next run (the command's cleanup) or
        # close(): a second Ctrl-C typed between the two reaches that run (the loop's wake-up fd keeps it),
        # instead of Python's default handler (a bare KeyboardInterrupt, the cleanup's story lost).
        self._kept: dict[int, Any] | None = None
        self._current: Callable[[int], None] = lambda signum: None

    def _install(self, handler: Callable[[int], None]) -> dict[int, Any]:
        """The loop's handlers for SIGINT/SIGTERM; returns what each replaced (restored by ``_restore``)."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        installed: dict[int, Any] = {}
        for sig in _HANDLED:
            previous = signal.getsignal(sig)
            try:
                self.loop.add_signal_handler(sig, handler, sig)
            except (NotImplementedError, RuntimeError, ValueError):  # Windows, or no signals here
                continue
            installed[sig] = previous
        return installed

    def _restore(self, installed: dict[int, Any]) -> None:
        for sig, previous in installed.items():
            self.loop.remove_signal_handler(sig)
            if previous is not None:  # (None: set outside Python, nothing to give back)
                signal.signal(sig, previous)

    def run(self, coro: Coroutine[Any, Any, T], *, cleanup: bool = False) -> T:
        """The coroutine's result; :class:`Interrupted` if a signal came while it ran. ``cleanup``: the
        coroutine is itself the deleting, so the first signal already gives up waiting for it."""
        loop = self.loop
        task = loop.create_task(coro)
        gave_up: asyncio.Future[None] = loop.create_future()
        received: list[int] = []

        def on_signal(signum: int) -> None:
            received.append(signum)
            if len(received) == 1 and not cleanup:
                task.cancel()
                self.stopping()
            elif not gave_up.done():
                gave_up.set_result(None)

        self._current = on_signal
        installed = self._kept if self._kept is not None else self._install(self._dispatch)
        self._kept = None
        try:
            waited: list[asyncio.Future[Any]] = [task, gave_up]
            loop.run_until_complete(asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED))
        finally:
            self._current = lambda signum: None
            if received:
                self._kept = installed
            else:
                self._restore(installed)
            if not gave_up.done():
                gave_up.cancel()
        if not task.done():
            raise Interrupted(received[0], gave_up=True)
        if received:
            if not task.cancelled():
                task.exception()  # retrieved: what the stop caused is not the story
            raise Interrupted(received[0])
        return task.result()

    def _dispatch(self, signum: int) -> None:
        self._current(signum)

    def close(self, *, abandon: bool = False) -> None:
        """Close the loop as ``asyncio.run`` does (what still runs is cancelled and awaited), or, with
        ``abandon`` (after a second signal), without waiting for anything, quietly."""
        loop = self.loop
        if self._kept is not None:
            kept, self._kept = self._kept, None
            self._restore(kept)
        if abandon:
            loop.set_exception_handler(lambda _loop, _context: None)  # "Task was destroyed but it is pending"
            tasks = asyncio.all_tasks(loop)
            _ABANDONED.append((loop, tasks))  # kept: not finalized while the command still runs
            _quiet_at_exit({id(task.get_coro()) for task in tasks})
            loop.close()
            return
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
