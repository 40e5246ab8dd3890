"""``h2o-fsm chat`` as people use it: an interactive conversation through a real pty, and prompts from stdin."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from support import emulator

from h2o_fsm.server import Fault, LocalServer, ServerConfig, generate

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pty and terminal signals")

PROMPT = b"you> "
# the child makes the pty its controlling terminal, so Ctrl-C typed into it is a real SIGINT
_WITH_TERMINAL = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, '-m', 'h2o_fsm.cli', *sys.argv[1:]])"
)


class Terminal:
    """A child process on a pty: type into it, wait for what it shows."""

    def __init__(self, *argv: str) -> None:
        self.master, slave = os.openpty()
        env = dict(os.environ, TERM="dumb", INPUTRC=os.devnull)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WITH_TERMINAL, *argv],
            stdin=slave, stdout=slave, stderr=slave, start_new_session=True, env=env,
        )
        os.close(slave)
        self.shown = b""
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self.shown += chunk

    def text(self) -> bytes:
        with self._lock:
            return self.shown

    def wait_for(self, check: Callable[[bytes], bool], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not check(self.text()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the terminal shows:\n{self.text()!r}")
            time.sleep(0.01)

    def prompts(self, n: int) -> None:
        self.wait_for(lambda shown: shown.count(PROMPT) >= n, f"prompt #{n}")

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> int:
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._reader.join(5)
            os.close(self.master)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with emulator(ServerConfig(max_tokens=8)) as srv:
        yield srv


def words(prompt: str, n: int = 8) -> bytes:
    return "".join(generate([("user", prompt)], n)).encode()


def test_three_turns_new_ctrl_c_mid_answer_and_ctrl_d(server: LocalServer) -> None:
    term = Terminal("chat", "--base-url", server.url)
    try:
        term.prompts(1)
        term.type(b"hello\n")
        term.prompts(2)
        assert words("hello") + b"\r\n" in term.text()  # streamed, then its own line
        assert b"[send]" in term.text()  # the live phase line on the terminal
        term.type(b"and then?\n")
        term.prompts(3)
        term.type(b"once more\n")
        term.prompts(4)
        acct = server.accounting
        assert (acct.created, acct.live) == (1, 1)  # three turns, ONE server-side conversation
        assert len(acct.requests_for("DELETE")) == 0

        term.type(b"/new\n")
        term.prompts(5)
        assert (acct.created, acct.live, acct.deleted) == (1, 0, 1)

        server.set_faults([Fault("stream", "stall", seconds=10, at_token=2)])
        term.type(b"tell me\n")
        first_two = words("tell me", 2)
        term.wait_for(lambda shown: shown.split(PROMPT)[-1].count(first_two) >= 1, "the first tokens")
        assert acct.live == 1  # mid-answer
        term.type(b"\x03")  # Ctrl-C
        term.prompts(6)
        assert b"answer stopped" in term.text()
        assert acct.live == 0 and acct.created == 2 and acct.deleted == 2
        server.set_faults([])

        term.type(b"after the stop\n")  # the loop goes on with a fresh conversation
        term.prompts(7)
        assert acct.created == 3 and acct.live == 1
        term.type(b"\x04")  # Ctrl-D
        code = term.close()
    finally:
        if term.proc.poll() is None:
            term.close()
    assert code == 0, term.text()
    assert b"Traceback" not in term.text()
    acct = server.accounting
    assert (acct.created, acct.deleted, acct.live, acct.deleted_twice) == (3, 3, 0, 0)


def test_ctrl_c_at_the_prompt_exits_130_and_deletes(server: LocalServer) -> None:
    term = Terminal("chat", "--base-url", server.url)
    try:
        term.prompts(1)
        term.type(b"hello\n")
        term.prompts(2)
        assert server.accounting.live == 1
        term.type(b"\x03")
        code = term.close()
    finally:
        if term.proc.poll() is None:
            term.close()
    assert code == 130, term.text()
    assert b"interrupted" in term.text() and b"Traceback" not in term.text()
    assert server.accounting.live == 0 and server.accounting.deleted == 1


def test_exit_command_deletes(server: LocalServer) -> None:
    term = Terminal("chat", "--base-url", server.url, "--system", "Be brief.")
    try:
        term.prompts(1)
        term.type(b"hello\n")
        term.prompts(2)
        term.type(b"/exit\n")
        code = term.close()
    finally:
        if term.proc.poll() is None:
            term.close()
    assert code == 0, term.text()
    assert server.accounting.live == 0 and server.accounting.deleted == 1


def test_a_failed_turn_is_one_line_and_the_loop_goes_on(server: LocalServer) -> None:
    server.set_faults([Fault("send", "status", status=500, count=1)])
    term = Terminal("chat", "--base-url", server.url)
    try:
        term.prompts(1)
        term.type(b"hello\n")
        term.prompts(2)
        term.type(b"again\n")
        term.prompts(3)
        term.type(b"\x04")
        code = term.close()
    finally:
        if term.proc.poll() is None:
            term.close()
    shown = term.text()
    assert code == 1, shown  # a conversation failed during the session
    assert shown.count(b"h2o-fsm: send failed (HTTP 500)") == 1 and b"Traceback" not in shown
    assert words("again") in shown
    assert server.accounting.live == 0


@pytest.mark.parametrize("argv", [["chat"], ["chat", "-"]])
def test_prompt_from_stdin(server: LocalServer, argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "h2o_fsm.cli", *argv, "--base-url", server.url],
        input="Hi\n", capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == words("Hi").decode() + "\n"
    assert server.accounting.live == 0


def test_empty_stdin_is_a_usage_error(server: LocalServer) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "h2o_fsm.cli", "chat", "--base-url", server.url],
        input="", capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "stdin was empty" in result.stderr
    assert server.accounting.created == 0
