"""``H2oSyncClient`` against the real emulator: turns, streams, the stepper, sweep, threads, a running event
loop, and Ctrl-C (a real SIGINT to a real process) in the middle of a stream."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from support import FAST_RETRIES, FAST_TIMEOUTS, assert_clean

from h2o_fsm import H2oStateError, H2oSyncClient, Journal, Phase
from h2o_fsm.server import Fault, LocalServer, ServerConfig


def sync_client(server: LocalServer, **kw: object) -> H2oSyncClient:
    return H2oSyncClient(server.url, dialect=server.dialect, retries=FAST_RETRIES, timeouts=FAST_TIMEOUTS, **kw)


@pytest.mark.parametrize("dialect", ["h2o", "chat-ui"])
def test_ask_turns_and_a_stream_then_everything_deleted(dialect: str) -> None:
    with LocalServer(dialect=dialect) as server:  # type: ignore[arg-type]
        with sync_client(server) as client:
            assert client.ask("Hello")
            assert "".join(client.stream("Hi")).strip()
            with client.conversation() as conv:
                first = conv.ask("one")
                chunks = list(conv.stream("two"))
                assert first and len(chunks) > 1 and conv.state is Phase.READY
                assert server.accounting.live == 1  # one server-side conversation, two turns
            assert conv.state is Phase.CLOSED
        assert server.accounting.created == 3
        assert_clean(server)


def test_leaving_the_loop_early_and_an_error_in_the_block_delete() -> None:
    with LocalServer(ServerConfig(max_tokens=50)) as server, sync_client(server) as client:
        with client.conversation() as conv:
            for _ in conv.stream("a long answer"):
                break
        assert conv.state.is_terminal
        with pytest.raises(RuntimeError), client.conversation() as conv2:
            conv2.ask("hi")
            raise RuntimeError("the caller's own")
        assert conv2.state.is_terminal
        assert_clean(server)


def test_the_stepper_one_state_at_a_time(server: LocalServer) -> None:
    with sync_client(server) as client, client.conversation() as conv:
        conv.queue("Hi")
        seen = []
        while conv.state is not Phase.READY:
            assert conv.describe_next()
            seen.append(conv.step().state)
        assert seen[-1] is Phase.READY and Phase.STREAM in seen
    assert_clean(server)


def test_bad_input_is_refused_before_anything_is_sent(server: LocalServer) -> None:
    with sync_client(server) as client, client.conversation() as conv:
        with pytest.raises((ValueError, TypeError)):
            conv.stream([{"role": "nobody", "content": 1}])  # type: ignore[list-item]
    assert server.accounting.requests_total == 0


def test_from_several_threads_at_once(server: LocalServer) -> None:
    answers: list[str] = []
    with sync_client(server) as client:
        def work(i: int) -> None:
            with client.conversation() as conv:
                answers.append(conv.ask(f"thread {i}") + "".join(conv.stream("again")))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert len(answers) == 6 and all(answers)
    assert server.accounting.created == 6
    assert_clean(server)


def test_inside_a_running_event_loop_as_in_jupyter(server: LocalServer) -> None:
    async def notebook_cell() -> str:
        with sync_client(server) as client:  # the caller's loop is running: ours is another thread's
            return client.ask("Hello")

    assert asyncio.run(notebook_cell())
    assert_clean(server)


def test_sweep_and_a_closed_client(server: LocalServer, tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    try:
        with sync_client(server, journal=journal) as owner, owner.conversation() as conv:
            conv.ask("left open")  # journaled; the sweep of another client removes it
            with sync_client(server) as sweeper:
                report = sweeper.sweep(journal, include_live_processes=True)
            assert (report.deleted, report.failed) == (1, 0)
            assert server.accounting.live == 0
    finally:
        journal.close()
    with pytest.raises(H2oStateError):
        owner.ask("after close")
    owner.close()  # idempotent


_STREAMER = textwrap.dedent("""
    import sys
    from h2o_fsm import H2oSyncClient
    with H2oSyncClient(sys.argv[1]) as client:
        try:
            with client.conversation() as conv:
                for i, chunk in enumerate(conv.stream("a long answer")):
                    if i == 2:
                        print("streaming", flush=True)
        except KeyboardInterrupt:
            print("interrupted", conv.state.value, client.live_conversations, flush=True)
            sys.exit(7)
    print("finished", flush=True)
""")


def test_ctrl_c_in_the_middle_of_a_stream_deletes(tmp_path: Path) -> None:
    script = tmp_path / "streamer.py"
    script.write_text(_STREAMER)
    with LocalServer(ServerConfig(max_tokens=300, token_delay=0.02)) as server:
        server.set_faults([Fault("stream", "stall", seconds=30, at_token=20)])  # no answer ends by itself
        proc = subprocess.Popen([sys.executable, str(script), server.url], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
        assert proc.stdout is not None
        assert proc.stdout.readline() == "streaming\n"
        assert server.accounting.live == 1
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 7, err
        state, live = out.split()[1:3]
        assert state in ("closed", "failed") and live == "0", out
        assert (server.accounting.live, server.accounting.deleted) == (0, 1)
        assert "Traceback" not in err


def test_a_client_never_closed_still_deletes_at_interpreter_exit(server: LocalServer) -> None:
    code = textwrap.dedent(f"""
        from h2o_fsm import H2oSyncClient
        client = H2oSyncClient({server.url!r})
        conv = client.conversation()
        print(conv.ask("left open"))  # no close(), no with: the script just ends
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout.strip(), result.stderr
    assert server.accounting.created == 1
    assert_clean(server)


def test_a_method_added_to_h2oclient_is_bridged_without_a_line_here(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from collections.abc import AsyncIterator

    from h2o_fsm import Conversation, H2oClient, SyncConversation

    async def models(self: H2oClient) -> list[str]:  # as chatui's models() will be
        await asyncio.sleep(0)
        return [self.model]

    async def listed(self: H2oClient, n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    async def attach(self: H2oClient) -> Conversation:
        return self.conversation()

    monkeypatch.setattr(H2oClient, "models", models, raising=False)
    monkeypatch.setattr(H2oClient, "listed", listed, raising=False)
    monkeypatch.setattr(H2oClient, "attach", attach, raising=False)
    with sync_client(server) as client:
        assert client.models() == [client.client.model]
        assert list(client.listed(3)) == [0, 1, 2]
        with client.attach() as conv:
            assert isinstance(conv, SyncConversation) and conv.ask("hi")
        with pytest.raises(AttributeError):
            client.no_such_method  # noqa: B018
        with pytest.raises(AttributeError):
            client._rt  # noqa: B018
    assert_clean(server)


def test_the_catalog_attach_and_detach_bridged_against_chat_ui(chatui_server: LocalServer) -> None:
    # chatui's methods reach sync callers through __getattr__; dialect="auto" is detected by the block
    with H2oSyncClient(chatui_server.url, dialect="auto", retries=FAST_RETRIES, timeouts=FAST_TIMEOUTS) as client:
        assert client.dialect == "chat-ui" and client.detect_dialect() == "chat-ui"
        models = client.models()
        assert [m.id for m in models] == list(chatui_server.config.models)  # the default first
        with client.conversation() as conv:
            assert conv.ask("Hello")
            kept = conv.detach()  # left on the server on purpose: no DELETE
        assert conv.state is Phase.CLOSED and isinstance(kept, str)
        assert chatui_server.accounting.live == 1
        assert [c.id for c in client.list_conversations()] == [kept]
        with client.conversation(conversation_id=kept) as again:  # attached: continued, then deleted
            assert again.conversation_id == kept
            assert again.ask("And then?")
        assert again.state is Phase.CLOSED
        assert chatui_server.accounting.live == 0 and client.list_conversations() == []
        with client.conversation() as other:
            other.ask("one more")
            other.detach()
        assert client.delete_all_conversations() in (1, None)
        assert client.list_conversations() == []
    assert_clean(chatui_server)


def test_auto_detected_without_a_block_too(server: LocalServer) -> None:
    client = H2oSyncClient(server.url, dialect="auto", retries=FAST_RETRIES, timeouts=FAST_TIMEOUTS)
    try:
        with client.conversation() as conv:  # detected before the conversation (the 2023 server: h2o)
            assert conv.ask("Hi")
        assert client.dialect == "h2o"
    finally:
        client.close()
    assert_clean(server)
