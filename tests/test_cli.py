"""The h2o-fsm command: exit codes, the one-line error, --step with piped input, --trace, demo, serve."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from h2o_fsm.cli import main
from h2o_fsm.server import Fault, LocalServer, ServerConfig, generate


def run_cli(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err, stdin=io.StringIO(stdin))
    return code, out.getvalue(), err.getvalue()


def test_chat_streams_the_answer(server: LocalServer) -> None:
    code, out, err = run_cli("chat", "Hi", "--base-url", server.url)
    assert code == 0, err
    assert out == "".join(generate([("user", "Hi")], 8)) + "\n"
    assert server.accounting.live == 0


def test_chat_base_url_from_environment(server: LocalServer) -> None:
    env = dict(os.environ, H2O_FSM_BASE_URL=server.url)
    result = subprocess.run(
        [sys.executable, "-m", "h2o_fsm.cli", "chat", "Hi", "--param", "max_new_tokens=3"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join(generate([("user", "Hi")], 3)) + "\n"


def test_chat_failure_is_one_line_and_exit_1() -> None:
    with LocalServer(ServerConfig(max_tokens=8), faults=[Fault("send", "status", status=500)]) as server:
        code, out, err = run_cli("chat", "Hi", "--base-url", server.url)
        assert server.accounting.live == 0
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "send failed (HTTP 500)" in lines[0] and "Traceback" not in err


def test_chat_debug_shows_the_traceback() -> None:
    with LocalServer(faults=[Fault("create", "status", status=500)]) as server:
        code, _, err = run_cli("chat", "Hi", "--base-url", server.url, "--debug")
    assert code == 1 and "Traceback" in err and "create failed (HTTP 500)" in err


def test_connection_refused_says_what_to_do() -> None:
    with LocalServer() as server:
        url = server.url
    code, _, err = run_cli("chat", "Hi", "--base-url", url)
    assert code == 1 and "is the server running" in err


@pytest.mark.parametrize("argv", [["chat", "Hi", "--base-url", "ftp://x"], ["chat", "  "], ["chat", "Hi", "--param", "temperature=\"hot\""]])
def test_bad_input_exits_2(argv: list[str]) -> None:
    code, _, err = run_cli(*argv)
    assert code == 2 and "invalid input" in err


def test_trace_writes_one_json_line_per_transition(server: LocalServer, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    code, _, _ = run_cli("chat", "Hi", "--base-url", server.url, "--trace", str(trace))
    assert code == 0
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [r["trigger"] for r in records] == ["start", "create", "send", "stream", "finish", "close", "deleted"]
    for r in records:
        assert {"conversation_id", "source", "dest", "trigger", "duration_ms", "status", "error"} <= set(r)
    assert records[1]["status"] == 200 and records[-1]["dest"] == "closed"


def test_step_mode_runs_every_phase_on_enter(server: LocalServer, tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    code, out, err = run_cli("chat", "Hi", "--base-url", server.url, "--step", "--trace", str(trace), stdin="\n" * 10)
    assert code == 0, err
    assert err.count("press Enter") == 6  # settings, create, send, stream, read, delete
    assert "POST " + server.url + "/settings" in err
    assert out.startswith("".join(generate([("user", "Hi")], 8)))
    assert len(trace.read_text().splitlines()) == 7
    assert server.accounting.live == 0


@pytest.mark.parametrize("enters", range(6))
def test_step_abort_at_every_pause_deletes(enters: int) -> None:
    with LocalServer(ServerConfig(max_tokens=4)) as server:
        for stdin in ("\n" * enters + "q\n", "\n" * enters):  # 'q' and end of input
            code, _, err = run_cli("chat", "Hi", "--base-url", server.url, "--step", stdin=stdin)
            assert code == 3, err
            assert "aborted" in err
        assert server.accounting.live == 0
        assert server.accounting.deleted == server.accounting.created


def test_step_prompt_is_not_shown(server: LocalServer) -> None:
    code, _, err = run_cli("chat", "my secret question", "--base-url", server.url, "--step", stdin="\n" * 10)
    assert code == 0 and "my secret question" not in err and "<18 chars>" in err


def test_demo_runs_a_real_conversation() -> None:
    result = subprocess.run([sys.executable, "-m", "h2o_fsm.cli", "demo", "--token-delay", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "demo OK" in result.stdout and "live=0" in result.stdout
    for phase in ("settings", "create", "send", "stream", "delete"):
        assert phase in result.stdout


def test_serve_prints_its_url_first_and_serves(tmp_path: Path) -> None:
    faults = tmp_path / "f.json"
    faults.write_text(json.dumps({"faults": [{"phase": "send", "kind": "status", "status": 503}]}))
    proc = subprocess.Popen([sys.executable, "-m", "h2o_fsm.cli", "serve", "--faults", str(faults)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        code, _, err = run_cli("chat", "Hi", "--base-url", url)
        assert code == 1 and "HTTP 503" in err  # the fault file was applied
        code, out, _ = run_cli("chat", "Hi", "--base-url", url)
        assert code == 0 and out.strip()
    finally:
        proc.terminate()
        proc.wait(10)


def test_diagram_command() -> None:
    code, out, _ = run_cli("diagram", "--format", "dot", "--highlight", "send")
    assert code == 0 and out.startswith("digraph h2o_fsm") and "fillcolor" in out


@pytest.mark.skipif(sys.platform == "win32", reason="pty")
def test_status_line_on_a_terminal(server: LocalServer) -> None:
    import pty

    master, slave = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "h2o_fsm.cli", "chat", "Hi", "--base-url", server.url],
            stdout=subprocess.PIPE, stderr=slave, timeout=60,
        )
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    assert result.returncode == 0
    for phase in (b"[settings]", b"[create]", b"[send]", b"[stream]"):
        assert phase in shown
    # cleared at the first token, and never redrawn over the answer after it
    assert shown.endswith(b"[stream]\r\x1b[2K")
    assert result.stdout.decode() == "".join(generate([("user", "Hi")], 8)) + "\n"  # stdout stays clean


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")
def test_ctrl_c_mid_stream_deletes_and_exits_130() -> None:
    import signal

    with LocalServer(ServerConfig(max_tokens=300, token_delay=0.02)) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "h2o_fsm.cli", "chat", "Hi", "--base-url", server.url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        proc.stdout.read(10)  # streaming now
        assert server.accounting.live == 1
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert b"interrupted" in err and b"Traceback" not in err
        assert server.accounting.live == 0 and server.accounting.deleted == 1
