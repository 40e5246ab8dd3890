"""``chat --step`` in a real pseudo-terminal when a step fails: the failure is shown (status, headers, the
start of the body), the CLI waits there before each step of the ending (stop, DELETE), and Enter, ``q``
or Ctrl-C at that pause all end with exactly one DELETE."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from support import emulator
from test_cli_interactive import Terminal

from h2o_fsm import H2oStatusError, Phase
from h2o_fsm.cli._stepping import failure_lines
from h2o_fsm.server import Fault, LocalServer, ServerConfig

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pty and terminal signals")

PAUSE = b"press Enter"


@pytest.fixture
def failing_send() -> Iterator[LocalServer]:
    with emulator(ServerConfig(max_tokens=8), [Fault("send", "status", status=500)]) as srv:
        yield srv


def deletes(server: LocalServer) -> int:
    return len(server.accounting.requests_for("DELETE"))


def to_the_failure(server: LocalServer) -> Terminal:
    """A ``--step`` chat stepped through settings, create, fetch and the failing send, at the next pause."""
    term = Terminal("chat", "Hi", "--step", "--base-url", server.url)
    for n in range(1, 5):
        term.wait_for(lambda shown, n=n: shown.count(PAUSE) >= n, f"pause #{n}")
        term.type(b"\n")
    term.wait_for(lambda shown: shown.count(PAUSE) >= 5, "the pause after the failure")
    return term


def test_a_failed_send_pauses_before_each_ending_step(failing_send: LocalServer) -> None:
    term = to_the_failure(failing_send)
    try:
        shown = term.text().decode()
        assert "✗ send failed" in shown and "HTTP 500" in shown, shown
        assert "content-type: application/json" in shown and "body: " in shown and "injected fault" in shown
        assert "[send] next: abort" in shown and "stop-generating" in shown
        assert failing_send.accounting.live == 1 and deletes(failing_send) == 0  # waiting at the failure
        term.type(b"\n")  # the stop (nothing runs: skipped)
        term.wait_for(lambda s: s.count(PAUSE) >= 6, "the pause before the DELETE")
        assert b"] next: " in term.text() and b"DELETE http" in term.text().rsplit(b"-> stop", 1)[-1].replace(
            "→".encode(), b"->")
        assert deletes(failing_send) == 0
        term.type(b"\n")  # the DELETE
        term.wait_for(lambda s: s.count(PAUSE) >= 7, "the last pause")
        assert deletes(failing_send) == 1
        term.type(b"\n")
        code = term.close()
    finally:
        if term.proc.poll() is None:
            term.close()
    assert code == 1  # the failure is the command's outcome
    assert deletes(failing_send) == 1 and failing_send.accounting.live == 0


@pytest.mark.parametrize(("key", "code"), [(b"\x03", 130), (b"q\n", 1)])
def test_ctrl_c_or_q_at_the_pause_after_a_failure_deletes(failing_send: LocalServer, key: bytes, code: int) -> None:
    term = to_the_failure(failing_send)
    try:
        assert deletes(failing_send) == 0
        term.type(key)
        rc = term.close()
    finally:
        if term.proc.poll() is None:
            term.close()
    assert rc == code, term.text()
    assert deletes(failing_send) == 1 and failing_send.accounting.live == 0


def test_a_failure_line_is_bounded_one_line_and_without_terminal_escapes() -> None:
    body = "\x1b]0;owned\x07" + "x" * 1000 + "\r\nSet-Cookie: ***"
    exc = H2oStatusError("HTTP 500 the server failed", phase=Phase.SEND, status=500, body=body,
                         headers=(("content-type", "text/plain\x1b[31m"), ("set-cookie", "***")))
    lines = failure_lines(exc)
    assert len(lines) == 2 and all("\x1b" not in line and "\r" not in line and "\n" not in line for line in lines)
    assert lines[0].startswith("  ✗ send failed: H2oStatusError: HTTP 500") and "set-cookie: ***" in lines[0]
    assert len(lines[1]) <= len("    body: ") + 200 + 1
