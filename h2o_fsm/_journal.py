"""Crash-safe cleanup: a small SQLite journal of the conversations that exist on a server.

A row is written right after ``create`` succeeded (with the session cookies the DELETE needs) and
removed right after the DELETE succeeded. Rows left behind by a process that died (``kill -9``) are
deleted later by :func:`sweep` (``h2o-fsm sweep``). The file holds secrets (session cookies): it is
created with mode 0600 and its contents are never logged.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

__all__ = ["Journal", "JournalEntry"]

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


class JournalEntry:
    __slots__ = ("base_url", "conversation_id", "cookies", "created_at", "pid")

    def __init__(self, base_url: str, conversation_id: str, cookies: dict[str, str], created_at: float, pid: int):
        self.base_url = base_url
        self.conversation_id = conversation_id
        self.cookies = cookies
        self.created_at = created_at
        self.pid = pid

    def __repr__(self) -> str:  # cookies are secret
        return f"<JournalEntry {self.conversation_id} at {self.base_url} pid={self.pid}>"


class Journal:
    """The journal file. Thread-safe; each write is its own committed transaction."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(self.path, 0o600)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def __repr__(self) -> str:
        return f"<Journal {self.path}>"

    def add(self, base_url: str, conversation_id: str, cookies: dict[str, str]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO conversations VALUES (?, ?, ?, ?, ?)",
                (base_url, conversation_id, json.dumps(cookies), time.time(), os.getpid()),
            )

    def remove(self, base_url: str, conversation_id: str) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM conversations WHERE base_url = ? AND conversation_id = ?", (base_url, conversation_id)
            )

    def entries(self, base_url: str | None = None) -> list[JournalEntry]:
        with self._lock:
            if base_url is None:
                rows = self._db.execute("SELECT * FROM conversations ORDER BY created_at").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM conversations WHERE base_url = ? ORDER BY created_at", (base_url,)
                ).fetchall()
        return [JournalEntry(r[0], r[1], json.loads(r[2]), r[3], r[4]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
