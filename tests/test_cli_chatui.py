"""The ``h2o-fsm`` command in the chat-ui dialect, run as a subprocess against the emulator on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from support import emulator

from h2o_fsm.server import Fault, LocalServer, ServerConfig, generate

SECRET = "tok-9c1e77f0-cli-SECRET"


def h2o_fsm(*argv: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    for name in ("H2O_FSM_DIALECT", "H2O_FSM_COOKIES", "H2O_FSM_BASE_URL"):
        full.pop(name, None)  # only what the test gives
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "h2o_fsm.cli", *argv], env=full, input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)


def chatui(**config: object) -> AbstractContextManager[LocalServer]:
    config.setdefault("max_tokens", 8)
    return emulator(ServerConfig(**config), dialect="chat-ui")  # type: ignore[arg-type]


def assert_clean(server: LocalServer, created: int = 1) -> None:
    acct = server.accounting
    assert acct.created == created and acct.deleted == created and acct.live == 0 and acct.deleted_twice == 0


def test_chat_dialect_chat_ui_streams_the_exact_answer() -> None:
    with chatui() as server:
        result = h2o_fsm("chat", "Hi there", "--base-url", server.url, "--dialect", "chat-ui")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "".join(generate([("user", "Hi there")], 8)) + "\n"
        assert_clean(server)
        assert server.accounting.requests_for("POST", "/settings") == []  # chat-ui: not unless asked
        sends = [r for r in server.accounting.requests_for("POST", "/conversation/") if r.status == 200]
        assert len(sends) == 1  # the multipart send passed the Origin gate


def test_chat_dialect_from_the_environment_with_system_and_stdin() -> None:
    with chatui() as server:
        result = h2o_fsm("chat", "--system", "Answer briefly.", "--base-url", server.url,
                         env={"H2O_FSM_DIALECT": "chat-ui"}, stdin="What now?\n")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "".join(generate([("system", "Answer briefly."), ("user", "What now?")], 8)) + "\n"
        (cid,) = server.accounting.gone_ids
        root = server.accounting.messages(cid)[0]
        assert (root.role, root.content) == ("system", "Answer briefly.")  # --system became the preprompt
        assert_clean(server)


def test_chat_ui_dialect_against_an_h2o_server_fails_in_one_line() -> None:
    with emulator(ServerConfig(max_tokens=8)) as server:  # the 2023 dialect's emulator
        result = h2o_fsm("chat", "Hi", "--base-url", server.url, "--dialect", "chat-ui")
        assert server.accounting.live == 0
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_demo_dialect_chat_ui() -> None:
    result = h2o_fsm("demo", "--dialect", "chat-ui", "--token-delay", "0")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "bundled chat-ui emulator" in out and "demo OK" in out
    assert f"answer: {''.join(generate([('user', 'Hello, how are you?')], 32))}\n" in out
    assert "create -> fetch    : fetch" in out and "fetch -> send     : send" in out  # the chat-ui state shows
    assert "created=1 deleted=1 live=0" in out


def test_cookie_against_a_login_required_emulator(tmp_path: Path) -> None:
    with chatui(required_cookies={"token": SECRET}) as server:
        denied = h2o_fsm("chat", "Hi", "--base-url", server.url, "--dialect", "chat-ui")
        assert denied.returncode == 1 and "401" in denied.stderr and "Traceback" not in denied.stderr
        assert server.accounting.created == 0

        trace = tmp_path / "trace.jsonl"
        ok = h2o_fsm("chat", "Hi", "--base-url", server.url, "--dialect", "chat-ui", "--cookie", f"token={SECRET}",
                     "--trace", str(trace))
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout == "".join(generate([("user", "Hi")], 8)) + "\n"
        records = [json.loads(line) for line in trace.read_text().splitlines()]
        assert [r["trigger"] for r in records][-2:] == ["close", "deleted"]

        from_env = h2o_fsm("chat", "Hi", "--base-url", server.url, "--dialect", "chat-ui",
                           env={"H2O_FSM_COOKIES": f"token={SECRET}; other=1"})
        assert from_env.returncode == 0, from_env.stderr
        assert_clean(server, created=2)

        server.faults.add(Fault("send", "status", status=500))
        failed = h2o_fsm("chat", "Hi", "--base-url", server.url, "--dialect", "chat-ui", "--cookie", f"token={SECRET}",
                         "--debug", "--trace", str(trace))
        assert failed.returncode == 1 and "HTTP 500" in failed.stderr
        assert_clean(server, created=3)
    for shown in (denied, ok, from_env, failed):
        assert SECRET not in shown.stdout + shown.stderr
    assert SECRET not in trace.read_text()


def test_the_wrong_dialect_is_named_in_the_advice() -> None:
    with chatui() as server:  # a chat-ui server, spoken to in the 2023 dialect
        result = h2o_fsm("chat", "Hi", "--base-url", server.url, "--dialect", "h2o")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "try --dialect chat-ui" in result.stderr
    with emulator(ServerConfig(max_tokens=8)) as old:  # a 2023 server, spoken to in today's dialect
        result = h2o_fsm("chat", "Hi", "--base-url", old.url, "--dialect", "chat-ui")
        assert old.accounting.live == 0
    assert result.returncode == 1 and "try --dialect h2o" in result.stderr


def test_an_answer_cut_by_the_timeout_ends_its_line_before_the_error() -> None:
    with chatui(max_tokens=40, token_delay=0.05) as server:
        result = h2o_fsm("chat", "Hi", "--base-url", server.url, "--dialect", "chat-ui", "--timeout", "0.6")
        assert server.accounting.live == 0
    assert result.returncode == 1
    assert result.stdout and result.stdout.endswith("\n")  # the partial answer, then its own line end
    assert result.stderr.startswith("h2o-fsm: stream failed") and result.stderr.count("\n") == 1
