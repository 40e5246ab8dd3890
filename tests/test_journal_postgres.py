"""The PostgreSQL journal against a real server (started by the tests: initdb + postgres in a temporary
directory), and its URL in ``journal=``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from postgres_support import PostgresServer, postgres_server
from redis_support import unique_namespace
from support import (
    FAST_RETRIES,
    FAST_TIMEOUTS,
    cli_chat_and_sweep_through,
    refused_url,
    sweep_of_a_journal_that_is_down,
)

from h2o_fsm import H2oClient, H2oJournalError, JournalBackend, PostgresJournal
from h2o_fsm.server import LocalServer, ServerConfig

__all__ = ["postgres_server"]

URL = "http://127.0.0.1:9"
SECRET = "s3cr3t-password"
CID = "a" * 24


@pytest.mark.parametrize(("url", "match"), [
    ("postgresql://127.0.0.1:port/db", "port"),
    ("postgresql://127.0.0.1:1/db?lease=soon", "lease"),
    ("postgresql://127.0.0.1:1/db?timeout=0", "timeout"),
])
def test_a_bad_postgres_url_is_a_value_error_at_construction(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        H2oClient(URL, journal=url)


def test_a_postgres_url_is_parsed_without_a_request_and_its_password_never_shown() -> None:
    journal = PostgresJournal(f"postgres://app:{SECRET}@db.internal:5433/j?lease=7&namespace=fleet&sslmode=require")
    assert (journal.lease, journal.namespace, journal.op_timeout) == (7.0, "fleet", 1.0)
    assert SECRET not in repr(journal) and isinstance(journal, JournalBackend)


@pytest.fixture
async def pjournal(postgres_server: PostgresServer) -> AsyncIterator[PostgresJournal]:
    journal = PostgresJournal(postgres_server.url, lease=1, namespace=unique_namespace())
    yield journal
    await journal.aclose()


async def test_entries_leases_and_claims(pjournal: PostgresJournal, postgres_server: PostgresServer) -> None:
    await pjournal.add_async(URL, CID, {"hf-chat": "v"}, owner="alive", dialect="chat-ui")
    await pjournal.add_async(URL, "b" * 24, {}, owner="dying")
    await pjournal.add_async(URL, "c" * 24, {}, owner="closing")
    await pjournal.running_async(URL, CID, "gen-1", {"hf-chat": "v2"})
    await pjournal.release_async("closing")
    scan = await pjournal.sweepable_async(URL)
    assert [e.conversation_id for e in scan.entries] == ["c" * 24] and scan.live == 2
    for _ in range(8):  # 1.6 s: "alive" renews, "dying" does not
        await asyncio.sleep(0.2)
        await pjournal.renew_async("alive")
    scan = await pjournal.sweepable_async(URL)
    assert sorted(e.conversation_id for e in scan.entries) == ["b" * 24, "c" * 24] and scan.live == 1
    [alive] = [e for e in (await pjournal.scan_async(URL)).entries if e.owner == "alive"]
    assert (alive.cookies, alive.generation_id, alive.dialect) == ({"hf-chat": "v2"}, "gen-1", "chat-ui")
    assert not await pjournal.claim_async(alive, "sweeper", 30)  # its owner's lease holds
    entry = scan.entries[0]
    others = [PostgresJournal(postgres_server.url, namespace=pjournal.namespace) for _ in range(6)]
    try:
        won = await asyncio.gather(*(j.claim_async(entry, f"s{i}", 30) for i, j in enumerate(others)))
        assert sum(won) == 1
        winner = won.index(True)
        await others[winner].unclaim_async(entry, f"s{winner}")
        assert await pjournal.claim_async(entry, "late", 30)
    finally:
        for j in others:
            await j.aclose()
    await pjournal.remove_async(entry.base_url, entry.conversation_id)
    assert not await pjournal.claim_async(entry, "after", 30)


async def test_a_client_on_postgres_journals_and_sweeps_its_own(postgres_server: PostgresServer) -> None:
    url = f"{postgres_server.url}?lease=1&namespace={unique_namespace()}"
    with LocalServer(ServerConfig(max_tokens=4)) as server:
        dead = PostgresJournal(url)
        async with H2oClient(server.url, journal=dead, background_sweep=False) as crashed:
            conv = crashed.conversation()
            while conv.conversation_id is None:
                await conv.step()
            async with H2oClient(server.url, journal=url, background_sweep=False) as other:
                assert (await other.sweep()).skipped == 1  # its owner is alive
                [entry] = await dead.entries_async(server.url)
                assert entry.owner is not None
                await dead.release_async(entry.owner)  # as a closed owner would
                report = await other.sweep()
                assert (report.deleted, report.skipped, report.failed) == (1, 0, 0)
            assert server.accounting.live == 0
        await dead.aclose()


async def test_a_postgres_that_is_down_never_stops_a_conversation() -> None:
    journal = PostgresJournal("postgresql://h2o@127.0.0.1:1/postgres?timeout=0.5")
    with LocalServer(ServerConfig(max_tokens=4)) as server:
        async with H2oClient(server.url, journal=journal, retries=FAST_RETRIES, timeouts=FAST_TIMEOUTS) as client:
            assert await client.ask("hi") != ""
            for _ in range(300):  # its DELETE (and the journal's remove) follow the answer, in the client's task
                if not client.live_conversations:
                    break
                await asyncio.sleep(0.01)
            assert client.journal_failures >= 2 and server.accounting.live == 0
            with pytest.raises(H2oJournalError, match="PostgreSQL journal") as caught:
                await client.sweep()
            assert isinstance(caught.value.__cause__, ConnectionError)
    await journal.aclose()


def test_the_cli_takes_a_postgres_url_for_chat_and_sweep(postgres_server: PostgresServer) -> None:
    cli_chat_and_sweep_through(f"{postgres_server.url}?namespace={unique_namespace()}")


async def test_a_sweep_of_a_postgres_that_refuses_is_an_h2o_journal_error_without_the_password() -> None:
    port = refused_url().rsplit(":", 1)[1]
    await sweep_of_a_journal_that_is_down(f"postgresql://me:{SECRET}@127.0.0.1:{port}/db?timeout=0.5", SECRET)
