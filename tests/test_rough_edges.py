"""A newcomer's rough edges (issue 19 items 5-12), each with the check that would have caught it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import FAST_RETRIES, FAST_TIMEOUTS, assert_clean, caller_timeout, refused_url

from h2o_fsm import H2o, H2oClient, Limits
from h2o_fsm.cli import main
from h2o_fsm.server import LocalServer, ServerConfig


def run_cli(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err, stdin=io.StringIO(stdin))
    return code, out.getvalue(), err.getvalue()


# --- 5: a bad model is "check --model", not "the other dialect" ------------------------------------------

def test_a_bad_model_says_check_model_not_the_other_dialect(server: LocalServer) -> None:
    code, _, err = run_cli("chat", "Hello", "--model", "nope/nope", "--base-url", server.url)
    assert code == 1
    assert "check --model" in err and "other dialect" not in err, err
    assert "looks like a chat-ui server" not in err, err  # the 2023 server's own 400 for a bad model
    assert "offers" not in err  # the 2023 server lists no models: none are named


async def test_a_bad_model_on_a_2023_server_is_a_status_error_not_the_other_dialect(server: LocalServer) -> None:
    from h2o_fsm import H2oDialectError, H2oStatusError

    for dialect in ("h2o", "auto"):
        async with H2oClient(server.url, dialect=dialect, model="bad/model", retries=FAST_RETRIES) as client:
            with pytest.raises(H2oStatusError) as info:
                await client.ask("hi")
        assert not isinstance(info.value, H2oDialectError) and info.value.status == 400, repr(info.value)


def test_a_failed_dialect_detection_leaves_no_unclosed_session() -> None:
    """`async with H2oClient(url, dialect="auto")` whose detection fails (nothing listens) closed nothing:
    aiohttp warned "Unclosed client session" after the one-line error."""
    script = textwrap.dedent(f"""
        import asyncio, gc, warnings
        from h2o_fsm import H2oClient, H2oError
        warnings.simplefilter("error")
        async def main():
            try:
                async with H2oClient({refused_url()!r}, dialect="auto"):
                    pass
            except H2oError as exc:
                print("error", exc.phase.value)
            gc.collect()
        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("error"), (done.stdout, done.stderr)
    assert "Unclosed" not in done.stderr, done.stderr


def test_a_bad_model_lists_the_models_of_a_server_that_lists_them(chatui_server: LocalServer) -> None:
    code, _, err = run_cli("chat", "Hello", "--model", "nope/nope", "--base-url", chatui_server.url)
    assert code == 1 and err.count("\n") == 1, err
    assert "check --model" in err and "other dialect" not in err, err
    offered = err.split("it offers: ", 1)[1].split(")")[0].split(", ")
    assert offered == list(chatui_server.config.models)  # client.models(): the server's, its default first
    assert chatui_server.accounting.live == 0


# --- 6: --step on a terminal labels each result with its own step ------------------------------------------

@pytest.mark.skipif(sys.platform == "win32", reason="pty")
def test_step_on_a_terminal_shows_no_status_line_over_the_results(server: LocalServer) -> None:
    from test_cli_interactive import Terminal

    term = Terminal("chat", "Hi", "--step", "--base-url", server.url)
    try:
        for n in range(1, 4):
            term.wait_for(lambda shown, n=n: shown.count(b"press Enter") >= n, f"pause #{n}")
            term.type(b"\n")
        term.wait_for(lambda shown: shown.count(b"press Enter") >= 4, "pause #4")
        term.type(b"q\n")
        term.close()
    finally:
        if term.proc.poll() is None:
            term.close()
    shown = term.text()
    assert b"\x1b[2K[" not in shown, shown  # the live status line: off in --step
    assert b"-> settings" in shown.replace("→".encode(), b"->") and b"[create]  ->" not in shown


# --- 7: why a turn ended by the caller; --trace times --------------------------------------------------------

async def test_a_turn_cancelled_by_the_caller_says_so_in_its_record() -> None:
    with LocalServer(ServerConfig(max_tokens=200, token_delay=0.02)) as server:
        async with H2oClient(server.url, retries=FAST_RETRIES, timeouts=FAST_TIMEOUTS) as client:
            conv = client.conversation()
            with pytest.raises(TimeoutError):
                async with caller_timeout(0.3):
                    async with conv:
                        await conv.ask("a long answer")
        aborts = [r for r in conv.history if r.trigger == "abort"]
        assert aborts and aborts[0].error is not None and "cancelled by the caller" in aborts[0].error
        assert_clean(server)


def test_trace_lines_carry_wall_clock_and_monotonic_times(server: LocalServer, tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    assert run_cli("chat", "Hi", "--base-url", server.url, "--trace", str(trace))[0] == 0
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert lines and all(isinstance(x["time"], float) and isinstance(x["monotonic"], float) for x in lines)
    assert [x["monotonic"] for x in lines] == sorted(x["monotonic"] for x in lines)
    assert abs(lines[-1]["time"] - __import__("time").time()) < 600


# --- 9: --debug's advice; a URL without its scheme -------------------------------------------------------------

def test_debug_output_does_not_tell_to_run_with_debug() -> None:
    code, _, err = run_cli("chat", "Hi", "--base-url", "http://127.0.0.1:9", "--debug")
    assert code == 1 and "Traceback" in err
    assert "run again with --debug" not in err


def test_a_base_url_without_scheme_names_the_fix() -> None:
    code, _, err = run_cli("chat", "Hi", "--base-url", "127.0.0.1:8000")
    assert code == 2
    assert "did you mean http://127.0.0.1:8000?" in err and "not ''" not in err, err


# --- 10: no base URL is refused, never the long-gone 2023 host -----------------------------------------------

def test_no_base_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("H2O_FSM_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="H2O_FSM_BASE_URL"):
        H2oClient()
    monkeypatch.setenv("H2O_FSM_BASE_URL", "http://127.0.0.1:9")
    assert H2oClient().base_url == "http://127.0.0.1:9"
    assert H2o.url  # the seed API keeps its documented default (a class attribute, set at import)


def test_the_cli_without_a_server_says_how_to_give_one() -> None:
    env = {k: v for k, v in os.environ.items() if k != "H2O_FSM_BASE_URL"}
    result = subprocess.run([sys.executable, "-m", "h2o_fsm.cli", "chat", "Hi"], capture_output=True, text=True,
                            env=env, timeout=60, check=False)
    assert result.returncode == 2 and "--base-url" in result.stderr and "H2O_FSM_BASE_URL" in result.stderr


# --- 11: the outgoing prompt is bounded, refused before anything is sent ---------------------------------------

async def test_a_prompt_over_the_limit_is_refused_before_anything_is_sent(server: LocalServer) -> None:
    async with H2oClient(server.url, limits=Limits(max_prompt_bytes=500)) as client:
        with pytest.raises(ValueError, match="max_prompt_bytes"):
            await client.ask("é" * 251)  # 502 bytes in UTF-8
        with pytest.raises(ValueError, match="max_prompt_bytes"):
            await client.ask([{"role": "system", "content": "x" * 300}, {"role": "user", "content": "y" * 300}])
        conv = client.conversation()
        with pytest.raises(ValueError, match="max_prompt_bytes"):
            conv.queue("z" * 501)
        await conv.aclose()
        assert await client.ask("é" * 200)  # 400 bytes: fine
    assert server.accounting.created == 1


def test_a_huge_prompt_on_stdin_is_refused_without_holding_it(server: LocalServer) -> None:
    huge = "a" * (Limits().max_prompt_bytes + 10)
    code, out, err = run_cli("chat", "-", "--base-url", server.url, stdin=huge)
    assert code == 2 and "max_prompt_bytes" in err and out == ""
    assert server.accounting.requests_total == 0


# --- 12: demo's numbers ------------------------------------------------------------------------------------------

def test_demo_puts_the_reading_time_under_stream() -> None:
    result = subprocess.run([sys.executable, "-m", "h2o_fsm.cli", "demo", "--token-delay", "0.02"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.split("phases:\n")[1].split("\n\n")[0].splitlines():
        label, ms, *rest = line.split(maxsplit=3)[0], float(line.split()[1]), line
        rows[(label, "reading" in line)] = ms
    assert ("ready", False) not in rows  # the reading time used to be shown under "ready"
    # 8+ tokens 20 ms apart: the reading takes at least 100 ms whatever the load (a lower bound only)
    assert rows[("stream", True)] >= 100.0


# --- 8: the testing kit under hypothesis -----------------------------------------------------------------------

_KIT = textwrap.dedent('''
    import logging
    import pytest
    from hypothesis import HealthCheck, given, settings, strategies as st
    from h2o_fsm import H2oClient, H2oError, Retries
    from h2o_fsm.server import Fault, FaultPlan
    from h2o_fsm.testing import assert_nothing_leaked

    @pytest.mark.asyncio
    @settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(leak=st.booleans())
    async def test_each_example_starts_clean(h2o_server, leak, caplog):
        caplog.set_level(logging.DEBUG)
        plan = FaultPlan([Fault("create", "create_then_error", status=500)] if leak else [])
        h2o_server.reset(plan)
        assert h2o_server.accounting.created == 0  # nothing of the previous example
        async with H2oClient(h2o_server.url, retries=Retries(attempts=1)) as client:
            try:
                await client.ask("hi")
            except H2oError:
                pass
        assert_nothing_leaked(h2o_server)
        noise = [r for r in caplog.records if "Exception was raised while processing" in r.getMessage()]
        assert not noise, noise
''')


def test_the_kit_resets_per_example_and_keeps_transitions_errors_out_of_the_log(tmp_path: Path) -> None:
    (tmp_path / "test_kit.py").write_text(_KIT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "H2O_FSM_"))}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_kit.py"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
