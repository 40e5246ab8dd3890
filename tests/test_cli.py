"""The h2o-fsm command: exit codes, the one-line error, --step with piped input, --trace, demo, serve."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import emulator, happy_path, refused_url, stepped_states

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
    with emulator(ServerConfig(max_tokens=8), faults=[Fault("send", "status", status=500)]) as server:
        code, out, err = run_cli("chat", "Hi", "--base-url", server.url)
        assert server.accounting.live == 0
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "send failed (HTTP 500)" in lines[0] and "Traceback" not in err


def test_chat_debug_shows_the_traceback() -> None:
    with emulator(faults=[Fault("create", "status", status=500)]) as server:
        code, _, err = run_cli("chat", "Hi", "--base-url", server.url, "--debug")
    assert code == 1 and "Traceback" in err and "create failed (HTTP 500)" in err


def test_connection_refused_says_what_to_do() -> None:
    url = refused_url()
    code, _, err = run_cli("chat", "Hi", "--base-url", url)
    assert code == 1 and "is the server running" in err


@pytest.mark.parametrize("argv", [["chat", "Hi", "--base-url", "ftp://x"], ["chat", "  ", "--base-url", "http://127.0.0.1:9"], ["chat", "Hi", "--param", "temperature=\"hot\"", "--base-url", "http://127.0.0.1:9"]])
def test_bad_input_exits_2(argv: list[str]) -> None:
    code, _, err = run_cli(*argv)
    assert code == 2 and "invalid input" in err


def test_trace_writes_one_json_line_per_transition(server: LocalServer, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    code, _, _ = run_cli("chat", "Hi", "--base-url", server.url, "--trace", str(trace))
    assert code == 0
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [r["trigger"] for r in records] == [
        "start", "create", "fetch", "send", "stream", "finish", "tail", "close", "deleted"
    ]  # "tail": the stream read to its end after the answer
    for r in records:
        assert {"conversation_id", "source", "dest", "trigger", "duration_ms", "status", "error"} <= set(r)
    assert records[1]["status"] == 200 and records[-1]["dest"] == "closed"


def test_step_mode_runs_every_phase_on_enter(server: LocalServer, tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    code, out, err = run_cli("chat", "Hi", "--base-url", server.url, "--step", "--trace", str(trace), stdin="\n" * 10)
    assert code == 0, err
    assert err.count("press Enter") == len(stepped_states())  # settings, create, fetch, send, stream, read, delete
    assert "POST " + server.url + "/settings" in err
    assert out.startswith("".join(generate([("user", "Hi")], 8)))
    assert len(trace.read_text().splitlines()) == len(happy_path()) + 1  # one line per transition, and the tail's
    assert server.accounting.live == 0


@pytest.mark.parametrize("enters", range(len(stepped_states())))
def test_step_abort_at_every_pause_deletes(enters: int) -> None:
    with emulator(ServerConfig(max_tokens=4)) as server:
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

    with emulator(ServerConfig(max_tokens=300, token_delay=0.02)) as server:
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


# --- every mistake: one line on stderr and the stated exit code -------------------------------------------

def one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, f"expected one line, got {err!r}"
    assert "Traceback" not in err
    return err


def test_busy_port_on_serve_is_one_line_exit_2() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, out, err = run_cli("serve", "--port", str(port))
    assert code == 2 and out == ""
    assert "already in use" in one_line(err)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["serve", "--port", "99999"], "0..65535"),
        (["serve", "--port", "http"], "port number"),
        (["serve", "--faults", "no-such-faults.json"], "No such file"),
        (["chat", "Hi", "--timeout", "0"], "> 0"),
        (["chat", "Hi", "--timeout", "-1"], "> 0"),
        (["chat", "Hi", "--timeout", "soon"], "seconds"),
        (["chat", "Hi", "--param", "novalue"], "KEY=VALUE"),
        (["chat", "Hi", "--dialect", "gpt"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
        (["sweep"], "--journal"),
    ],
)
def test_bad_usage_is_one_line_exit_2(
    argv: list[str], said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(*argv)
    assert code == 2 and out == ""
    assert said in one_line(err) and err.startswith("h2o-fsm: ")


def test_a_broken_fault_file_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "f.json"
    bad.write_text('{"faults": [{"phase": "sned", "kind": "status"}]}')
    code, _, err = run_cli("serve", "--faults", str(bad))
    assert code == 2 and "not a fault plan" in one_line(err)


@pytest.mark.parametrize("option", ["--trace", "--journal"])
def test_output_files_into_a_missing_folder_or_onto_a_folder(option: str, tmp_path: Path, server: LocalServer) -> None:
    for target, said in ((tmp_path / "missing" / "f", "does not exist"), (tmp_path, "is a folder")):
        code, out, err = run_cli("chat", "Hi", "--base-url", server.url, option, str(target))
        assert code == 2 and out == ""
        assert said in one_line(err) and option in err
    assert server.accounting.created == 0  # refused before any request


def test_a_journal_that_is_not_a_database(tmp_path: Path, server: LocalServer) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database, just some text that is long enough to have a header\n" * 10)
    for argv in (["chat", "Hi", "--base-url", server.url, "--journal", str(notes)], ["sweep", "--journal", str(notes)]):
        code, _, err = run_cli(*argv)
        assert code == 2 and "not a usable SQLite database" in one_line(err)
    assert notes.read_text().startswith("not a database")  # left as it was


@pytest.mark.parametrize(("value", "said"), [
    ("http://127.0.0.1:1/journal", "must be redis://, rediss:// or postgresql://"),
    ("sqlite:///j.sqlite", "or give a file path"),  # what H2oClient(journal=) takes: a path, not this URL
    ("redis://me:s3cr3t@127.0.0.1:1/0?lease=soon", "lease"),
    ("redis://me:s3cr3t@127.0.0.1:notaport/0", "port"),
    ("postgresql://me:s3cr3t@127.0.0.1:1/db?lease=0", "lease"),
])
def test_a_journal_url_is_checked_like_the_clients(value: str, said: str, server: LocalServer) -> None:
    """``--journal`` takes what ``H2oClient(journal=...)`` takes; anything else is one line, exit 2,
    before any request, never with the URL's password."""
    for argv in (["chat", "Hi", "--base-url", server.url, "--journal", value], ["sweep", "--journal", value]):
        code, out, err = run_cli(*argv)
        assert (code, out) == (2, "") and said in one_line(err) and "--journal" in err
        assert "s3cr3t" not in err
    assert server.accounting.snapshot()["requests"] == 0


def test_chat_with_a_journal_server_that_is_down_still_answers(server: LocalServer) -> None:
    """A ``redis://`` journal is opened by the chat's client (and closed with it); one that refuses
    connections costs crash safety only, never the answer (as with ``H2oClient(journal=url)``)."""
    journal = refused_url().replace("http://", "redis://") + "/0?timeout=0.2"
    code, out, err = run_cli("chat", "Hi", "--base-url", server.url, "--journal", journal)
    assert (code, err) == (0, ""), err
    assert out == "".join(generate([("user", "Hi")], 8)) + "\n"
    assert server.accounting.live == 0 and server.accounting.deleted == 1


def test_serve_without_the_server_extra_says_what_to_install(tmp_path: Path) -> None:
    blocked = tmp_path / "starlette"
    blocked.mkdir()
    (blocked / "__init__.py").write_text("raise ImportError('starlette is not installed')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    for command in ("serve", "demo"):
        result = subprocess.run([sys.executable, "-m", "h2o_fsm.cli", command],
                                env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        assert "pip install 'h2o-fsm[server]'" in one_line(result.stderr)


def test_the_phase_is_said_once_with_the_hint_of_that_step() -> None:
    with emulator(faults=[Fault("settings", "status", status=404)]) as server:
        code, _, err = run_cli("chat", "Hi", "--base-url", server.url)
    assert code == 1
    line = one_line(err)
    assert line.startswith("h2o-fsm: settings failed (HTTP 404): no settings endpoint")
    assert line.count("settings failed") == 1 and "unknown conversation" not in line
    assert "check --base-url" in line


def test_connection_refused_is_said_as_refused() -> None:
    url = refused_url()
    code, _, err = run_cli("chat", "Hi", "--base-url", url)
    assert code == 1
    line = one_line(err)
    assert "connection refused" in line and "Timeout" not in line and line.count("failed") == 1


def test_cookie_values_are_never_printed(server: LocalServer) -> None:
    code, out, err = run_cli("chat", "Hi", "--base-url", "http://127.0.0.1:1", "--cookie", "hf-chat=S3CRET-VALUE",
                             "--debug")
    assert code in (1, 2) and "S3CRET-VALUE" not in out + err
    code, _, err = run_cli("chat", "Hi", "--cookie", "S3CRET-VALUE")
    assert code == 2 and "S3CRET-VALUE" not in one_line(err)


def test_dialect_from_the_environment_is_checked(monkeypatch: pytest.MonkeyPatch, server: LocalServer) -> None:
    monkeypatch.setenv("H2O_FSM_DIALECT", "gpt")
    code, _, err = run_cli("chat", "Hi", "--base-url", server.url)
    assert code == 2 and "H2O_FSM_DIALECT" in one_line(err)
    monkeypatch.setenv("H2O_FSM_DIALECT", "h2o")  # the default: works with any engine
    code, out, err = run_cli("chat", "Hi", "--base-url", server.url)
    assert code == 0, err


def test_options_show_help_and_defaults() -> None:
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"], stdout=out)
    assert exit_info.value.code == 0
    result = subprocess.run([sys.executable, "-m", "h2o_fsm.cli", "serve", "--help"],
                            capture_output=True, text=True, timeout=60)
    text = " ".join(result.stdout.split())
    for shown in ("(default: 127.0.0.1)", "(default: 0)", "(default: 32)", "(default: h2o)"):
        assert shown in text


# --- sweep ------------------------------------------------------------------------------------------------

def test_sweep_refuses_a_journal_that_does_not_exist(tmp_path: Path) -> None:
    code, _, err = run_cli("sweep", "--journal", str(tmp_path / "typo.sqlite"))
    assert code == 2 and "no such journal" in one_line(err)
    assert not (tmp_path / "typo.sqlite").exists()  # not created


_CRASH_AFTER_CREATE = """
import asyncio, os, sys
from h2o_fsm import H2oClient, Journal

async def main():
    journal = Journal(sys.argv[1], lease=0.5)  # the lease runs out soon after the process dies
    for url in sys.argv[2:]:
        client = H2oClient(url, journal=journal)
        conv = client.conversation()
        await conv.step()  # settings
        await conv.step()  # create: journalled
    os._exit(0)  # dies like kill -9: nothing deleted

asyncio.run(main())
"""


def test_sweep_uses_the_url_recorded_with_each_entry(tmp_path: Path) -> None:
    from h2o_fsm import Journal

    path = tmp_path / "live.sqlite"
    with emulator() as a, emulator() as b:
        subprocess.run([sys.executable, "-c", _CRASH_AFTER_CREATE, str(path), a.url, b.url], check=True, timeout=60)
        assert (a.accounting.live, b.accounting.live) == (1, 1)
        time.sleep(1.0)  # past the dead owner's lease
        code, out, err = run_cli("sweep", "--journal", str(path), "--base-url", a.url)
        assert code == 0 and "deleted=1 " in out
        assert b.url in one_line(err) and "without --base-url" in err  # says what it left
        assert (a.accounting.live, b.accounting.live) == (0, 1)
        code, out, err = run_cli("sweep", "--journal", str(path))  # each entry at its own URL
        assert code == 0 and "deleted=1 " in out and err == ""
        assert (a.accounting.live, b.accounting.live) == (0, 0)
    journal = Journal(path)
    try:
        assert journal.entries() == []
    finally:
        journal.close()



def test_sweep_reports_leased_stopped_and_bad_rows(tmp_path: Path) -> None:
    """The report names what it counts: entries a lease keeps (``skipped_leased``), generations
    stopped before their DELETE, rows it could not read; ``--json`` keeps the old key."""
    import sqlite3

    import httpx

    from h2o_fsm import Journal

    path = tmp_path / "live.sqlite"
    with emulator(ServerConfig(secure_cookie=False), dialect="chat-ui") as server:
        with httpx.Client(base_url=server.url) as raw:
            cids = [raw.post("/conversation", json={"model": server.config.models[0]}).json()["conversationId"]
                    for _ in range(2)]
            cookies = dict(raw.cookies)
        journal = Journal(path, lease=30)
        journal.add(server.url, cids[0], cookies, owner="alive", dialect="chat-ui")  # its lease holds
        journal.add(server.url, cids[1], cookies, owner="dead", dialect="chat-ui")
        journal.running(server.url, cids[1], "0" * 8 + "-0000-4000-8000-" + "0" * 12, cookies)
        journal.release("dead")
        journal.close()
        db = sqlite3.connect(str(path), isolation_level=None)
        db.execute("INSERT INTO conversations VALUES (?, ?, ?, ?, ?)", (server.url, "unreadable", "{", 1.0, 1))
        db.close()
        code, out, err = run_cli("sweep", "--journal", str(path), "--dialect", "chat-ui")
        assert (code, err) == (0, ""), err
        assert out == "swept: deleted=1 already_gone=0 failed=0 skipped_leased=1 stopped=1 bad_rows=1\n"
        assert server.accounting.live_ids == {cids[0]} and server.accounting.stops == 1
        code, out, err = run_cli("sweep", "--journal", str(path), "--dialect", "chat-ui", "--json", "--all")
        assert code == 0 and json.loads(out) == {
            "type": "sweep", "deleted": 1, "already_gone": 0, "failed": 0, "skipped_leased": 0, "stopped": 0,
            "bad_rows": 1, "skipped_live_process": 0}  # --all: the leased one (no generation to stop)
        assert server.accounting.live == 0

# --- serve and demo ------------------------------------------------------------------------------------------

@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")
def test_serve_ctrl_c_mid_stream_is_one_line() -> None:
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "h2o_fsm.cli", "serve", "--token-delay", "0.05",
                             "--max-tokens", "200"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    chat = None
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        chat = subprocess.Popen([sys.executable, "-m", "h2o_fsm.cli", "chat", "Hi", "--base-url", url],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert chat.stdout is not None
        chat.stdout.read(10)  # a stream is running
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        if chat is not None:
            chat.kill()
            chat.communicate(timeout=30)
    assert proc.returncode == 130
    assert one_line(err) == "h2o-fsm: server stopped\n"


def test_demo_shows_phases_transitions_and_accounting() -> None:
    result = subprocess.run([sys.executable, "-m", "h2o_fsm.cli", "demo", "--token-delay", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    phases, table, acct = out.index("phases:"), out.index("transitions taken:"), out.index("server: created=1")
    assert phases < table < acct
    assert "new -> settings : start" in out and "delete -> closed   : deleted" in out
    assert " ms" in out[phases:table]
    assert "created=1 deleted=1 live=0" in out
    assert "h2o-fsm serve" in result.stderr and "h2o-fsm serve" not in out  # the hint goes to stderr


def _takes(callable_: object, name: str) -> bool:
    import inspect

    return name in inspect.signature(callable_).parameters  # type: ignore[arg-type]


@pytest.mark.skipif(
    not (_takes(__import__("h2o_fsm").H2oClient, "dialect") and _takes(LocalServer, "dialect")),
    reason="the chat-ui dialect is not in this checkout's engine/emulator yet",
)
def test_chat_ui_dialect_end_to_end() -> None:
    with emulator(ServerConfig(max_tokens=8), dialect="chat-ui") as server:  # type: ignore[call-arg]
        code, out, err = run_cli("chat", "Hi", "--base-url", server.url, "--dialect", "chat-ui")
        assert code == 0, err
        assert out.strip() and server.accounting.live == 0
    result = subprocess.run([sys.executable, "-m", "h2o_fsm.cli", "demo", "--token-delay", "0"],
                            env=dict(os.environ, H2O_FSM_DIALECT="chat-ui"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
