"""Property tests over both dialects: random fault plans × caller deadlines × cancellations × early exits.

Each example runs 1–3 turns of one conversation against a real bundled server over loopback (reset
between examples), under a fault plan from ``h2o_fsm.testing.strategies.fault_plans`` plus up to four
transient DELETE failures in a row. After ``await client.aclose()``:

* every conversation id the client learned was deleted exactly once, unless its cleanup failure was
  reported (``conv.cleanup_error``, counted in ``client.undeleted_conversations``);
* nothing is live on the server that the testing kit cannot account for (``assert_nothing_leaked``);
* with no DELETE fault but the transient ones, nothing was left undeleted at all;
* every conversation is in a terminal state;
* the caller saw an ``H2oError`` of a phase a fault fired in, or its own cancellation/``TimeoutError``;
* the caller got control back within its deadline (or cancellation) + ``LATENESS`` (1 s: a caller kept
  waiting for cleanup is later than that — see below; the milliseconds are measured by
  ``benchmarks/deadlines.py``, not asserted on a shared machine);
* no task is left behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from contextlib import aclosing

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from support import caller_timeout, no_task_left

from h2o_fsm import Conversation, H2o, H2oClient, H2oError, Phase, Retries, Timeouts
from h2o_fsm.server import DIALECTS, Fault, FaultPlan, LocalServer, ServerConfig
from h2o_fsm.testing import assert_nothing_leaked
from h2o_fsm.testing.strategies import fault_plans, invalid_messages, invalid_parameters, messages, parameters

TIMEOUTS = Timeouts(connect=1, settings=1, create=1, fetch=1, send=1, token=0.3, delete=1, cleanup=3)
RETRIES = Retries(attempts=3, backoff=0.005, max_wait=0.02, max_time=1)
# The caller must get control back this soon after its deadline or cancellation (issue 10). What this
# guards: a caller never waits for cleanup. A conversation whose DELETE keeps failing (a 5xx with
# count=-1: a few examples per run; test_hostile's stalled-DELETE test is the fixed case) is retried for
# ~2 s of the 3 s cleanup budget, so a caller kept waiting for it is about 2 s late; a third of the
# cleanup budget is crossed by that bug, not by a loaded machine's scheduling (issue 15: 142 ms against
# a bound of 0.1 s was a flake).
LATENESS = TIMEOUTS.cleanup / 3


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, LocalServer]]:
    """One bundled server per dialect for the whole module; each example resets the one it uses."""
    config = ServerConfig(max_tokens=12, token_delay=0.001)
    started = {d: LocalServer(config, dialect=d).start() for d in DIALECTS}
    try:
        yield started  # type: ignore[misc]
    finally:
        for server in started.values():
            server.stop()


@dataclasses.dataclass(frozen=True)
class Scenario:
    plan: FaultPlan
    delete_failures: int  # transient 503s to DELETE, in a row
    deadline: float | None  # asyncio.timeout around the caller
    cancel_after: float | None  # task.cancel() of the caller
    break_after: int | None  # the caller stops reading after this many chunks
    turns: int


def scenarios(dialect: str) -> st.SearchStrategy[Scenario]:
    return st.builds(
        Scenario,
        plan=fault_plans(max_faults=3, dialect=dialect, max_stall=0.4),  # type: ignore[arg-type]
        delete_failures=st.integers(0, 4),
        deadline=st.none() | st.floats(0.005, 0.3),
        cancel_after=st.none() | st.floats(0, 0.3),
        break_after=st.none() | st.integers(0, 14),
        turns=st.integers(1, 3),
    )


async def run_caller(client: H2oClient, s: Scenario, convs: list[Conversation]) -> None:
    async def turns() -> None:
        async with client.conversation() as conv:
            convs.append(conv)
            for _ in range(s.turns):
                n = 0
                async with aclosing(conv.stream("hello")) as chunks:
                    async for _chunk in chunks:
                        n += 1
                        if s.break_after is not None and n > s.break_after:
                            return  # leaving a stream early ends the conversation (deleted)

    if s.deadline is None:
        await turns()
    else:
        async with caller_timeout(s.deadline):
            await turns()


@pytest.mark.parametrize("dialect", DIALECTS)
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
async def test_invariants_hold_under_random_faults(
    servers: dict[str, LocalServer], dialect: str, data: st.DataObject
) -> None:
    s = data.draw(scenarios(dialect), label="scenario")
    server = servers[dialect]
    plan = server.reset(FaultPlan(s.plan.faults))
    if s.delete_failures:
        plan.add(Fault("delete", "status", status=503, count=s.delete_failures))
    convs: list[Conversation] = []
    loop = asyncio.get_running_loop()
    client = H2oClient(server.url, dialect=dialect, retries=RETRIES, timeouts=TIMEOUTS, max_connections=8)  # type: ignore[arg-type]
    try:
        started = loop.time()
        task = asyncio.ensure_future(run_caller(client, s, convs))
        if s.cancel_after is not None:
            await asyncio.wait([task], timeout=s.cancel_after)
            task.cancel()
        outcome: BaseException | None = None
        try:
            await task
        except BaseException as exc:  # classified below
            outcome = exc
        elapsed = loop.time() - started
    finally:
        await client.aclose()

    # the caller's deadline (or cancellation) held
    bounds = [b for b in (s.deadline, s.cancel_after) if b is not None]
    if bounds:
        assert elapsed <= min(bounds) + LATENESS, (elapsed, s)
    event(f"outcome: {type(outcome).__name__ if outcome is not None else 'answered'}")
    # the caller saw an H2oError of a phase a fault fired in, or its own cancellation/timeout
    fired = plan.fired
    if isinstance(outcome, H2oError):
        assert outcome.phase is not None, outcome
        assert outcome.phase in {Phase(f.phase) for f in fired}, (repr(outcome), fired)
    elif isinstance(outcome, asyncio.CancelledError):
        assert s.cancel_after is not None, s
    elif isinstance(outcome, TimeoutError):
        assert s.deadline is not None, s
    else:
        assert outcome is None, repr(outcome)
    # every conversation ended; every id the client learned was deleted once, or its failure reported
    assert all(c.state.is_terminal for c in convs), convs
    acct = server.accounting
    reported = {c.conversation_id for c in convs if c.cleanup_error is not None and c.conversation_id}
    for conv in convs:
        if conv.conversation_id is not None and conv.conversation_id not in reported:
            assert conv.conversation_id in acct.gone_ids, (conv, conv.history, fired)
    assert len(reported) <= client.undeleted_conversations
    assert_nothing_leaked(server, reported=reported)
    # transient DELETE failures alone are retried until the cleanup budget: nothing left undeleted
    event(f"undeleted, reported: {bool(reported)}")
    if not any(f.phase == "delete" for f in s.plan.faults):
        assert not reported and client.undeleted_conversations == 0, (convs, fired)
    assert not await no_task_left(), "a task was left behind"


@settings(max_examples=100, deadline=None)
@given(bad=invalid_messages())
async def test_invalid_messages_are_refused_before_any_request(bad: object) -> None:
    client = H2oClient("http://127.0.0.1:9")  # nothing listens there: a request would fail differently
    try:
        with pytest.raises((ValueError, TypeError)):
            await client.ask(bad)  # type: ignore[arg-type]
        assert client.live_conversations == 0
    finally:
        await client.aclose()


@settings(max_examples=100, deadline=None)
@given(bad=invalid_parameters())
async def test_invalid_parameters_are_refused_before_any_request(bad: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        async for _ in H2o.create_async_generator("", [{"role": "user", "content": "x"}], **bad):  # type: ignore[arg-type]
            pass


@pytest.mark.parametrize("dialect", DIALECTS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msgs=messages(), params=parameters())
async def test_valid_input_always_completes(
    servers: dict[str, LocalServer], dialect: str, msgs: list[dict[str, str]], params: dict[str, object]
) -> None:
    server = servers[dialect]
    server.reset()
    async with H2oClient(server.url, dialect=dialect) as client:  # type: ignore[arg-type]
        answer = await client.ask(msgs, **params)  # type: ignore[arg-type]
        assert client.undeleted_conversations == 0
    assert answer
    snap = server.accounting.snapshot()
    assert (snap["created"], snap["deleted"], snap["live"], snap["deleted_twice"]) == (1, 1, 0, 0), snap
    assert_nothing_leaked(server)
