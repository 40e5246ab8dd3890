"""A client's part in a journal: what ``journal=`` may be, its owner id and lease, its writes
(bounded and counted), and the background sweep that renews the lease and deletes what dead owners
left behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any

from ._journal import Journal
from ._journal_base import JournalBackend, new_owner
from ._log import Logger
from ._requester import Requester
from ._sweep import JOURNAL_DOWN, SweepReport, journal_error, sweep

__all__ = ["ClientJournal", "JournalValue", "open_journal", "sweep_journal"]

JournalValue = JournalBackend | str | os.PathLike[str] | None


def open_journal(value: object) -> tuple[JournalBackend | None, bool]:
    """``(the journal, whether we opened it)`` for what ``journal=`` got: a journal, a path (SQLite), a
    ``redis://`` / ``rediss://`` or ``postgresql://`` URL. TypeError for another kind, ValueError for a bad
    path or URL."""
    if value is None or isinstance(value, JournalBackend):
        return value, False
    if isinstance(value, str) and "://" in value:
        scheme = value.partition("://")[0]
        if scheme in ("redis", "rediss"):
            from ._journal_redis import RedisJournal

            return RedisJournal(value), True
        if scheme in ("postgres", "postgresql"):
            from ._journal_postgres import PostgresJournal

            return PostgresJournal(value), True
        raise ValueError(f"journal URL must be redis://, rediss:// or postgresql:// (or give a file path), "
                         f"not {scheme[:10]!r}://")
    if isinstance(value, (str, os.PathLike)):
        if not os.fspath(value):
            raise ValueError("journal path must not be empty")
        return Journal(value), True
    raise TypeError(f"journal must be a journal (JournalBackend), a file path, or a redis:// or postgresql:// URL, "
                    f"not {type(value).__name__}")


class ClientJournal:
    """One client instance as a journal owner: a random owner id whose lease the background task
    renews (every lease/3) while the client is open, and released at ``aclose()``."""

    def __init__(self, store: JournalBackend, *, owned: bool, logger: Logger, background: bool) -> None:
        self.store = store
        self.owned = owned
        self.owner = new_owner()
        self.log = logger
        self.background = background
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    async def _call(self, call: Awaitable[Any]) -> Any:
        """``call`` (every backend bounds its own calls: SQLite's busy timeout, Redis's ``timeout``),
        counted when it fails."""
        try:
            return await call
        except Exception:
            self.failures += 1
            raise

    def _note(self, event: str, exc: BaseException) -> None:
        with contextlib.suppress(Exception):  # a failing log sink never stops anything
            self.log.warning(event, error=type(exc).__name__, failures=self.failures)

    # ------------------------------------------------------------- what the steps call
    async def add_async(self, base_url: str, conversation_id: str, cookies: dict[str, str], *, dialect: str) -> None:
        await self._call(self.store.add_async(base_url, conversation_id, dict(cookies), owner=self.owner,
                                              dialect=dialect))

    async def running_async(self, base_url: str, conversation_id: str, generation_id: str,
                            cookies: dict[str, str]) -> None:
        await self._call(self.store.running_async(base_url, conversation_id, generation_id, dict(cookies)))

    async def remove_async(self, base_url: str, conversation_id: str) -> None:
        await self._call(self.store.remove_async(base_url, conversation_id))

    # ------------------------------------------------------------- lease and background sweep
    def start(self, sweep_once: Callable[[], Awaitable[object]]) -> None:
        """Start the lease renewal (and the sweeps, unless turned off) in the running loop, once."""
        if self._task is not None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # constructed outside a loop: started by the first conversation
            return
        self._task = asyncio.ensure_future(self._run(sweep_once))

    async def _run(self, sweep_once: Callable[[], Awaitable[object]]) -> None:
        loop = asyncio.get_running_loop()
        lease = self.store.lease
        next_sweep = loop.time()
        while True:
            try:
                await self._call(self.store.renew_async(self.owner))
            except Exception as exc:
                self._note("journal_lease_renewal_failed", exc)
            if self.background and loop.time() >= next_sweep:
                next_sweep = loop.time() + lease
                try:
                    await sweep_once()
                except Exception as exc:  # down or slow: the next sweep catches up
                    self.failures += 1
                    self._note("journal_sweep_failed", exc)
            await asyncio.sleep(lease / 3)

    async def stop(self) -> None:
        """Stop the background task (first thing ``aclose()`` does: its sweep uses the pool)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)

    async def aclose(self) -> None:
        """Release the lease once the client's conversations ended (what is left may be swept at once)
        and close the journal if the client opened it; each step bounded."""
        await self.stop()
        try:
            await self._call(self.store.release_async(self.owner))
        except Exception as exc:  # the lease runs out by itself
            self._note("journal_release_failed", exc)
        if self.owned:
            try:
                await asyncio.wait_for(self.store.aclose(), self.store.op_timeout + 1.0)
            except Exception as exc:
                self._note("journal_close_failed", exc)


async def sweep_journal(
    requester: Requester, mine: ClientJournal | None, journal: JournalValue, *, include_live: bool
) -> SweepReport:
    """A client's sweep of ``journal`` (opened for the sweep and closed after, if a path or URL), or of
    its own journal when ``journal`` is None."""
    if journal is None:
        if mine is None:
            raise TypeError("this client has no journal: give sweep() one (a Journal, a path or a redis:// URL)")
        return await sweep(requester, mine.store, include_live_processes=include_live, claimer=mine.owner)
    try:
        store, owned = await asyncio.to_thread(open_journal, journal)
    except JOURNAL_DOWN as exc:  # a file that cannot be opened (ValueError/TypeError: bad input, as given)
        raise journal_error(journal, exc, "opened") from exc
    assert store is not None
    try:
        return await sweep(requester, store, include_live_processes=include_live)
    finally:
        if owned:  # opened for this sweep only: a close that fails leaves nothing of ours behind
            with contextlib.suppress(Exception):
                await store.aclose()
