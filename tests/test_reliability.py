"""Crash-safe cleanup (journal + sweep after SIGKILL), load, and secrets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import httpx
import pytest
from support import emulator

from h2o_fsm import H2oClient, Journal
from h2o_fsm.cli import main
from h2o_fsm.server import LocalServer, ServerConfig
from h2o_fsm.testing import assert_nothing_leaked


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_mid_stream_then_sweep_leaves_nothing(tmp_path: Path) -> None:
    journal_path = tmp_path / "live.sqlite"
    with emulator(ServerConfig(max_tokens=400, token_delay=0.05)) as server:
        child = subprocess.Popen(
            [sys.executable, "-m", "h2o_fsm.cli", "chat", "hello", "--base-url", server.url, "--journal", str(journal_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            child.stdout.read(20)  # it is streaming now
            assert server.accounting.live == 1
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        assert server.accounting.live == 1  # killed: nothing could delete it
        assert stat.S_IMODE(os.stat(journal_path).st_mode) == 0o600
        journal = Journal(journal_path)
        entries = journal.entries(server.url)
        assert len(entries) == 1 and entries[0].pid == child.pid
        assert "cookies" not in repr(entries[0]) and entries[0].cookies["hf-chat"] not in repr(entries[0])
        journal.close()

        code = main(["sweep", "--base-url", server.url, "--journal", str(journal_path)])
        assert code == 0 and server.accounting.live == 1  # the killed owner's lease (30 s) still holds
        code = main(["sweep", "--base-url", server.url, "--journal", str(journal_path), "--all"])
        assert code == 0
        assert_nothing_leaked(server)
        assert Journal(journal_path).entries() == []


async def test_journal_rows_come_and_go_with_the_conversation(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    with emulator(ServerConfig(max_tokens=4)) as server:
        async with H2oClient(server.url, journal=journal) as client:
            async with client.conversation() as conv:
                await conv.ask("x")
                assert [e.conversation_id for e in journal.entries()] == [conv.conversation_id]
            assert journal.entries() == []
            report = await client.sweep(journal)
            assert report.deleted == 0
    journal.close()


async def test_load_200_concurrent_conversations_one_client_bounded() -> None:
    """The suite's smaller size of benchmarks/load.py (1,000 there)."""
    n = 200
    with emulator(ServerConfig(max_tokens=16, keep_request_log=False)) as server:
        tracemalloc.start()
        async with H2oClient(server.url, max_concurrency=50, max_connections=50) as client:
            started = time.monotonic()
            answers = await asyncio.gather(*(client.ask(f"q{i}") for i in range(n)))
            elapsed = time.monotonic() - started
        assert client.live_conversations == 0  # the last DELETEs follow the answers: aclose() waited for them
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(answers) == n and all(answers)
        assert server.accounting.created == n
        assert_nothing_leaked(server)
    assert elapsed < 60
    assert peak < 64 * 1024 * 1024  # bounded: the pool and the semaphore cap what is in flight


async def test_cookie_never_in_reprs_or_errors() -> None:
    with emulator(ServerConfig(max_tokens=4)) as server:
        async with H2oClient(server.url) as client:
            conv = client.conversation()
            async with conv:
                await conv.ask("x")
            cookie = server.accounting.requests[0].session  # the session cookie's value, as the server set it
            assert all(r.session == cookie for r in server.accounting.requests)
            for text in (repr(client), repr(conv), str(conv.history), repr(conv.history)):
                assert cookie not in text


@pytest.mark.parametrize("fault_kind", ["none", "drop", "error_event"])
async def test_fast_transport_behaves_the_same(fault_kind: str) -> None:
    from h2o_fsm import H2oError, fast_transport
    from h2o_fsm.server import Fault

    faults = [] if fault_kind == "none" else [Fault("stream", fault_kind, at_token=2)]  # type: ignore[arg-type]
    with emulator(ServerConfig(max_tokens=8), faults=faults) as server:
        async with H2oClient(server.url, transport=fast_transport()) as client:
            if fault_kind == "none":
                assert await client.ask("x")
            else:
                with pytest.raises(H2oError) as info:
                    await client.ask("x")
                assert info.value.phase is not None and info.value.phase.value == "stream"
        assert_nothing_leaked(server)


def journal_from_a_dead_process(path: Path, base_url: str, cids: list[str], cookies: dict[str, str]) -> int:
    """Journal ``cids`` from another process, which then exits: its pid is dead. Returns that pid."""
    code = (
        "import json, sys\n"
        "from h2o_fsm import Journal\n"
        "path, url, cids, cookies = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])\n"
        "journal = Journal(path)\n"
        "for cid in cids:\n"
        "    journal.add(url, cid, cookies)\n"
        "journal.close()\n"
    )
    child = subprocess.run([sys.executable, "-c", code, str(path), base_url, json.dumps(cids), json.dumps(cookies)],
                           check=False, capture_output=True, text=True, timeout=30)
    assert child.returncode == 0, child.stderr
    reader = Journal(path)
    pids = {e.pid for e in reader.entries() if e.conversation_id in cids}
    reader.close()
    assert len(pids) == 1 and os.getpid() not in pids
    return pids.pop()


async def test_sweep_skips_live_processes_and_reports_each_outcome(tmp_path: Path) -> None:
    journal_path = tmp_path / "j.sqlite"
    journal = Journal(journal_path)
    with LocalServer(ServerConfig(max_tokens=4)) as server:  # its own: "server gone" below
        # a real leftover: created by a "dead" client, then journalled under the dead pid
        async with httpx.AsyncClient(base_url=server.url) as raw:
            await raw.post("/settings", data={"activeModel": "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1",
                                              "ethicsModalAccepted": "true"}, headers={"Referer": server.url + "/"})
            cid = (await raw.post("/conversation", json={"model": "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1"})).json()["conversationId"]
            cookies = dict(raw.cookies)
        # a real leftover and one already gone on the server, journalled by a process that then died
        journal_from_a_dead_process(journal_path, server.url, [cid, "0" * 24], cookies)
        journal.add(server.url, "1" * 24, cookies)  # this (live) process's: skipped by default
        async with H2oClient(server.url) as client:
            report = await client.sweep(journal)
            assert (report.deleted, report.already_gone, report.skipped, report.failed) == (1, 1, 1, 0)
            assert [e.conversation_id for e in journal.entries()] == ["1" * 24]
            report = await client.sweep(journal, include_live_processes=True)
            assert (report.already_gone, report.skipped) == (1, 0)
        assert_nothing_leaked(server)
        url = server.url
    journal_from_a_dead_process(journal_path, url, ["2" * 24], {})
    async with H2oClient(url, transport="httpx") as client:  # server gone: the entry stays
        report = await client.sweep(journal)
    assert report.failed == 1 and len(journal.entries()) == 1
    journal.close()
