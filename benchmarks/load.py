"""Load: N concurrent conversations on one client against the bundled server in another process.

    python benchmarks/load.py [--n 1000] [--max-concurrency 1000] [--max-connections 100] [--dialect chat-ui]

Prints completed, failed, leaked (from the server's accounting) and peak memory of this process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
import tracemalloc

import httpx

from h2o_fsm import H2oClient, Timeouts
from h2o_fsm._dialects import DIALECTS, DialectName


async def run(url: str, n: int, concurrency: int, connections: int, dialect: DialectName) -> None:
    tracemalloc.start()
    timeouts = Timeouts(send=120, token=120, total=300)
    async with H2oClient(url, dialect=dialect, max_concurrency=concurrency, max_connections=connections,
                         timeouts=timeouts) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(client.ask(f"question {i}") for i in range(n)), return_exceptions=True)
        elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    failed = [r for r in results if isinstance(r, BaseException)]
    async with httpx.AsyncClient() as http:
        acct = (await http.get(url + "/_emulator/accounting")).json()
    print(json.dumps({
        "dialect": dialect, "conversations": n, "completed": n - len(failed), "failed": len(failed),
        "created": acct["created"], "deleted": acct["deleted"], "leaked": acct["live"],
        "seconds": round(elapsed, 2), "per_second": round(n / elapsed, 1),
        "peak_traced_mib": round(peak / 2**20, 1),
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))
    if failed:
        print("first failure:", repr(failed[0]))
    if failed or acct["live"]:
        sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--max-concurrency", type=int, default=1000)
    ap.add_argument("--max-connections", type=int, default=100)
    ap.add_argument("--dialect", choices=DIALECTS, default="h2o")
    args = ap.parse_args()
    proc = subprocess.Popen([sys.executable, "-m", "h2o_fsm.cli", "serve", "--no-request-log", "--max-tokens", "32",
                             "--dialect", args.dialect], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        asyncio.run(run(url, args.n, args.max_concurrency, args.max_connections, args.dialect))
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
