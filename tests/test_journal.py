"""The journal: rows, async I/O off the event loop, locks, bad rows, symlinks and foreign files."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import emulator, journal_threads

from h2o_fsm import H2oClient, Journal, JournalScan
from h2o_fsm.server import LocalServer, ServerConfig
from h2o_fsm.testing import assert_nothing_leaked

URL = "http://127.0.0.1:9"
SECRET = "s3cr3t-cookie-value"


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "j.sqlite")
    yield j
    j.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class _LoopLag:
    """Measures the event loop's worst lateness: a task that asks to wake every 5 ms."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, time.perf_counter() - before - 0.005)

    async def __aenter__(self) -> _LoopLag:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another connection (as another process would) that keeps the journal's write lock."""
    other = sqlite3.connect(str(path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO conversations VALUES ('x', 'held', '{}', 0, 1)")
    return other


# ---------------------------------------------------------------- rows
def test_rows_come_and_go_and_the_file_is_private(tmp_path: Path, journal: Journal) -> None:
    assert _mode(tmp_path / "j.sqlite") == 0o600
    journal.add(URL, "a" * 24, {"hf-chat": SECRET})
    journal.add("http://other", "b" * 24, {})
    assert [e.conversation_id for e in journal.entries(URL)] == ["a" * 24]
    assert [e.conversation_id for e in journal.entries()] == ["a" * 24, "b" * 24]
    entry = journal.entries(URL)[0]
    assert entry.cookies == {"hf-chat": SECRET} and entry.pid == os.getpid()
    assert SECRET not in repr(entry) and SECRET not in repr(journal)
    journal.remove(URL, "a" * 24)
    assert [e.conversation_id for e in journal.entries()] == ["b" * 24]


def test_an_existing_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    Journal(path).close()
    assert _mode(path) == 0o600


async def test_async_methods_match_the_sync_ones(journal: Journal) -> None:
    await journal.add_async(URL, "a" * 24, {"hf-chat": SECRET})
    await asyncio.gather(*(journal.add_async(URL, f"{i:024x}", {"hf-chat": SECRET}) for i in range(1, 41)))
    entries = await journal.entries_async(URL)
    assert len(entries) == 41 and {e.cookies["hf-chat"] for e in entries} == {SECRET}
    assert [e.conversation_id for e in entries] == [e.conversation_id for e in journal.entries(URL)]
    await journal.remove_async(URL, "a" * 24)
    scan = await journal.scan_async(URL)
    assert isinstance(scan, JournalScan) and len(scan.entries) == 40 and scan.bad_rows == []
    assert await journal.entries_async("http://nobody") == []


async def test_open_async_and_aclose(tmp_path: Path) -> None:
    j = await Journal.open_async(tmp_path / "a.sqlite", busy_timeout=0.1)
    await j.add_async(URL, "c" * 24, {})
    await j.aclose()
    again = Journal(tmp_path / "a.sqlite")
    assert [e.conversation_id for e in again.entries()] == ["c" * 24]
    again.close()


@pytest.mark.parametrize("value", [0, -1, 31, float("nan")])
def test_busy_timeout_must_be_short_and_positive(tmp_path: Path, value: float) -> None:
    with pytest.raises(ValueError, match="busy_timeout"):
        Journal(tmp_path / "j.sqlite", busy_timeout=value)


def test_busy_timeout_must_be_a_number(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="busy_timeout"):
        Journal(tmp_path / "j.sqlite", busy_timeout="1")  # type: ignore[arg-type]


# ---------------------------------------------------------------- locks
def test_a_locked_journal_raises_promptly(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    j = Journal(path, busy_timeout=0.2)
    other = _hold_write_lock(path)
    try:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            j.add(URL, "a" * 24, {"hf-chat": SECRET})
        assert time.monotonic() - started < 2.5  # not SQLite's default busy timeout (5 s)
        assert j.entries() == []  # readers are not blocked (WAL)
    finally:
        other.execute("ROLLBACK")
        other.close()
    j.add(URL, "a" * 24, {})  # usable again once the lock is gone
    assert len(j.entries()) == 1
    j.close()


async def test_a_locked_journal_does_not_stall_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    j = Journal(path, busy_timeout=0.6)  # long enough that running it on the loop would show
    await j.add_async(URL, "b" * 24, {})
    threads = journal_threads(j)
    other = _hold_write_lock(path)
    try:
        async with _LoopLag() as lag:
            started = time.monotonic()
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await j.add_async(URL, "a" * 24, {"hf-chat": SECRET})
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await j.remove_async(URL, "b" * 24)
            elapsed = time.monotonic() - started
            assert [e.conversation_id for e in await j.entries_async()] == ["b" * 24]
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert 1.0 <= elapsed < 3.0  # each write waited its busy timeout, then gave up
    assert threads and threading.get_ident() not in threads  # every SQLite call ran off the loop
    # on the loop a write would stall it >= 0.6 s (the thread check says so exactly); this bound only
    # catches a stall a loaded shared machine never makes
    assert lag.worst < 1.5, f"the event loop stalled {lag.worst * 1000:.0f} ms"
    await j.aclose()


# ---------------------------------------------------------------- bad rows
def _insert_raw(path: Path, *rows: tuple[object, ...]) -> None:
    db = sqlite3.connect(str(path), isolation_level=None)
    db.executemany("INSERT INTO conversations VALUES (?, ?, ?, ?, ?)", rows)
    db.close()


async def test_bad_rows_are_skipped_and_reported_without_cookie_values(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    j.add(URL, "good1" + "0" * 19, {"hf-chat": SECRET})
    _insert_raw(
        path,
        (URL, "notjson", "{" + SECRET, 1.0, 1),
        (URL, "list", f'["{SECRET}"]', 1.0, 1),
        (URL, "intvalue", '{"hf-chat": 12345}', 1.0, 1),
        (URL, "pidtext", f'{{"hf-chat": "{SECRET}"}}', 1.0, "abc"),
        (URL, "createdtext", "{}", "yesterday", 1),
        (URL, b"\x00blob", "{}", 1.0, 1),
        (b"blob-url", "badurl", "{}", 1.0, 1),
    )
    j.add(URL, "good2" + "0" * 19, {})
    scan = j.scan(URL)
    assert sorted(e.conversation_id for e in scan.entries) == ["good1" + "0" * 19, "good2" + "0" * 19]
    assert len(scan.bad_rows) == 6  # the blob-url row is not of URL
    reasons = "\n".join(scan.bad_rows)
    for cid in ("notjson", "list", "intvalue", "pidtext", "createdtext"):
        assert cid in reasons
    assert "not JSON" in reasons and "pid" in reasons and "created_at" in reasons and "bytes" in reasons
    assert SECRET not in reasons and "12345" not in reasons
    assert len(j.scan().bad_rows) == 7
    assert [e.conversation_id for e in j.entries(URL)] == [e.conversation_id for e in scan.entries]
    assert (await j.scan_async(URL)).bad_rows == scan.bad_rows
    j.close()


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has ended (its journal rows are leftovers)."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return dead.pid


async def test_a_bad_row_does_not_stop_a_sweep(tmp_path: Path, dead_pid: int) -> None:
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    with emulator(ServerConfig(max_tokens=4)) as server:
        async with httpx.AsyncClient(base_url=server.url) as raw:
            await raw.post("/settings", data={"activeModel": "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1",
                                              "ethicsModalAccepted": "true"}, headers={"Referer": server.url + "/"})
            created = await raw.post("/conversation", json={"model": "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1"})
            cid = created.json()["conversationId"]
            cookies = dict(raw.cookies)
        _insert_raw(path, (server.url, "0" * 24, "not json", 0.0, dead_pid))  # sorts first
        _insert_raw(path, (server.url, cid, json.dumps(cookies), 1.0, dead_pid))
        async with H2oClient(server.url, transport="httpx") as client:
            report = await client.sweep(j)
        assert report.deleted == 1 and report.failed == 0
        assert_nothing_leaked(server)
    assert j.entries() == [] and len(j.scan().bad_rows) == 1
    j.close()


# ---------------------------------------------------------------- paths
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes and symlinks")
def test_a_symlink_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("do not touch")
    os.chmod(target, 0o644)
    link = tmp_path / "j.sqlite"
    link.symlink_to(target)
    with pytest.raises(ValueError, match="symbolic link") as info:
        Journal(link)
    assert str(link) in str(info.value)
    assert _mode(target) == 0o644 and target.read_text() == "do not touch"


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_a_dangling_symlink_is_refused_and_nothing_created(tmp_path: Path) -> None:
    link = tmp_path / "j.sqlite"
    link.symlink_to(tmp_path / "nowhere.sqlite")
    with pytest.raises(ValueError, match="symbolic link"):
        Journal(link)
    assert not (tmp_path / "nowhere.sqlite").exists()


def test_a_file_that_is_not_sqlite_is_a_clear_value_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is not a database, just some text that is long enough " * 20)
    with pytest.raises(ValueError, match="not a usable SQLite database") as info:
        Journal(path)
    assert str(path) in str(info.value)


def test_a_directory_is_a_clear_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a regular file") as info:
        Journal(tmp_path)
    assert str(tmp_path) in str(info.value)


# ---------------------------------------------------------------- leases, claims, old files
_OLD_SCHEMA = """CREATE TABLE conversations (
    base_url TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    cookies TEXT NOT NULL,
    created_at REAL NOT NULL,
    pid INTEGER NOT NULL,
    PRIMARY KEY (base_url, conversation_id)
)"""


async def test_a_file_of_the_pid_era_is_read_and_its_rows_swept(tmp_path: Path) -> None:
    """A journal written before leases (one table, rows keyed by pid) is opened as it is; its rows have
    no owner and are swept — even one whose pid is alive here (the container case: PID 1 again)."""
    path = tmp_path / "old.sqlite"
    with LocalServer(ServerConfig(max_tokens=4)) as server:
        async with httpx.AsyncClient(base_url=server.url) as raw:
            await raw.post("/settings", data={"activeModel": "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1",
                                              "ethicsModalAccepted": "true"}, headers={"Referer": server.url + "/"})
            cids = [(await raw.post("/conversation", json={"model": "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1"}))
                    .json()["conversationId"] for _ in range(2)]
            cookies = json.dumps(dict(raw.cookies))
        old = sqlite3.connect(str(path), isolation_level=None)
        old.execute(_OLD_SCHEMA)
        old.execute("INSERT INTO conversations VALUES (?, ?, ?, ?, ?)", (server.url, cids[0], cookies, 1.0, 1))
        old.execute("INSERT INTO conversations VALUES (?, ?, ?, ?, ?)", (server.url, cids[1], cookies, 2.0, os.getpid()))
        old.close()
        os.chmod(path, 0o600)
        j = Journal(path)
        entries = j.entries(server.url)
        assert [(e.conversation_id, e.owner) for e in entries] == [(cids[0], None), (cids[1], None)]
        assert server.accounting.live == 2
        async with H2oClient(server.url, transport="httpx", background_sweep=False) as client:
            report = await client.sweep(j)
        assert (report.deleted, report.skipped, report.failed) == (2, 0, 0)
        assert_nothing_leaked(server)
    assert j.entries() == []
    j.close()
    tables = {r[0] for r in sqlite3.connect(str(path)).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"conversations", "conversation_owners", "owners"} <= tables


def test_leases_decide_what_is_sweepable_not_pids(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite", lease=0.3)
    j.add(URL, "a" * 24, {}, owner="alive")
    j.add(URL, "b" * 24, {}, owner="dying")
    j.add(URL, "c" * 24, {}, owner="closed")
    j.release("closed")
    scan = j.sweepable(URL)
    assert [e.conversation_id for e in scan.entries] == ["c" * 24] and scan.live == 2
    assert {e.pid for e in j.entries()} == {os.getpid()}  # all written by this live pid: irrelevant
    for _ in range(6):  # 0.6 s: "alive" renews, "dying" does not
        time.sleep(0.1)
        j.renew("alive")
    assert sorted(e.conversation_id for e in j.sweepable(URL).entries) == ["b" * 24, "c" * 24]
    assert len(j.sweepable(URL, include_live=True).entries) == 3
    j.close()


def test_a_claim_is_taken_once_and_given_back_only_by_its_claimer(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    j, other = Journal(path), Journal(path)
    j.add(URL, "a" * 24, {}, owner="gone")
    j.release("gone")
    [entry] = j.sweepable(URL).entries
    assert j.claim(entry, "one", 30) and not other.claim(entry, "two", 30)
    other.unclaim(entry, "two")  # not its claim: nothing happens
    assert not other.claim(entry, "two", 30)
    j.unclaim(entry, "one")
    assert other.claim(entry, "two", 30)
    other.remove(URL, "a" * 24)
    assert not j.claim(entry, "three", 30)
    j.add(URL, "b" * 24, {}, owner="alive")
    [live] = j.entries(URL)
    assert not j.claim(live, "x", 30) and j.claim(live, "x", 30, include_live=True)
    j.close()
    other.close()


def test_closing_a_journal_releases_its_own_owner(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    j.add(URL, "a" * 24, {})  # written under the journal's own owner
    reader = Journal(path)
    assert reader.sweepable(URL).live == 1
    j.close()
    assert [e.conversation_id for e in reader.sweepable(URL).entries] == ["a" * 24]
    reader.close()


def test_a_file_that_is_not_a_journal_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    """`--journal /etc/passwd` (a newcomer's mistake) once set the file to mode 0600 before refusing it."""
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n", encoding="utf-8")
    path.chmod(0o644)
    with pytest.raises(ValueError, match="not a usable SQLite database"):
        Journal(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.read_text(encoding="utf-8") == "not a database\n"
    with pytest.raises(ValueError, match="not a usable SQLite database"):
        H2oClient("http://127.0.0.1:9", journal=str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_an_empty_file_becomes_a_journal_of_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"
    path.touch(mode=0o644)
    Journal(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_sweep_of_a_journal_file_that_cannot_be_opened_is_an_h2o_journal_error(tmp_path: Path) -> None:
    from h2o_fsm import H2oError, H2oJournalError

    missing = tmp_path / "no-such-folder" / "j.sqlite"
    async with H2oClient(URL, dialect="h2o", background_sweep=False) as client:
        with pytest.raises(H2oJournalError, match="could not be opened") as caught:
            await client.sweep(missing)
    assert isinstance(caught.value, H2oError) and isinstance(caught.value.__cause__, FileNotFoundError)
    assert caught.value.journal == str(missing) and not missing.parent.exists()
    async with H2oClient(URL, dialect="h2o", background_sweep=False) as client:
        with pytest.raises(ValueError, match="symbolic link"):  # bad input stays a ValueError
            link = tmp_path / "link.sqlite"
            link.symlink_to(tmp_path / "elsewhere.sqlite")
            await client.sweep(link)
