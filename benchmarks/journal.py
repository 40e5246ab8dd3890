"""The journal's cost per conversation (SQLite and Redis, same run, against no journal) and how long
after a ``kill -9`` a dead replica's conversation is gone (issue 17). Prints figures.

    pip install -e '.[bench,redis,postgres]' && python benchmarks/journal.py [--n 300] [--rounds 3] [--kills 3]

Cost: one client, the bundled emulator in another process, ``--n`` one-shot asks one after another
and ``--n`` more 50 at a time, per journal (none, a SQLite file, a Redis server started here from the
distribution's ``redis-server``, ephemeral port, no persistence; a PostgreSQL server likewise, from
``initdb``/``postgres``, fsync off), rounds interleaved, the median
round kept. Printed: wall time and client CPU (``time.process_time``, threads included) per
conversation, and what the journal adds over none. The background sweep is on (as by default).

Calls: each journal call (add, running, remove) on its own, one after another.

Kill: a replica in a subprocess streams a long chat-ui answer with a journal of lease L; it is killed
with SIGKILL; a client of this process with the same journal (background sweep every L) deletes it.
Printed: seconds from the kill until the emulator (a LocalServer here: its accounting is read) no
longer has the conversation, against the bound lease + one period.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from postgres_support import start_postgres  # the tests' helpers: servers on ephemeral ports  # noqa: E402
from redis_support import start_redis  # noqa: E402

from h2o_fsm import H2oClient, Journal, PostgresJournal, RedisJournal  # noqa: E402
from h2o_fsm.server import LocalServer, ServerConfig  # noqa: E402

REPLICA = r"""
import asyncio, sys
from h2o_fsm import H2oClient, Journal
url, spec, lease = sys.argv[1], sys.argv[2], float(sys.argv[3])
journal = spec if "://" in spec else Journal(spec, lease=lease)
async def main():
    async with H2oClient(url, journal=journal, dialect="chat-ui") as client:
        async with client.conversation() as conv:
            async with conv.turn("hello") as reader:
                first = True
                async for _ in reader:
                    if first:
                        print(conv.conversation_id, flush=True)
                        first = False
asyncio.run(main())
"""


def emulator(dialect: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "h2o_fsm.cli", "serve", "--no-request-log", "--max-tokens", "16",
                             "--dialect", dialect], stdout=subprocess.PIPE, text=True)


async def one_round(url: str, dialect: str, journal: object, n: int) -> tuple[float, float, float]:
    """(wall ms per conversation one at a time, CPU ms per conversation, wall ms per conversation 50 at once)."""
    async with H2oClient(url, dialect=dialect, journal=journal, transport="aiohttp") as client:  # type: ignore[arg-type]
        await client.ask("warm up")
        cpu0, t0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            await client.ask("Hello")
        serial = (time.perf_counter() - t0) / n * 1000
        cpu = (time.process_time() - cpu0) / n * 1000
        sem = asyncio.Semaphore(50)

        async def bounded() -> None:
            async with sem:
                await client.ask("Hello")

        t0 = time.perf_counter()
        await asyncio.gather(*(bounded() for _ in range(n)))
        concurrent = (time.perf_counter() - t0) / n * 1000
        assert client.journal_failures == 0 and client.undeleted_conversations == 0
    return serial, cpu, concurrent


async def cost(n: int, rounds: int, urls: dict[str, str], folder: Path) -> None:
    for dialect in ("h2o", "chat-ui"):
        proc = emulator(dialect)
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            results: dict[str, list[tuple[float, float, float]]] = {"none": [], "sqlite": [], "redis": [],
                                                                    "postgres": []}
            for r in range(rounds):
                for name in results:
                    journal = open_one(name, urls, folder, f"bench-{dialect}-{r}")
                    results[name].append(await one_round(url, dialect, journal, n))
                    if journal is not None:
                        await journal.aclose()  # type: ignore[attr-defined]
        finally:
            proc.terminate()
            proc.wait(10)
        base = [statistics.median(col) for col in zip(*results["none"], strict=True)]
        print(f"\n{dialect}: {n} one-shot asks in a row, then {n} at 50 concurrent; median of {rounds} rounds")
        print(f"  {'journal':8} {'wall/conv':>10} {'+journal':>9} {'CPU/conv':>9} {'+journal':>9} "
              f"{'wall/conv@50':>13} {'+journal':>9}")
        for name, rows in results.items():
            med = [statistics.median(col) for col in zip(*rows, strict=True)]
            print(f"  {name:8} {med[0]:8.2f}ms {med[0] - base[0]:+7.2f}ms {med[1]:7.2f}ms {med[1] - base[1]:+7.2f}ms "
                  f"{med[2]:11.2f}ms {med[2] - base[2]:+7.2f}ms")


def open_one(name: str, urls: dict[str, str], folder: Path, tag: str) -> object:
    if name == "sqlite":
        return Journal(folder / f"{tag}.sqlite")
    if name == "redis":
        return RedisJournal(urls["redis"], namespace=tag)
    if name == "postgres":
        return PostgresJournal(urls["postgres"], namespace=tag)
    return None


async def calls_alone(urls: dict[str, str], folder: Path, n: int = 500) -> None:
    """Each journal call on its own, awaited one after another (what a conversation waits for)."""
    print(f"\njournal calls alone, {n} of each, one at a time (h2o: add + remove; chat-ui: + running)")
    for name in ("sqlite", "redis", "postgres"):
        journal: Any = open_one(name, urls, folder, "calls")
        figures = []
        for call in ("add", "running", "remove"):
            t0 = time.perf_counter()
            for i in range(n):
                cid = f"{i:024x}"
                if call == "add":
                    await journal.add_async("http://x", cid, {"hf-chat": "v"}, owner="o", dialect="chat-ui")
                elif call == "running":
                    await journal.running_async("http://x", cid, "generation", {"hf-chat": "v"})
                else:
                    await journal.remove_async("http://x", cid)
            figures.append(f"{call} {(time.perf_counter() - t0) / n * 1000:.3f} ms")
        await journal.aclose()
        print(f"  {name:8} " + ", ".join(figures))


async def kill_to_gone(kills: int, leases: list[float], urls: dict[str, str], folder: Path) -> None:
    print(f"\nkill -9 mid-answer -> conversation gone (a sweeping client, background sweep every lease); {kills} runs")
    with LocalServer(ServerConfig(max_tokens=2000, token_delay=0.01), dialect="chat-ui") as server:
        for lease in leases:
            for name in ("sqlite", "redis", "postgres"):
                spec = (str(folder / f"kill-{lease}.sqlite") if name == "sqlite"
                        else f"{urls[name]}?lease={lease:g}&namespace=kill-{lease:g}")
                journal = Journal(spec, lease=lease) if name == "sqlite" else spec
                times = []
                async with H2oClient(server.url, journal=journal, dialect="chat-ui"):
                    for _ in range(kills):
                        child = subprocess.Popen([sys.executable, "-c", REPLICA, server.url, spec, str(lease)],
                                                 stdout=subprocess.PIPE, text=True)
                        assert child.stdout is not None
                        cid = child.stdout.readline().strip()
                        await asyncio.sleep(lease * 0.37)  # kill at different points of the lease period
                        child.send_signal(signal.SIGKILL)
                        child.wait(10)
                        child.stdout.close()
                        killed = time.perf_counter()
                        while cid in server.accounting.live_ids and time.perf_counter() - killed < 60:
                            await asyncio.sleep(0.01)
                        times.append(time.perf_counter() - killed)
                if isinstance(journal, Journal):
                    journal.close()
                print(f"  {name:8} lease {lease:4.1f}s: gone after min {min(times):.2f}s median "
                      f"{statistics.median(times):.2f}s max {max(times):.2f}s "
                      f"(bound lease + period = {2 * lease:.1f}s)")
        acct = server.accounting
        print(f"  emulator: created={acct.created} deleted={acct.deleted} live={acct.live} "
              f"deleted_twice={acct.deleted_twice} stops_that_hit_a_running_generation={acct.stopped_running}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--leases", type=float, nargs="+", default=[1.0, 3.0])
    args = ap.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.system()}")
    redis, postgres = start_redis(), start_postgres()
    urls = {"redis": redis.url, "postgres": postgres.url}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(calls_alone(urls, Path(tmp)))
            asyncio.run(cost(args.n, args.rounds, urls, Path(tmp)))
            asyncio.run(kill_to_gone(args.kills, args.leases, urls, Path(tmp)))
    finally:
        redis.close()
        postgres.close()


if __name__ == "__main__":
    main()
