"""The SQLite journal's file and rows: opened without following a symlink (mode 0600), each row
checked before it becomes an entry (a hand-edited or foreign row is described, never trusted)."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

from ._journal_base import JournalEntry

__all__ = ["check_row", "open_file"]

_ID_SHOWN = 64  # characters of a bad row's conversation id put in its description
_SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def open_file(path: Path) -> None:
    """Create ``path`` (mode 0600) or check the existing one, without following a symlink: an existing
    file that is not empty must be a SQLite database (then set to 0600); any other is left as it was."""
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
        head = os.read(fd, len(_SQLITE_HEADER))
        if head and head != _SQLITE_HEADER:  # someone else's file: refused before anything of it changes
            raise ValueError(f"journal path {str(path)!r} is not a usable SQLite database (not a journal; "
                             "left as it was): give a new file's path or an existing journal's")
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # the file we opened, never a link's target
        else:  # pragma: no cover - Windows has no fchmod (nor POSIX modes to speak of)
            os.chmod(path, 0o600)
    finally:
        os.close(fd)


def check_row(row: tuple[object, ...], where: str | None = None) -> JournalEntry | str:
    """The entry of a row ``(rowid, base_url, id, cookies JSON, created_at, pid, owner, dialect,
    generation_id)``, or why it cannot be one (without cookie values)."""
    key, base_url, cid, cookies_text, created_at, pid, owner, dialect, generation = row
    shown = repr(cid[:_ID_SHOWN]) if isinstance(cid, str) else f"of type {type(cid).__name__}"
    where = f"{where or 'row'} {key} (conversation {shown})"
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
    for name, value in (("owner", owner), ("dialect", dialect), ("generation id", generation)):
        if value is not None and not isinstance(value, str):
            return f"{where}: the {name} is not a text"
    return JournalEntry(base_url, cid, cookies, float(created_at), pid, owner=owner,  # type: ignore[arg-type]
                        dialect=dialect, generation_id=generation)  # type: ignore[arg-type]
