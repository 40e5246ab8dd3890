"""Crash-safe cleanup: a small SQLite journal of the conversations that exist on a server.

A row is written right after ``create`` succeeded (with the session cookies the DELETE needs) and
removed right after the DELETE succeeded. Each row names its owner, whose lease (``owners``) says
whether it is alive; rows of an owner whose lease expired or was released are deleted later by a
sweep (a client's background sweep, :meth:`H2oClient.sweep`, ``h2o-fsm sweep``). The file holds
secrets (session cookies): it is created with mode 0600 and its contents are never logged.

Safe to use from a long-running service:

* The ``*_async`` methods run the SQLite I/O in a worker thread (``asyncio.to_thread``): the event
  loop never waits for the disk or for a lock. The sync methods stay for scripts and the CLI.
* SQLite's busy timeout is short and bounded (``busy_timeout``, 0.25 s by default): a journal that
  another process keeps locked makes a write raise ``sqlite3.OperationalError`` ("database is
  locked") promptly instead of waiting; the engine reports it.
* A row that cannot be read is skipped and described in :attr:`JournalScan.bad_rows` (never the
  cookie values) while the other rows are returned: one bad row never stops a sweep.
* The path must not be a symbolic link (``ValueError``); a file that is not a SQLite database raises
  a ``ValueError`` naming the path.
* A file of an earlier version (one ``conversations`` table, rows keyed by pid) is read as it is:
  the lease tables are added beside it, and its rows, which have no owner, may be swept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

from ._journal_base import DEFAULT_LEASE, JournalBackend, JournalEntry, JournalScan, check_lease, new_owner
from ._journal_file import check_row, open_file

__all__ = ["Journal", "JournalEntry", "JournalScan"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS conversations (
        base_url TEXT NOT NULL, conversation_id TEXT NOT NULL, cookies TEXT NOT NULL,
        created_at REAL NOT NULL, pid INTEGER NOT NULL, PRIMARY KEY (base_url, conversation_id))""",
    # since leases: who wrote each row, what a sweep needs, and a sweeper's claim
    """CREATE TABLE IF NOT EXISTS conversation_owners (
        base_url TEXT NOT NULL, conversation_id TEXT NOT NULL, owner TEXT, dialect TEXT,
        generation_id TEXT, claimed_by TEXT, claimed_until REAL, PRIMARY KEY (base_url, conversation_id))""",
    "CREATE TABLE IF NOT EXISTS owners (owner TEXT PRIMARY KEY, expires_at REAL NOT NULL)",
)
_SELECT = """SELECT c.rowid, c.base_url, c.conversation_id, c.cookies, c.created_at, c.pid,
    m.owner, m.dialect, m.generation_id, o.owner IS NOT NULL
    FROM conversations c
    LEFT JOIN conversation_owners m ON m.base_url = c.base_url AND m.conversation_id = c.conversation_id
    LEFT JOIN owners o ON o.owner = m.owner AND o.expires_at > ?"""
_RENEW = "INSERT INTO owners VALUES (?, ?) ON CONFLICT(owner) DO UPDATE SET expires_at = excluded.expires_at"
_KEY = "base_url = ? AND conversation_id = ?"
_MAX_BUSY_TIMEOUT = 30.0


class Journal(JournalBackend):
    """The journal file. Thread-safe; each write is its own committed transaction.

    Args:
        path: the SQLite file (created with mode 0600; must not be a symbolic link).
        busy_timeout: seconds a statement waits for another connection's lock before raising
            ``sqlite3.OperationalError`` (0 < busy_timeout <= 30).
        lease: seconds an owner's lease lasts once renewed (default 30). Hosts sharing one file
            compare wall clocks: keep them in sync.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = 0.25, lease: float = DEFAULT_LEASE
    ) -> None:
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, (int, float)):
            raise TypeError(f"busy_timeout must be a number of seconds, not {type(busy_timeout).__name__}")
        if not 0 < busy_timeout <= _MAX_BUSY_TIMEOUT:
            raise ValueError(f"busy_timeout must be > 0 and <= {_MAX_BUSY_TIMEOUT:g} s, got {busy_timeout!r}")
        self.lease = check_lease(lease)
        self.path = Path(path)
        self.busy_timeout = float(busy_timeout)
        self.op_timeout = self.busy_timeout + 1.0
        self.owner = new_owner()  # the owner of rows written without one (scripts, the CLI)
        open_file(self.path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(self.path), timeout=self.busy_timeout, check_same_thread=False, isolation_level=None
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                self._db.execute(statement)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            raise ValueError(f"journal path {str(self.path)!r} is not a usable SQLite database: {exc}") from exc

    @classmethod
    async def open_async(
        cls, path: str | os.PathLike[str], *, busy_timeout: float = 0.25, lease: float = DEFAULT_LEASE
    ) -> Journal:
        """Open (or create) the journal in a worker thread."""
        return await asyncio.to_thread(cls, path, busy_timeout=busy_timeout, lease=lease)

    def __repr__(self) -> str:
        return f"<Journal {self.path}>"

    def _write(self, *statements: tuple[str, tuple[object, ...]]) -> int:
        """Run ``statements`` in one transaction; the rows the last one changed."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                changed = 0
                for sql, args in statements:
                    changed = self._db.execute(sql, args).rowcount
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return changed

    # ---------------------------------------------------------------- sync API
    def add(
        self, base_url: str, conversation_id: str, cookies: dict[str, str], *,
        owner: str | None = None, dialect: str | None = None,
    ) -> None:
        """Record a live conversation (replacing an older row of the same id) and renew its owner's
        lease (default: this journal's own owner, whose lease :meth:`close` releases)."""
        owner = self._writer(owner)
        now = time.time()
        key = (base_url, conversation_id)
        self._write(
            ("INSERT OR REPLACE INTO conversations VALUES (?, ?, ?, ?, ?)",
             (*key, json.dumps(cookies), now, os.getpid())),
            ("INSERT OR REPLACE INTO conversation_owners VALUES (?, ?, ?, ?, NULL, NULL, NULL)",
             (*key, owner, dialect)),
            (_RENEW, (owner, now + self.lease)),
        )

    def running(self, base_url: str, conversation_id: str, generation_id: str, cookies: dict[str, str]) -> None:
        """Note the generation a turn starts, and the session's cookies now."""
        key = (base_url, conversation_id)
        self._write(
            (f"UPDATE conversations SET cookies = ? WHERE {_KEY}", (json.dumps(cookies), *key)),
            (f"UPDATE conversation_owners SET generation_id = ? WHERE {_KEY}", (generation_id, *key)),
        )

    def remove(self, base_url: str, conversation_id: str) -> None:
        """Forget a conversation (it was deleted on the server)."""
        key = (base_url, conversation_id)
        self._write((f"DELETE FROM conversations WHERE {_KEY}", key),
                    (f"DELETE FROM conversation_owners WHERE {_KEY}", key))

    def _read(self, base_url: str | None, sweepable: bool) -> JournalScan:
        where, args = ("", [time.time()]) if base_url is None else (" WHERE c.base_url = ?", [time.time(), base_url])
        with self._lock:
            rows = self._db.execute(f"{_SELECT}{where} ORDER BY c.created_at", args).fetchall()
        scan = JournalScan(entries=[], bad_rows=[])
        for row in rows:
            checked = check_row(row[:9])
            if isinstance(checked, str):
                scan.bad_rows.append(checked)
            elif sweepable and row[9]:
                scan.live += 1
            else:
                scan.entries.append(checked)
        return scan

    def scan(self, base_url: str | None = None) -> JournalScan:
        """Every readable entry (of ``base_url``, or all), oldest first, and the rows skipped."""
        return self._read(base_url, sweepable=False)

    def entries(self, base_url: str | None = None) -> list[JournalEntry]:
        """The readable entries (``scan(base_url).entries``); bad rows are skipped."""
        return self.scan(base_url).entries

    def sweepable(self, base_url: str | None = None, *, include_live: bool = False) -> JournalScan:
        """The entries whose owner's lease expired or was released (all with ``include_live``)."""
        return self._read(base_url, sweepable=not include_live)

    def claim(self, entry: JournalEntry, claimer: str, ttl: float, *, include_live: bool = False) -> bool:
        now, key = time.time(), (entry.base_url, entry.conversation_id)
        alive = "" if include_live else " AND o.owner IS NULL"
        found = f"""SELECT 1 FROM conversations c
            LEFT JOIN conversation_owners m ON m.base_url = c.base_url AND m.conversation_id = c.conversation_id
            LEFT JOIN owners o ON o.owner = m.owner AND o.expires_at > ?
            WHERE c.base_url = ? AND c.conversation_id = ? AND COALESCE(m.claimed_until, 0) <= ?{alive}"""
        take = """INSERT INTO conversation_owners (base_url, conversation_id, claimed_by, claimed_until)
            SELECT ?, ?, ?, ? WHERE EXISTS (%s) ON CONFLICT(base_url, conversation_id) DO UPDATE SET
            claimed_by = excluded.claimed_by, claimed_until = excluded.claimed_until""" % found  # noqa: UP031
        return self._write((take, (*key, claimer, now + ttl, now, *key, now))) == 1

    def unclaim(self, entry: JournalEntry, claimer: str) -> None:
        self._write((f"UPDATE conversation_owners SET claimed_by = NULL, claimed_until = NULL WHERE {_KEY}"
                     " AND claimed_by = ?", (entry.base_url, entry.conversation_id, claimer)))

    def renew(self, owner: str) -> None:
        self._write((_RENEW, (owner, time.time() + self.lease)))

    def release(self, owner: str) -> None:
        self._write(("DELETE FROM owners WHERE owner = ?", (owner,)))

    def close(self) -> None:
        """Release this journal's own owner (its rows may be swept now) and close the file."""
        if self._owner_used:
            with contextlib.suppress(sqlite3.Error):  # locked or closed: the lease runs out by itself
                self.release(self.owner)
            self._owner_used = False
        with self._lock:
            self._db.close()

    # ---------------------------------------------------------------- async API (off the loop)
    async def add_async(
        self, base_url: str, conversation_id: str, cookies: dict[str, str], *,
        owner: str | None = None, dialect: str | None = None,
    ) -> None:
        """:meth:`add` in a worker thread."""
        await asyncio.to_thread(self.add, base_url, conversation_id, dict(cookies), owner=owner, dialect=dialect)

    async def running_async(
        self, base_url: str, conversation_id: str, generation_id: str, cookies: dict[str, str]
    ) -> None:
        await asyncio.to_thread(self.running, base_url, conversation_id, generation_id, dict(cookies))

    async def remove_async(self, base_url: str, conversation_id: str) -> None:
        """:meth:`remove` in a worker thread."""
        await asyncio.to_thread(self.remove, base_url, conversation_id)

    async def scan_async(self, base_url: str | None = None) -> JournalScan:
        """:meth:`scan` in a worker thread."""
        return await asyncio.to_thread(self.scan, base_url)

    async def entries_async(self, base_url: str | None = None) -> list[JournalEntry]:
        """:meth:`entries` in a worker thread."""
        return (await self.scan_async(base_url)).entries

    async def sweepable_async(self, base_url: str | None, *, include_live: bool = False) -> JournalScan:
        return await asyncio.to_thread(self.sweepable, base_url, include_live=include_live)

    async def claim_async(self, entry: JournalEntry, claimer: str, ttl: float, *, include_live: bool = False) -> bool:
        return await asyncio.to_thread(self.claim, entry, claimer, ttl, include_live=include_live)

    async def unclaim_async(self, entry: JournalEntry, claimer: str) -> None:
        await asyncio.to_thread(self.unclaim, entry, claimer)

    async def renew_async(self, owner: str) -> None:
        await asyncio.to_thread(self.renew, owner)

    async def release_async(self, owner: str) -> None:
        await asyncio.to_thread(self.release, owner)

    async def aclose(self) -> None:
        """:meth:`close` in a worker thread (it waits for a statement another thread is running)."""
        await asyncio.to_thread(self.close)
