"""Soak: many random fault plans × caller deadlines × cancellations × early exits, with the leak invariant.

    python benchmarks/soak.py [--runs 10000] [--seed 1] [--dialect h2o|chat-ui|both]

Same invariants as tests/test_property.py, with a seeded ``random`` instead of hypothesis so that it
can run for long, and one client for all runs (a long-running service): the server is ``reset()``
between runs, so the client also meets a server that forgot its session. Per run: every conversation
ends in a terminal state; every id the client learned is deleted once or its cleanup failure reported;
``assert_nothing_leaked`` holds; transient DELETE failures alone leave nothing undeleted; errors are
``H2oError`` or the caller's own cancellation/timeout; the caller gets control within its deadline
(or cancellation) + 0.1 s. Prints the counts, the worst lateness and peak memory; exits 1 on any
violation.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import random
import resource
import sys
import time
from collections.abc import AsyncIterator
from typing import get_args

from h2o_fsm import Conversation, H2oClient, H2oError, Retries, Timeouts
from h2o_fsm.server import DIALECTS, DialectName, Fault, FaultKind, FaultPlan, LocalServer, ServerConfig, phases_of
from h2o_fsm.testing import assert_nothing_leaked

TIMEOUTS = Timeouts(connect=1, settings=1, create=1, fetch=1, send=1, token=0.3, delete=1, cleanup=3)
RETRIES = Retries(attempts=3, backoff=0.005, max_wait=0.02, max_time=1)
LATENESS = 0.1  # seconds the caller may wait past its deadline or cancellation


def allowed_kinds(phase: str) -> list[str]:
    """The fault kinds that apply to ``phase`` (``Fault`` refuses the others)."""
    kinds = []
    for kind in get_args(FaultKind):
        try:
            Fault(phase, kind)
        except ValueError:
            continue
        kinds.append(kind)
    return kinds


def random_plan(rng: random.Random, dialect: DialectName) -> tuple[FaultPlan, bool]:
    """Up to 3 random faults of ``dialect``'s phases, then 0–4 transient DELETE 503s in a row.
    Returns the plan and whether it has DELETE faults other than the transient ones."""
    faults = []
    for _ in range(rng.randint(0, 3)):
        phase = rng.choice(phases_of(dialect))
        kind = rng.choice(allowed_kinds(phase))
        status = rng.choice([400, 429, 500, 502, 503] + ([] if phase == "delete" else [404]))
        faults.append(Fault(phase, kind, status=status, seconds=rng.uniform(0, 0.4),  # type: ignore[arg-type]
                            at_token=rng.randint(0, 10), count=rng.choice([1, 1, 2, -1])))
    other_delete_faults = any(f.phase == "delete" for f in faults)
    transient = rng.randint(0, 4)
    if transient:
        faults.append(Fault("delete", "status", status=503, count=transient))
    return FaultPlan(faults), other_delete_faults


@contextlib.asynccontextmanager
async def deadline(seconds: float | None) -> AsyncIterator[None]:
    if seconds is None:
        yield
    elif sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            yield
    else:  # pragma: no cover - 3.10: cancel ourselves, report TimeoutError
        task = asyncio.current_task()
        assert task is not None
        fired: list[bool] = []

        def fire() -> None:
            fired.append(True)
            task.cancel()

        handle = asyncio.get_running_loop().call_later(seconds, fire)
        try:
            yield
        except asyncio.CancelledError:
            if fired:
                raise TimeoutError from None
            raise
        finally:
            handle.cancel()


async def soak(server: LocalServer, runs: int, seed: int) -> int:
    rng = random.Random(seed)
    dialect = server.dialect
    outcomes: collections.Counter[str] = collections.Counter()
    problems: collections.Counter[str] = collections.Counter()
    fired = 0
    worst_late = 0.0
    loop = asyncio.get_running_loop()
    async with H2oClient(server.url, dialect=dialect, retries=RETRIES, timeouts=TIMEOUTS, max_connections=8) as client:
        for i in range(runs):
            plan, other_delete_faults = random_plan(rng, dialect)
            server.reset(plan)
            undeleted_before = client.undeleted_conversations
            convs: list[Conversation] = []
            cancel_after = rng.choice([None, rng.uniform(0, 0.3)])
            break_after = rng.choice([None, rng.randint(0, 14)])
            timeout = rng.choice([None, rng.uniform(0.005, 0.3)])
            turns = rng.randint(1, 3)

            async def consume() -> None:
                async with deadline(timeout), client.conversation() as conv:  # noqa: B023
                    convs.append(conv)  # noqa: B023
                    for _ in range(turns):  # noqa: B023
                        n = 0
                        async with contextlib.aclosing(conv.stream("hello")) as chunks:
                            async for _chunk in chunks:
                                n += 1
                                if break_after is not None and n > break_after:  # noqa: B023
                                    return

            started = loop.time()
            task = asyncio.ensure_future(consume())
            if cancel_after is not None:
                await asyncio.wait([task], timeout=cancel_after)
                task.cancel()
            try:
                await task
                outcomes["answered"] += 1
            except (asyncio.CancelledError, TimeoutError) as exc:
                outcomes[type(exc).__name__] += 1
            except H2oError as exc:
                outcomes[f"{type(exc).__name__}@{exc.phase.value if exc.phase else None}"] += 1
            except BaseException as exc:  # a violation, counted
                problems["non-H2oError"] += 1
                print(f"run {i}: unexpected {exc!r}", file=sys.stderr)
            bounds = [b for b in (timeout, cancel_after) if b is not None]
            if bounds:
                late = loop.time() - started - min(bounds)
                worst_late = max(worst_late, late)
                if late > LATENESS:
                    problems["late caller"] += 1
                    print(f"run {i}: caller got control {late * 1000:.0f} ms after its deadline", file=sys.stderr)
            # the endings run in tasks the client owns; a service goes on meanwhile: wait for them here
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
            if others:
                _, pending = await asyncio.wait(others, timeout=TIMEOUTS.cleanup + 1)
                if pending:
                    problems["task outlived the cleanup budget"] += 1
            fired += len(plan.fired)
            reported = {c.conversation_id for c in convs if c.cleanup_error is not None and c.conversation_id}
            gone = server.accounting.gone_ids
            if not all(c.state.is_terminal for c in convs):
                problems["non-terminal state"] += 1
            if any(c.conversation_id and c.conversation_id not in reported | gone for c in convs):
                problems["learned id neither deleted nor reported"] += 1
            try:
                assert_nothing_leaked(server, reported=reported)
            except AssertionError as exc:
                problems["leak"] += 1
                print(f"run {i}: {exc}", file=sys.stderr)
            if not other_delete_faults and (reported or client.undeleted_conversations != undeleted_before):
                problems["transient DELETE failures left something undeleted"] += 1
                print(f"run {i}: undeleted with transient DELETE failures only; fired={plan.fired}", file=sys.stderr)
    bad = sum(problems.values())
    print(f"dialect={dialect} runs={runs} faults_fired={fired} violations={bad} "
          f"worst_lateness_ms={worst_late * 1000:.1f} undeleted_reported={client.undeleted_conversations} "
          f"peak_rss_mib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")
    print("outcomes:", dict(outcomes.most_common()))
    if problems:
        print("violations:", dict(problems.most_common()))
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=10000, help="runs per dialect")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dialect", choices=[*DIALECTS, "both"], default="both")
    args = ap.parse_args()
    bad = 0
    for dialect in DIALECTS if args.dialect == "both" else (args.dialect,):
        t0 = time.monotonic()
        config = ServerConfig(max_tokens=12, token_delay=0.001, keep_request_log=False)
        with LocalServer(config, dialect=dialect) as server:
            bad += asyncio.run(soak(server, args.runs, args.seed))
        print(f"seconds={time.monotonic() - t0:.0f}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
