"""Concurrency (issue 16 item 1): 500 and 1,000 concurrent conversations on ONE client, each under its
own caller deadline, against the bundled emulator in another process on loopback; the old provider's
way (a new aiohttp session per call, as in ``benchmarks/run.py``) in the same run.

    python benchmarks/concurrency.py [--sizes 500 1000] [--rounds 5] [--deadline 30] [--httpx]
        [--server-python .venv/bin/python]  # this Python: the default install, no extras

Per variant and size it prints: successes (of n), client CPU per conversation (``time.process_time`` of
this process over the burst and until the client has no conversation left - ``ask`` returns with the
answer while its DELETE goes on in a task of the client; the old way's DELETE is inside its call -
divided by n: the server's CPU is in its own process and not counted), and p50/p99 of the time the
client adds over the server's own time. The server's own time of a conversation is the time it spends
answering by its configuration (``--max-tokens`` x ``--token-delay`` of streaming, the one deliberate
wait), taken off each conversation's wall time (until ``ask`` returns); what is left is the client's own
work plus queueing (at the pool, in the event loop, at the busy server), the same server for every
variant. Ratios are against the old way, measured in the same run and paired: each round measures every
variant once, back to back (the order alternates between rounds), a round's ratio is its variant's CPU
over the old way's in that same round, and the ratio printed is the median of the rounds' ratios, with
their range (a machine shared with others drifts between rounds; within a round much less). The other
columns are medians over rounds. Bounded: each conversation has its deadline, each burst
is awaited at most ``deadline + 10`` s.

"via http_client.send" is the same transport handed in inside an ``httpx.AsyncClient``: requests
then go through httpx's client layer (the second send path of ``_requester``), to measure that fork.
``--httpx`` adds ``H2oClient(transport="httpx")`` (httpx's own pool: slow at this concurrency; the
reason the default transport is aiohttp's).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import httpx
from run import old_aiohttp  # the old provider's way, as benchmarks/run.py measures it (same folder)

from h2o_fsm import H2oClient, Retries, Timeouts, fast_transport
from h2o_fsm._transport import no_cookie_jar

TARGET = 1.0  # client CPU per conversation at most this many times the old way's


def start_server(max_tokens: int, token_delay: float, python: str = sys.executable) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [python, "-m", "h2o_fsm.cli", "serve", "--max-tokens", str(max_tokens), "--no-request-log",
         "--token-delay", str(token_delay)],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


async def burst(
    fn: Callable[[], Awaitable[str]], n: int, deadline: float, settle: Callable[[], Awaitable[None]] | None = None
) -> tuple[int, float, list[float]]:
    """n conversations at once, each under ``deadline``: (successes, CPU s, wall s of each success).
    ``settle``: awaited after the last one returned, inside the CPU window (the work a variant left running)."""

    async def one() -> float | None:
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(deadline):
                answer = await fn()
        except (Exception, asyncio.TimeoutError) as exc:
            FAILURES[_reason(exc)] += 1
            return None
        return time.perf_counter() - t0 if answer else None

    gc.collect()
    cpu0 = time.process_time()
    results = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), deadline + 10)
    if settle is not None:
        await asyncio.wait_for(settle(), deadline + 10)
    cpu = time.process_time() - cpu0
    walls = [r for r in results if r is not None]
    return len(walls), cpu, walls


def settled(client: H2oClient) -> Callable[[], Awaitable[None]]:
    """Until ``client`` has no conversation left: ``ask`` returns with the answer, the stream's tail and the
    DELETE go on in its task; their CPU is the conversation's as much as the old way's DELETE is its own."""

    async def wait() -> None:
        while client.live_conversations:  # noqa: ASYNC110 - polled: the client has no event for it
            await asyncio.sleep(0.005)

    return wait


FAILURES: collections.Counter[str] = collections.Counter()  # why conversations failed, printed after the table


def _reason(exc: BaseException) -> str:
    phase = getattr(exc, "phase", None)
    return f"{type(exc).__name__}" + (f" at {phase}" if phase is not None else "") + f": {str(exc)[:100]}"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main_async(args: argparse.Namespace, url: str) -> bool:
    server_own = args.max_tokens * args.token_delay
    timeouts = Timeouts(connect=args.deadline, settings=args.deadline, create=args.deadline, send=args.deadline,
                        token=args.deadline, cleanup=args.deadline)
    kw = {"timeouts": timeouts, "retries": Retries(attempts=1), "max_connections": args.max_connections}
    clients = {"h2o-fsm H2oClient.ask (default install)": H2oClient(url, **kw)}  # type: ignore[arg-type]
    # the second send path (issue 15 item 5): the same transport behind an httpx.AsyncClient handed in,
    # so every request goes through httpx's client layer (build_request, send) instead of straight to it
    pool = httpx.Limits(max_connections=args.max_connections, max_keepalive_connections=args.max_connections)
    handed = httpx.AsyncClient(transport=fast_transport(max_connections=args.max_connections), limits=pool,
                               cookies=no_cookie_jar())
    clients["h2o-fsm, the same via http_client.send"] = H2oClient(url, http_client=handed, **kw)  # type: ignore[arg-type]
    if args.httpx:
        clients["h2o-fsm H2oClient.ask, transport='httpx'"] = H2oClient(url, transport="httpx", **kw)  # type: ignore[arg-type]
    variants: dict[str, Callable[[], Awaitable[str]]] = {
        "old provider (new aiohttp session per call)": lambda: old_aiohttp(url),
    }
    settle: dict[str, Callable[[], Awaitable[None]]] = {}
    for name, client in clients.items():
        variants[name] = lambda client=client: client.ask("Hello")  # type: ignore[misc]
        settle[name] = settled(client)
    for name, fn in variants.items():  # warm up: imports, connections, the shared session's settings
        await burst(fn, 20, args.deadline, settle.get(name))
    ok = True
    print(f"server: another process, {args.max_tokens} tokens x {args.token_delay * 1e3:.0f} ms "
          f"(its own time {server_own * 1e3:.0f} ms a conversation); deadline {args.deadline:g} s each; "
          f"medians of {args.rounds} rounds\n")
    print(f"{'variant':44} {'n':>5} {'ok':>5} {'CPU/conv':>9} {'ratio':>6} {'added p50':>10} {'p99':>8}"
          "  (ratio's range over rounds)")
    for n in args.sizes:
        rows: dict[str, dict[str, list[float]]] = {k: {"ok": [], "cpu": [], "p50": [], "p99": []} for k in variants}
        old = "old provider (new aiohttp session per call)"
        for r in range(args.rounds):
            order = list(variants.items()) if r % 2 == 0 else list(reversed(variants.items()))
            for name, fn in order:
                good, cpu, walls = await burst(fn, n, args.deadline, settle.get(name))
                added = [max(0.0, w - server_own) for w in walls]
                rows[name]["ok"].append(good)
                rows[name]["cpu"].append(cpu / n)
                rows[name]["p50"].append(pct(added, 0.5))
                rows[name]["p99"].append(pct(added, 0.99))
                await asyncio.sleep(0.5)  # let the server finish its deletes
        for name, row in rows.items():
            cpu = statistics.median(row["cpu"])
            paired = [mine / base for mine, base in zip(row["cpu"], rows[old]["cpu"])]  # round by round
            ratio = statistics.median(paired)
            good = int(min(row["ok"]))
            print(f"{name:44} {n:5} {good:5} {cpu * 1e3:7.2f}ms {ratio:5.2f}x "
                  f"{statistics.median(row['p50']) * 1e3:8.0f}ms {statistics.median(row['p99']) * 1e3:6.0f}ms"
                  f"  ({min(paired):.2f}-{max(paired):.2f}x)")
            if name.endswith("(default install)"):
                ok = ok and good == n and ratio <= TARGET
        print()
    for client in clients.values():
        await client.aclose()
    await handed.aclose()
    for reason, count in FAILURES.most_common(5):
        print(f"failed: {count} x {reason}")
    print(f"target: the default install completes every conversation at {TARGET:.1f}x the old way's CPU or less: "
          f"{'met' if ok else 'NOT met'}")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 1000])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--deadline", type=float, default=30.0)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--token-delay", type=float, default=0.01)
    ap.add_argument("--max-connections", type=int, default=100, help="the client's pool (default: H2oClient's)")
    ap.add_argument("--httpx", action="store_true", help="also httpx's own transport")
    ap.add_argument("--server-python", default=sys.executable,
                    help="the Python that runs the emulator (one with the server extra), so that this one can be "
                         "the install a user gets by default (`pip install h2o-fsm`, no extras)")
    args = ap.parse_args()
    if sys.version_info < (3, 11):
        sys.exit("needs Python 3.11+ (asyncio.timeout)")
    proc, url = start_server(args.max_tokens, args.token_delay, args.server_python)
    try:
        ok = asyncio.run(main_async(args, url))
    finally:
        proc.terminate()
        proc.wait(10)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
