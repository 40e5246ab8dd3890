"""Crash-safe cleanup with real processes: replicas killed with SIGKILL mid-answer, live ones beside
them, two sweepers at once, a restarted process that has its predecessor's pid (a PID namespace).
Each test runs on the SQLite journal and on real Redis and PostgreSQL servers (started by the tests)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_support import postgres_server
from redis_support import redis_server, unique_namespace

from h2o_fsm import H2oClient, Journal, JournalBackend
from h2o_fsm.server import Fault, LocalServer, ServerConfig

__all__ = ["postgres_server", "redis_server"]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

LEASE = 1.0  # short, so that the tests stay short; a sweep runs every lease period
BOUND = LEASE + LEASE + 3.0  # lease + one period, and slack for a loaded machine

REPLICA = r"""
import asyncio, os, sys
from h2o_fsm import H2oClient, Journal

url, spec, dialect, mode = sys.argv[1:5]
journal = spec if "://" in spec else Journal(spec, lease=float(os.environ["LEASE"]))

async def main():
    async with H2oClient(url, journal=journal, dialect=dialect) as client:
        if mode == "stream":  # one long answer: prints its id once streaming, then reads on
            async with client.conversation() as conv:
                async with conv.turn("hello there") as reader:
                    printed = False
                    async for _ in reader:
                        if not printed:
                            print(conv.conversation_id, os.getpid(), flush=True)
                            printed = True
        else:  # "leave N": create N conversations, then die as kill -9 would
            ids = []
            for _ in range(int(mode.split()[1])):
                conv = client.conversation()
                while conv.conversation_id is None:
                    await conv.step()
                ids.append(conv.conversation_id)
            print(" ".join(ids), os.getpid(), flush=True)
            os._exit(0)

asyncio.run(main())
"""

SWEEPER = r"""
import asyncio, json, os, sys, time
from h2o_fsm import H2oClient, Journal

url, spec, dialect, at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
journal = spec if "://" in spec else Journal(spec, lease=float(os.environ["LEASE"]))

async def main():
    async with H2oClient(url, journal=journal, dialect=dialect, background_sweep=False) as client:
        time.sleep(max(0.0, at - time.time()))  # both sweepers start their sweep at the same moment
        report = await client.sweep()
    print(json.dumps({"deleted": report.deleted, "skipped": report.skipped, "failed": report.failed,
                      "gone": report.already_gone, "pid": os.getpid()}), flush=True)

asyncio.run(main())
"""


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The journal as a replica names it: a SQLite path, or a Redis or PostgreSQL URL (a namespace of
    its own)."""
    if request.param == "sqlite":
        return str(tmp_path / "fleet.sqlite")
    server = request.getfixturevalue(f"{request.param}_server")
    return f"{server.url}?lease={LEASE:g}&namespace={unique_namespace()}"


def journal_of(spec: str) -> JournalBackend | str:
    return spec if "://" in spec else Journal(spec, lease=LEASE)


def start(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "LEASE": str(LEASE)}
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def first_line(child: subprocess.Popen[str]) -> list[str]:
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, f"the replica printed nothing: {child.stderr.read() if child.stderr else ''}"
    return line.split()


@pytest.fixture
def reaper() -> Iterator[list[subprocess.Popen[str]]]:
    children: list[subprocess.Popen[str]] = []
    yield children
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait(10)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()


async def wait_gone(server: LocalServer, cid: str, since: float, limit: float) -> float:
    while cid in server.accounting.live_ids and time.monotonic() - since < limit:
        await asyncio.sleep(0.05)
    return time.monotonic() - since


async def test_a_replica_killed_mid_answer_is_stopped_and_deleted_by_another_a_live_one_is_not(
    spec: str, reaper: list[subprocess.Popen[str]]
) -> None:
    with LocalServer(ServerConfig(max_tokens=400, token_delay=0.05), dialect="chat-ui") as server:
        victim = start(REPLICA, server.url, spec, "chat-ui", "stream")
        survivor = start(REPLICA, server.url, spec, "chat-ui", "stream")
        reaper += [victim, survivor]
        victim_id, survivor_id = first_line(victim)[0], first_line(survivor)[0]
        journal = journal_of(spec)
        async with H2oClient(server.url, journal=journal, dialect="chat-ui") as sweeper:  # sweeps in the background
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            killed = time.monotonic()
            took = await wait_gone(server, victim_id, killed, 15.0)
            assert victim_id not in server.accounting.live_ids, "the killed replica's conversation was left"
            assert took <= BOUND, f"gone {took:.1f} s after the kill (lease {LEASE:g} s + one period)"
            await asyncio.sleep(2 * LEASE)  # two more sweeps: the live replica's conversation stays
            assert survivor_id in server.accounting.live_ids and survivor.poll() is None
            survivor.send_signal(signal.SIGKILL)  # and once it dies, it goes too
            survivor.wait(10)
            await wait_gone(server, survivor_id, time.monotonic(), 15.0)
            assert sweeper.journal_failures == 0
        if isinstance(journal, Journal):
            await journal.aclose()
        acct = server.accounting
        assert acct.live == 0 and acct.deleted_twice == 0, acct.snapshot()
        for cid in (victim_id, survivor_id):  # stop-generating first (the server was still generating), then DELETE
            calls = [(r.method, r.path.rsplit("/", 1)[-1]) for r in acct.requests_for(path_prefix=f"/conversation/{cid}")]
            assert calls[-2:] == [("POST", "stop-generating"), ("DELETE", cid)], calls
        assert acct.stopped_running >= 2


async def test_two_replicas_sweeping_at_once_never_both_delete_one_entry(
    spec: str, reaper: list[subprocess.Popen[str]]
) -> None:
    slow_delete = Fault("delete", "stall", seconds=0.05, count=-1)  # so that the two sweeps overlap
    with LocalServer(ServerConfig(max_tokens=4), faults=[slow_delete]) as server:
        dead = start(REPLICA, server.url, spec, "h2o", "leave 12")
        reaper.append(dead)
        *left, _pid = first_line(dead)
        dead.wait(30)
        assert len(left) == 12 and server.accounting.live == 12
        time.sleep(LEASE + 0.2)  # the dead owner's lease runs out
        at = str(time.time() + 2.0)
        sweepers = [start(SWEEPER, server.url, spec, "h2o", at) for _ in range(2)]
        reaper += sweepers
        reports = [json.loads(s.communicate(timeout=60)[0]) for s in sweepers]
        acct = server.accounting
        deletes = Counter(r.conversation_id for r in acct.requests_for("DELETE"))
        assert deletes == Counter(left), deletes  # each one DELETE, from one sweeper or the other
        assert sum(r["deleted"] for r in reports) == 12 and all(r["failed"] == 0 for r in reports), reports
        assert all(r["deleted"] > 0 for r in reports), reports  # they did sweep at once
        assert acct.live == 0 and acct.deleted_twice == 0


def _unshare_works() -> bool:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    try:
        probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c",
                                "import os; print(os.getpid())"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0 and probe.stdout.strip() == "1"


async def test_a_restarted_process_with_its_predecessors_pid_sweeps_what_it_left(
    spec: str, reaper: list[subprocess.Popen[str]]
) -> None:
    """The container case: killed and restarted as PID 1 of a fresh PID namespace, the service's new
    process deletes what its predecessor (PID 1 too) left — a pid check would have skipped it as alive."""
    if not _unshare_works():
        pytest.skip("needs `unshare --pid --fork --mount-proc` (Linux, root or user namespaces)")
    env = {**os.environ, "LEASE": str(LEASE)}
    with LocalServer(ServerConfig(max_tokens=4)) as server:
        first = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", REPLICA,
                                server.url, spec, "h2o", "leave 1"], capture_output=True, text=True, env=env, timeout=60)
        cid, pid = first.stdout.split()
        assert pid == "1" and server.accounting.live_ids == {cid}, first.stderr
        time.sleep(LEASE + 0.2)
        second = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", SWEEPER,
                                 server.url, spec, "h2o", "0"], capture_output=True, text=True, env=env, timeout=60)
        report = json.loads(second.stdout)
        assert report["pid"] == 1 and report["deleted"] == 1 and report["failed"] == 0, (report, second.stderr)
        assert server.accounting.live == 0 and server.accounting.deleted_twice == 0
