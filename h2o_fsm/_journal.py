"""Crash-safe cleanup: a small SQLite journal of the conversations that exist on a server.

A row is written right after ``create`` succeeded (with the session cookies the DELETE needs) and
removed right after the DELETE succeeded. Rows left behind by a process that died (``kill -9``) are
deleted later by :func:`sweep` (``h2o-fsm sweep``). The file holds secrets (session cookies): it is
created with mode 0600 and its contents are never logged.

Safe to use from a long-running service:

* The ``*_async`` methods run the SQLite I/O in a worker thread (``asyncio.to_thread``): the event
  loop never waits for the disk or for a lock. The sync methods stay for scripts and the CLI.
* SQLite's busy timeout is short and bounded (``busy_timeout``, 0.25 s by default): a journal that
  another process keeps locked makes a write raise ``sqlite3.OperationalError`` ("database is
  locked") promptly instead of waiting; the engine reports it.
* A row that cannot be read (cookies not JSON, wrong types: a hand-edited or foreign file) is
  skipped and described in :attr:`JournalScan.bad_rows` (its rowid, its conversation id and why;
  never the cookie values) while the other rows are returned: one bad row never stops a sweep.
* The path must not be a symbolic link: the journal refuses it with a ``ValueError`` rather than
  follow it (following it would chmod the link's target, another file, to 0600). The file is opened
  with ``O_NOFOLLOW`` where the platform has it and its mode is set through that descriptor.
* A file that is not a SQLite database raises a ``ValueError`` naming the path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

__all__ = ["Journal", "JournalEntry", "JournalScan"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    base_url TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    cookies TEXT NOT NULL,
    created_at REAL NOT NULL,
    pid INTEGER NOT NULL,
    PRIMARY KEY (base_url, conversation_id)
)
"""

_COLUMNS = "rowid, base_url, conversation_id, cookies, created_at, pid"
_MAX_BUSY_TIMEOUT = 30.0
_ID_SHOWN = 64  # characters of a bad row's conversation id put in its description


class JournalEntry:
    """One journalled conversation: where it lives, its id, and the cookies its DELETE needs."""

    __slots__ = ("base_url", "conversation_id", "cookies", "created_at", "pid")

    def __init__(self, base_url: str, conversation_id: str, cookies: dict[str, str], created_at: float, pid: int):
        self.base_url = base_url
        self.conversation_id = conversation_id
        self.cookies = cookies
        self.created_at = created_at
        self.pid = pid

    def __repr__(self) -> str:  # cookies are secret
        return f"<JournalEntry {self.conversation_id} at {self.base_url} pid={self.pid}>"


@dataclasses.dataclass
class JournalScan:
    """What a read of the journal found: the readable entries, and a description of each row that
    was skipped (rowid, conversation id, reason; never cookie values)."""

    entries: list[JournalEntry]
    bad_rows: list[str]


def _open_file(path: Path) -> None:
    """Create ``path`` (mode 0600) or check the existing one, without following a symlink."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    if info is not None and stat.S_ISLNK(info.st_mode):
        raise ValueError(f"journal path {str(path)!r} is a symbolic link; give the real file's path")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise ValueError(f"journal path {str(path)!r} is not a regular file")
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if info is None and os.path.islink(path):  # swapped for a link since lstat (O_NOFOLLOW: ELOOP)
            raise ValueError(f"journal path {str(path)!r} is a symbolic link; give the real file's path") from exc
        raise
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # the file we opened, never a link's target
        else:  # pragma: no cover - Windows has no fchmod (nor POSIX modes to speak of)
            os.chmod(path, 0o600)
    finally:
        os.close(fd)


def _check_row(row: tuple[object, ...]) -> JournalEntry | str:
    """The entry of a row, or why it cannot be one (without cookie values)."""
    rowid, base_url, cid, cookies_text, created_at, pid = row
    shown = repr(cid[:_ID_SHOWN]) if isinstance(cid, str) else f"of type {type(cid).__name__}"
    where = f"row {rowid} (conversation {shown})"
    if not isinstance(cid, str) or not cid:
        return f"{where}: the conversation id is not a non-empty text"
    if not isinstance(base_url, str) or not base_url:
        return f"{where}: the base URL is not a non-empty text"
    if not isinstance(cookies_text, str):
        return f"{where}: the cookies are not text"
    try:
        cookies = json.loads(cookies_text)
    except ValueError:
        return f"{where}: the cookies are not JSON"
    if not isinstance(cookies, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in cookies.items()):
        return f"{where}: the cookies are not an object of text values"
    if isinstance(created_at, bool) or not isinstance(created_at, (int, float)) or not math.isfinite(created_at):
        return f"{where}: created_at is not a number"
    if isinstance(pid, bool) or not isinstance(pid, int):
        return f"{where}: pid is not an integer"
    return JournalEntry(base_url, cid, cookies, float(created_at), pid)


class Journal:
    """The journal file. Thread-safe; each write is its own committed transaction.

    Args:
        path: the SQLite file (created with mode 0600; must not be a symbolic link).
        busy_timeout: seconds a statement waits for another connection's lock before raising
            ``sqlite3.OperationalError`` (0 < busy_timeout <= 30).
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 0.25) -> None:
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, (int, float)):
            raise TypeError(f"busy_timeout must be a number of seconds, not {type(busy_timeout).__name__}")
        if not 0 < busy_timeout <= _MAX_BUSY_TIMEOUT:
            raise ValueError(f"busy_timeout must be > 0 and <= {_MAX_BUSY_TIMEOUT:g} s, got {busy_timeout!r}")
        self.path = Path(path)
        self.busy_timeout = float(busy_timeout)
        _open_file(self.path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(self.path), timeout=self.busy_timeout, check_same_thread=False, isolation_level=None
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            raise ValueError(f"journal path {str(self.path)!r} is not a usable SQLite database: {exc}") from exc

    @classmethod
    async def open_async(cls, path: str | os.PathLike[str], *, busy_timeout: float = 0.25) -> Journal:
        """Open (or create) the journal in a worker thread."""
        return await asyncio.to_thread(cls, path, busy_timeout=busy_timeout)

    def __repr__(self) -> str:
        return f"<Journal {self.path}>"

    # ---------------------------------------------------------------- sync API
    def add(self, base_url: str, conversation_id: str, cookies: dict[str, str]) -> None:
        """Record a live conversation (replacing an older row of the same id)."""
        row = (base_url, conversation_id, json.dumps(cookies), time.time(), os.getpid())
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO conversations VALUES (?, ?, ?, ?, ?)", row)

    def remove(self, base_url: str, conversation_id: str) -> None:
        """Forget a conversation (it was deleted on the server)."""
        with self._lock:
            self._db.execute(
                "DELETE FROM conversations WHERE base_url = ? AND conversation_id = ?", (base_url, conversation_id)
            )

    def scan(self, base_url: str | None = None) -> JournalScan:
        """Every readable entry (of ``base_url``, or all), oldest first, and the rows skipped."""
        with self._lock:
            if base_url is None:
                rows = self._db.execute(f"SELECT {_COLUMNS} FROM conversations ORDER BY created_at").fetchall()
            else:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM conversations WHERE base_url = ? ORDER BY created_at", (base_url,)
                ).fetchall()
        scan = JournalScan(entries=[], bad_rows=[])
        for row in rows:
            checked = _check_row(row)
            if isinstance(checked, str):
                scan.bad_rows.append(checked)
            else:
                scan.entries.append(checked)
        return scan

    def entries(self, base_url: str | None = None) -> list[JournalEntry]:
        """The readable entries (``scan(base_url).entries``); bad rows are skipped."""
        return self.scan(base_url).entries

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---------------------------------------------------------------- async API (off the loop)
    async def add_async(self, base_url: str, conversation_id: str, cookies: dict[str, str]) -> None:
        """:meth:`add` in a worker thread."""
        await asyncio.to_thread(self.add, base_url, conversation_id, dict(cookies))

    async def remove_async(self, base_url: str, conversation_id: str) -> None:
        """:meth:`remove` in a worker thread."""
        await asyncio.to_thread(self.remove, base_url, conversation_id)

    async def scan_async(self, base_url: str | None = None) -> JournalScan:
        """:meth:`scan` in a worker thread."""
        return await asyncio.to_thread(self.scan, base_url)

    async def entries_async(self, base_url: str | None = None) -> list[JournalEntry]:
        """:meth:`entries` in a worker thread."""
        return (await self.scan_async(base_url)).entries

    async def aclose(self) -> None:
        """:meth:`close` in a worker thread (it waits for a statement another thread is running)."""
        await asyncio.to_thread(self.close)
