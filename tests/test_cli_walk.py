"""A newcomer walking the README's commands against both servers: each line says what is true."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_rough_edges import run_cli

from h2o_fsm.server import LocalServer


def test_chatui_commands_against_a_2023_server_do_not_claim_an_unknown_conversation(server: LocalServer) -> None:
    """`models`/`chat --dialect chat-ui` on a 2023 server: its 404 for GET /api/v2/models is no conversation's."""
    for argv in (("models",), ("chat", "Hello")):
        code, _, err = run_cli(*argv, "--dialect", "chat-ui", "--base-url", server.url)
        assert code == 1 and err.count("\n") == 1, err
        assert "unknown conversation" not in err, err
        assert "/api/v2/models" in err and "try --dialect h2o" in err, err
    assert server.accounting.created == 0


def test_the_lists_of_chatui_on_a_2023_server_are_a_usage_mistake_not_a_failed_fetch(server: LocalServer) -> None:
    """`models`/`conversations` on a 2023 server: its dialect has no such list, refused before any request."""
    for argv, what in ((("models",), "model list"), (("conversations",), "conversation list"),
                       (("conversations", "--delete-all", "--yes"), "delete-all")):
        for dialect in ("auto", "h2o"):
            code, out, err = run_cli(*argv, "--dialect", dialect, "--base-url", server.url)
            assert code == 2 and out == "" and err.count("\n") == 1, (argv, dialect, err)
            assert f"has no {what}" in err and "fetch failed" not in err and "--debug" not in err, err
            assert "this server speaks h2o" in err if dialect == "auto" else "--dialect h2o" in err, err
    assert server.accounting.created == 0


def test_an_unknown_param_name_is_refused_like_the_api_refuses_it(server: LocalServer,
                                                                   chatui_server: LocalServer) -> None:
    """`--param temprature=0.2` exited 0 having sent it; `client.ask("hi", temprature=0.2)` is a TypeError."""
    from h2o_fsm._dialects import get_dialect

    for srv, dialect in ((server, "h2o"), (chatui_server, "chat-ui")):
        code, out, err = run_cli("chat", "Hello", "--param", "temprature=0.2", "--base-url", srv.url)
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert "'temprature'" in err and f"the {dialect} dialect's generation parameters" in err, err
        assert all(name in err for name in get_dialect(dialect).parameters - {"stream"}), err
        assert srv.accounting.created == 0
    code, _, err = run_cli("chat", "Hello", "--param", "temperature=0.2", "--base-url", server.url)
    assert code == 0, err


@pytest.mark.skipif(sys.platform == "win32", reason="pty")
def test_an_unknown_param_name_is_refused_before_the_interactive_banner(server: LocalServer) -> None:
    from test_cli_interactive import PROMPT, Terminal

    term = Terminal("chat", "--param", "temprature=0.2", "--base-url", server.url)
    try:
        term.wait_for(lambda shown: b"unknown --param name 'temprature'" in shown, "the refusal")
    finally:
        code = term.close()
    assert code == 2 and PROMPT not in term.text() and b"chatting with" not in term.text(), term.text()
    assert server.accounting.created == 0


def test_a_turn_cut_by_timeout_reports_the_timeout_set_not_the_time_left() -> None:
    """`--timeout 0.5` on a stalled send said `no complete answer within 0.46s` (the time left then)."""
    from support import emulator

    from h2o_fsm.server import Fault, ServerConfig

    with emulator(ServerConfig(max_tokens=8), [Fault("send", "stall", seconds=2.0)]) as srv:
        code, _, err = run_cli("chat", "Hello", "--timeout", "0.5", "--base-url", srv.url)
        assert code == 1 and err.count("\n") == 1, err
        assert "send failed" in err and "within the turn's deadline of 0.5s" in err, err


def test_demo_names_the_dialect_its_emulator_speaks() -> None:
    """`h2o-fsm demo` said `bundled chat-ui emulator` while speaking the (default) h2o dialect."""
    for argv, dialect in (((), "h2o"), (("--dialect", "chat-ui"), "chat-ui")):
        code, out, err = run_cli("demo", "--token-delay", "0", *argv)
        assert code == 0, err
        banner = out.splitlines()[0]
        assert banner.startswith(f"bundled {dialect} emulator ("), banner
        assert "chat-ui" not in banner if dialect == "h2o" else "h2o" not in banner, banner


def test_conversations_ends_with_its_count_as_delete_all_does(chatui_server: LocalServer) -> None:
    """`h2o-fsm conversations` of a session holding none printed nothing at all."""
    import json

    code, out, err = run_cli("conversations", "--base-url", chatui_server.url)
    assert (code, out) == (0, "conversations: 0\n"), err
    code, out, err = run_cli("conversations", "--json", "--base-url", chatui_server.url)
    assert code == 0 and [json.loads(line) for line in out.splitlines()] == [{"type": "conversations", "count": 0}]


def test_a_reader_that_goes_away_ends_the_command_without_a_traceback() -> None:
    """`h2o-fsm demo | head -1` ended in a BrokenPipeError traceback."""
    cli = str(Path(sys.executable).with_name("h2o-fsm"))
    done = subprocess.run(["bash", "-c", f'"{cli}" demo | head -1; exit "${{PIPESTATUS[0]}}"'],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("bundled ") and done.stdout.count("\n") == 1, done.stdout
    assert "Traceback" not in done.stderr and done.returncode == 141, (done.returncode, done.stderr)
