"""Resumable answers (chat-ui): the answer after a cut at every point, against the answer without one,
and what a reattach costs. Prints figures measured side by side in one run.

    python benchmarks/reattach.py [--tokens 64] [--rounds 5]

The emulator runs in this process' background thread on loopback (token delay 0, keepAlive off);
for each transport, each cut point ``0..tokens`` is tried ``rounds`` times. ``equal`` counts answers
identical to the uncut one (every chunk joined: nothing lost, nothing twice); ``deleted once`` checks
the server's accounting. Latency: the median wall time of a one-turn ``ask`` with a cut (one reattach:
the replay of the run's log) over the median without, and the median time from the last chunk before
the cut to the first chunk after it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from h2o_fsm import H2oClient
from h2o_fsm.server import Fault, LocalServer, ServerConfig, generate


async def one(server: LocalServer, transport: str, cut: int | None) -> tuple[str, float, float | None]:
    server.reset([Fault("stream", "cut", at_token=cut)] if cut is not None else [])
    stamps: list[float] = []
    parts: list[str] = []
    t0 = time.perf_counter()
    async with H2oClient(server.url, dialect="chat-ui", transport=transport) as client:  # type: ignore[arg-type]
        async with client.conversation() as conv:
            async for chunk in conv.stream("hi"):
                parts.append(chunk)
                stamps.append(time.perf_counter())
    total = time.perf_counter() - t0
    gap = None
    if cut is not None and 0 < cut < len(stamps):
        gap = stamps[cut] - stamps[cut - 1]  # the chunk after the cut came through the reattach
    acct = server.accounting
    assert acct.live == 0 and acct.deleted == acct.created == 1 and acct.deleted_twice == 0
    return "".join(parts), total, gap


async def main(tokens: int, rounds: int) -> None:
    config = ServerConfig(max_tokens=tokens, keep_alive=0)
    expected = "".join(generate([("user", "hi")], tokens))
    with LocalServer(config, dialect="chat-ui") as server:
        for transport in ("httpx", "aiohttp"):
            await one(server, transport, None)  # warm up
            plain: list[float] = []
            cut_totals: list[float] = []
            gaps: list[float] = []
            equal = tried = 0
            for _ in range(rounds):
                for at in range(tokens + 1):
                    text, total, _ = await one(server, transport, None)
                    plain.append(total)
                    text, total, gap = await one(server, transport, at)
                    tried += 1
                    equal += text == expected
                    cut_totals.append(total)
                    if gap is not None:
                        gaps.append(gap)
            base, cut_med = statistics.median(plain), statistics.median(cut_totals)
            print(f"{transport:8} cut points 0..{tokens} x {rounds}: {equal}/{tried} answers equal to the uncut one, "
                  f"each conversation deleted once")
            print(f"{'':8} ask without a cut {base * 1000:.2f} ms, with a cut and one reattach {cut_med * 1000:.2f} ms "
                  f"({cut_med / base:.2f}x); gap across the cut {statistics.median(gaps) * 1000:.2f} ms median, "
                  f"{max(gaps) * 1000:.2f} ms max")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.tokens, args.rounds))
