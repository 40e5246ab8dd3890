"""Soak: many random fault plans × cancellations × early exits × timeouts, with the leak invariant.

    python benchmarks/soak.py [--runs 10000] [--seed 1]

Same invariants as tests/test_property.py, with a seeded ``random`` instead of hypothesis so that it
can run for long. Prints runs, faults fired, errors by type, leaks (must be 0 beyond the documented
create_then_error ones and reported cleanup failures) and peak memory.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import resource
import sys
import time

from h2o_fsm import H2oClient, H2oError, Retries, Timeouts
from h2o_fsm.server import Fault, FaultPlan, LocalServer, ServerConfig
from h2o_fsm.server._faults import ALLOWED, PHASES
from h2o_fsm.testing import expected_leaks

TIMEOUTS = Timeouts(connect=1, settings=1, create=1, send=1, token=0.3, delete=1, cleanup=3)
RETRIES = Retries(attempts=3, backoff=0.005, max_wait=0.02, max_time=1)


def random_plan(rng: random.Random) -> FaultPlan:
    faults = []
    for _ in range(rng.randint(0, 3)):
        phase = rng.choice(PHASES)
        kind = rng.choice(sorted(ALLOWED[phase]))
        status = rng.choice([400, 429, 500, 502, 503] + ([] if phase == "delete" else [404]))
        faults.append(Fault(phase, kind, status=status, seconds=rng.uniform(0, 0.4), at_token=rng.randint(0, 10),
                            count=rng.choice([1, 1, 2, -1])))
    return FaultPlan(faults)


async def soak(server: LocalServer, runs: int, seed: int) -> int:
    rng = random.Random(seed)
    errors: collections.Counter[str] = collections.Counter()
    fired = 0
    unexplained = 0
    abandoned = 0
    async with H2oClient(server.url, retries=RETRIES, timeouts=TIMEOUTS, max_connections=8) as client:
        for i in range(runs):
            plan = server.set_faults(random_plan(rng))
            before = server.accounting.snapshot()
            convs = []
            cancel_after = rng.choice([None, rng.uniform(0, 0.05)])
            break_after = rng.choice([None, rng.randint(0, 14)])
            timeout = rng.choice([None, rng.uniform(0.005, 0.1)])

            async def consume() -> None:
                async with client.conversation() as conv:
                    convs.append(conv)
                    n = 0
                    async for _ in conv.stream("hello"):
                        n += 1
                        if break_after is not None and n > break_after:
                            break

            task = asyncio.ensure_future(consume() if timeout is None else asyncio.wait_for(consume(), timeout))
            if cancel_after is not None:
                await asyncio.sleep(cancel_after)
                task.cancel()
            try:
                await task
            except (asyncio.CancelledError, asyncio.TimeoutError) as exc:
                errors[type(exc).__name__] += 1
            except H2oError as exc:
                errors[f"{type(exc).__name__}@{exc.phase}"] += 1
            # CPython < 3.12: cancelling asyncio.wait_for while it is itself cancelling its inner task
            # abandons that task (it still runs and deletes). Let such stragglers finish, and count them.
            stragglers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
            if stragglers:
                abandoned += 1
                await asyncio.wait(stragglers, timeout=10)
            after = server.accounting.snapshot()
            fired += len(plan.fired)
            created = after["created"] - before["created"]  # type: ignore[operator]
            deleted = after["deleted"] - before["deleted"]  # type: ignore[operator]
            reported = sum(1 for c in convs if c.cleanup_error is not None)
            if created - deleted != expected_leaks(plan) + reported or not all(c.state.is_terminal for c in convs):
                unexplained += 1
                print(f"run {i}: unexplained leak or non-terminal state; plan={plan.fired}", file=sys.stderr)
            if after["deleted_twice"] != before["deleted_twice"]:
                unexplained += 1
                print(f"run {i}: deleted twice", file=sys.stderr)
            state = server.app.state.h2o
            for cid in list(server.accounting.live_ids):
                state.conversations.pop(cid, None)
                server.accounting.live_ids.discard(cid)
    print(f"runs={runs} faults_fired={fired} unexplained_leaks={unexplained} tasks_abandoned_by_wait_for={abandoned} "
          f"peak_rss_mib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")
    print("outcomes:", dict(errors.most_common()))
    return unexplained


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    t0 = time.monotonic()
    with LocalServer(ServerConfig(max_tokens=12, token_delay=0.001, keep_request_log=False)) as server:
        bad = asyncio.run(soak(server, args.runs, args.seed))
    print(f"seconds={time.monotonic() - t0:.0f}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
