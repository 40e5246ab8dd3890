"""The Redis journal against a real redis-server (started by the tests), and what ``journal=`` takes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
import structlog.testing
from redis_support import RedisServer, redis_server, start_redis, unique_namespace
from support import (
    FAST_RETRIES,
    FAST_TIMEOUTS,
    cli_chat_and_sweep_through,
    refused_url,
    sweep_of_a_journal_that_is_down,
)

from h2o_fsm import H2oClient, H2oJournalError, Journal, JournalBackend, RedisJournal
from h2o_fsm.server import LocalServer, ServerConfig

__all__ = ["redis_server"]  # the fixture, imported so that pytest finds it

URL = "http://127.0.0.1:9"
SECRET = "s3cr3t-cookie-value"
CID = "a" * 24


# ---------------------------------------------------------------- what journal= takes (no server needed)
@pytest.mark.parametrize("value", [123, 1.5, b"j.db", ["j.db"], object()])
def test_a_journal_of_the_wrong_kind_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="journal must be"):
        H2oClient(URL, journal=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("url", "match"), [
    ("mysql://127.0.0.1/db", "redis://"),
    ("http://127.0.0.1:6379", "redis://"),
    ("redis://127.0.0.1:notaport/0", "port"),
    ("redis:///0", "no host"),
    ("redis://127.0.0.1:1/zero", "database number"),
    ("redis://127.0.0.1:1/0?lease=soon", "lease"),
    ("redis://127.0.0.1:1/0?lease=0", "lease"),
    ("redis://127.0.0.1:1/0?lease=nan", "lease"),
    ("redis://127.0.0.1:1/0?color=red", "unknown option"),
    ("", "empty"),
])
def test_a_bad_journal_url_is_a_value_error_at_construction(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        H2oClient(URL, journal=url)


def test_a_redis_url_is_parsed_without_a_request_and_its_password_never_shown() -> None:
    journal = RedisJournal(f"rediss://user:{SECRET}@127.0.0.1:1/3?lease=7&timeout=0.5")
    assert (journal.lease, journal.op_timeout) == (7.0, 0.5)
    assert SECRET not in repr(journal) and SECRET not in journal.url
    assert RedisJournal("redis://127.0.0.1:1").lease == 30.0
    assert RedisJournal("redis://127.0.0.1:1", lease=2).lease == 2.0


async def test_a_path_is_a_sqlite_journal_that_really_records(tmp_path: Path) -> None:
    path = tmp_path / "some" / "path.db"
    path.parent.mkdir()
    with LocalServer(ServerConfig(max_tokens=400, token_delay=0.01)) as server:
        async with H2oClient(server.url, journal=str(path), retries=FAST_RETRIES, timeouts=FAST_TIMEOUTS) as client:
            async with client.conversation() as conv:
                async with conv.turn("hi") as reader:
                    await reader.__anext__()
                    seen = Journal(path)
                    assert [e.conversation_id for e in seen.entries(server.url)] == [conv.conversation_id]
                    seen.close()
        assert server.accounting.live == 0
    again = Journal(path)
    assert again.entries() == []
    again.close()
    async with H2oClient(URL, journal=path) as client:  # a PathLike too
        assert client.journal_failures == 0


# ---------------------------------------------------------------- the Redis journal itself
@pytest.fixture
async def rjournal(redis_server: RedisServer) -> AsyncIterator[RedisJournal]:
    journal = RedisJournal(redis_server.url, lease=1, namespace=unique_namespace())
    yield journal
    await journal.aclose()


async def _keys(server: RedisServer) -> list[str]:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        return [k async for k in r.scan_iter()]
    finally:
        await r.aclose()


async def test_entries_come_and_go_and_secrets_stay_out_of_key_names(
    rjournal: RedisJournal, redis_server: RedisServer
) -> None:
    assert isinstance(rjournal, JournalBackend)
    await rjournal.add_async(URL, CID, {"hf-chat": SECRET}, owner="o1", dialect="chat-ui")
    await rjournal.add_async("http://other", "b" * 24, {})
    await rjournal.running_async(URL, CID, "gen-1", {"hf-chat": SECRET + "2"})
    entries = await rjournal.entries_async(URL)
    assert [(e.conversation_id, e.owner, e.dialect, e.generation_id) for e in entries] == [
        (CID, "o1", "chat-ui", "gen-1")]
    assert entries[0].cookies == {"hf-chat": SECRET + "2"} and entries[0].pid == os.getpid()
    assert SECRET not in repr(entries[0])
    assert len((await rjournal.scan_async()).entries) == 2
    keys = await _keys(redis_server)
    assert keys and not any(SECRET in k for k in keys)
    await rjournal.remove_async(URL, CID)
    assert await rjournal.entries_async(URL) == []
    await rjournal.running_async(URL, CID, "gen-2", {})  # gone: not brought back
    assert await rjournal.entries_async(URL) == []


async def test_an_entry_is_sweepable_once_its_owners_lease_expired_or_was_released(rjournal: RedisJournal) -> None:
    await rjournal.add_async(URL, CID, {}, owner="alive")
    await rjournal.add_async(URL, "b" * 24, {}, owner="dying")
    await rjournal.add_async(URL, "c" * 24, {}, owner="closing")
    await rjournal.release_async("closing")
    scan = await rjournal.sweepable_async(URL)
    assert [e.conversation_id for e in scan.entries] == ["c" * 24] and scan.live == 2
    for _ in range(8):  # 1.6 s: "alive" renews, "dying" does not
        await asyncio.sleep(0.2)
        await rjournal.renew_async("alive")
    scan = await rjournal.sweepable_async(URL)
    assert sorted(e.conversation_id for e in scan.entries) == ["b" * 24, "c" * 24] and scan.live == 1
    assert len((await rjournal.sweepable_async(URL, include_live=True)).entries) == 3


async def test_exactly_one_of_many_concurrent_claims_wins(rjournal: RedisJournal, redis_server: RedisServer) -> None:
    await rjournal.add_async(URL, CID, {}, owner="dead")
    await rjournal.release_async("dead")
    [entry] = (await rjournal.sweepable_async(URL)).entries
    others = [RedisJournal(redis_server.url, namespace=rjournal.namespace) for _ in range(8)]
    try:
        won = await asyncio.gather(*(j.claim_async(entry, f"sweeper-{i}", 30) for i, j in enumerate(others)))
        assert sum(won) == 1
        winner = won.index(True)
        await others[(winner + 1) % 8].unclaim_async(entry, "not-the-claimer")  # only its claimer gives it back
        assert not await rjournal.claim_async(entry, "late", 30)
        await others[winner].unclaim_async(entry, f"sweeper-{winner}")
        assert await rjournal.claim_async(entry, "late", 30)
        await rjournal.remove_async(URL, CID)
        assert not await rjournal.claim_async(entry, "after", 30)  # gone: nothing to claim
    finally:
        for j in others:
            await j.aclose()


async def test_a_live_owners_entry_cannot_be_claimed(rjournal: RedisJournal) -> None:
    await rjournal.add_async(URL, CID, {}, owner="alive")
    [entry] = (await rjournal.scan_async(URL)).entries
    assert not await rjournal.claim_async(entry, "sweeper", 30)
    assert await rjournal.claim_async(entry, "sweeper", 30, include_live=True)


async def test_a_bad_value_is_reported_without_its_cookies(rjournal: RedisJournal, redis_server: RedisServer) -> None:
    import redis.asyncio as aioredis

    await rjournal.add_async(URL, CID, {"hf-chat": SECRET})
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        await r.hset(rjournal._entries, '["http://127.0.0.1:9", "bad"]', '{"cookies": "{' + SECRET + '"}')
        await r.hset(rjournal._entries, "not json", "x")
    finally:
        await r.aclose()
    scan = await rjournal.scan_async(URL)
    assert [e.conversation_id for e in scan.entries] == [CID] and len(scan.bad_rows) == 2
    assert SECRET not in "\n".join(scan.bad_rows)


# ---------------------------------------------------------------- a client on Redis
async def test_a_client_journals_on_redis_and_sweeps_its_own_journal(redis_server: RedisServer) -> None:
    ns = unique_namespace()
    url = f"{redis_server.url}?lease=1"
    dead = RedisJournal(url, namespace=ns)
    with LocalServer(ServerConfig(max_tokens=4)) as server:
        async with H2oClient(server.url, journal=dead, background_sweep=False, retries=FAST_RETRIES) as crashed:
            conv = crashed.conversation()
            await conv.step()
            await conv.step()  # created: journalled
            entries = await dead.entries_async(server.url)
            assert [e.conversation_id for e in entries] == [conv.conversation_id] and entries[0].dialect == "h2o"
            mine = RedisJournal(url, namespace=ns)
            async with H2oClient(server.url, journal=mine, background_sweep=False) as other:
                report = await other.sweep()
                assert (report.deleted, report.skipped) == (0, 1)  # its owner is alive
                await dead.release_async(crashed._journal.owner)  # as a closed owner would
                report = await other.sweep()
                assert (report.deleted, report.skipped, report.failed) == (1, 0, 0)
            await mine.aclose()
            assert server.accounting.live == 0
    await dead.aclose()


async def test_a_redis_that_is_stopped_never_blocks_the_loop_nor_the_conversation() -> None:
    own = start_redis()  # SIGSTOPped below: a Redis that answers nothing
    try:
        journal = RedisJournal(own.url, lease=1, timeout=0.3, namespace=unique_namespace())
        with LocalServer(ServerConfig(max_tokens=4)) as server, structlog.testing.capture_logs() as logs:
            async with H2oClient(server.url, journal=journal, retries=FAST_RETRIES, timeouts=FAST_TIMEOUTS,
                                 cookies={"token": SECRET}, logger=structlog.get_logger("t")) as client:
                assert await client.ask("warm") != ""
                os.kill(own.process.pid, signal.SIGSTOP)
                try:
                    worst = 0.0
                    ticking = True

                    async def tick() -> None:
                        nonlocal worst
                        while ticking:
                            before = time.perf_counter()
                            await asyncio.sleep(0.005)
                            worst = max(worst, time.perf_counter() - before - 0.005)

                    ticker = asyncio.create_task(tick())
                    started = time.monotonic()
                    answers = await asyncio.gather(*(client.ask(f"q{i}") for i in range(3)))
                    elapsed = time.monotonic() - started
                    # the asks return at their answers; their endings (DELETE, then the journal's remove)
                    # go on in the client's tasks: wait, bounded, for the removes to time out too
                    until = time.monotonic() + 5.0
                    while client.journal_failures < 6 and time.monotonic() < until:
                        await asyncio.sleep(0.05)
                    ticking = False
                    await ticker
                    report_error: Exception | None = None
                    swept_at = time.monotonic()
                    try:
                        await client.sweep()
                    except Exception as exc:  # the sweep's read times out, promptly
                        report_error = exc
                    sweep_took = time.monotonic() - swept_at
                finally:
                    os.kill(own.process.pid, signal.SIGCONT)
                assert all(answers) and server.accounting.live == 0
                assert client.journal_failures >= 6  # 3 adds and 3 removes timed out
                assert elapsed < 5.0, f"asks took {elapsed:.1f} s with Redis stopped"
                # a blocking Redis call would stall the loop for its whole timeout (0.3 s) or longer
                assert worst < 0.25, f"the event loop stalled {worst * 1000:.0f} ms"
                assert isinstance(report_error, H2oJournalError), repr(report_error)
                assert isinstance(report_error.__cause__, TimeoutError), repr(report_error.__cause__)
                assert sweep_took < 3.0
            await journal.aclose()
        events = {e["event"] for e in logs}
        assert "journal_failed" in events, events  # logged, with the error's type only
        assert SECRET not in repr(logs)
    finally:
        own.close()


_LEAVE_ONE = """
import asyncio, os, sys
from h2o_fsm import H2oClient

async def main():
    client = H2oClient(sys.argv[1], journal=sys.argv[2], background_sweep=False)
    conv = client.conversation()
    while conv.conversation_id is None:
        await conv.step()
    os._exit(0)  # dies like kill -9: nothing deleted

asyncio.run(main())
"""


def test_the_sweep_command_takes_a_redis_url(redis_server: RedisServer) -> None:
    import subprocess
    import sys

    url = f"{redis_server.url}?lease=0.5&namespace={unique_namespace()}"
    with LocalServer(ServerConfig(max_tokens=4)) as server:
        subprocess.run([sys.executable, "-c", _LEAVE_ONE, server.url, url], check=True, timeout=60)
        assert server.accounting.live == 1
        time.sleep(1.0)  # past the dead owner's lease
        cli = [sys.executable, "-m", "h2o_fsm.cli", "sweep", "--journal"]
        done = subprocess.run([*cli, url], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "deleted=1 " in done.stdout, done.stderr
        assert server.accounting.live == 0
    bad = subprocess.run([*cli, "redis://127.0.0.1:1/0?lease=soon"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "lease" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    down = subprocess.run([*cli, f"redis://:{SECRET}@127.0.0.1:1/0?timeout=0.5"], capture_output=True, text=True,
                          timeout=60)
    assert down.returncode == 1 and "Redis journal" in down.stderr and SECRET not in down.stderr, down.stderr


def test_the_cli_takes_a_redis_url_for_chat_and_sweep(redis_server: RedisServer) -> None:
    cli_chat_and_sweep_through(f"{redis_server.url}?namespace={unique_namespace()}")


async def test_a_sweep_of_a_redis_that_refuses_is_an_h2o_journal_error_without_the_password() -> None:
    port = refused_url().rsplit(":", 1)[1]
    await sweep_of_a_journal_that_is_down(f"redis://me:{SECRET}@127.0.0.1:{port}/0?timeout=0.5", SECRET)
