"""The registry of dialects (issue 15, item 1): open to a dialect defined outside the package, read by
the client, the CLI, the emulator and the fault plans; no dialect named anywhere else."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from support import FAST_RETRIES, FAST_TIMEOUTS
from toy_dialect import TOY, register_toy, toy_app, unregister_toy

from h2o_fsm import H2oClient, H2oStatusError, Phase
from h2o_fsm._dialects import DIALECTS, emulator_app, get_dialect, names, suggested
from h2o_fsm._dialects.chatui import ChatUiState
from h2o_fsm.server import bind_socket, create_app, phases_of

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def toy() -> Any:
    register_toy()
    yield TOY
    unregister_toy()


async def _serve(app: Any) -> AsyncIterator[str]:
    sock = bind_socket("127.0.0.1", 0)
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "the toy server did not start"
            await asyncio.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@pytest.fixture
async def toy_server(toy: Any) -> AsyncIterator[tuple[str, list[tuple[str, str, Any]], Any]]:
    log: list[tuple[str, str, Any]] = []
    app = toy_app(log)
    async for url in _serve(app):
        yield url, log, app


async def test_a_dialect_registered_from_outside_runs_a_conversation_end_to_end(toy_server: Any) -> None:
    url, log, app = toy_server
    assert "toy" in names() and get_dialect("toy") is TOY
    async with H2oClient(url, dialect="toy", retries=FAST_RETRIES, timeouts=FAST_TIMEOUTS) as client:
        assert client.dialect == "toy"
        async with client.conversation() as conv:
            assert await conv.ask("one two three") == "three two one "
            chunks = [c async for c in conv.stream("a b")]
            assert "".join(chunks) == "b a " and len(chunks) == 2
            cid = conv.conversation_id
        assert conv.state is Phase.CLOSED
    assert [(m, p) for m, p, _ in log] == [
        ("POST", "/conversation"), ("POST", f"/conversation/{cid}"), ("POST", f"/conversation/{cid}"),
        ("DELETE", f"/conversation/{cid}"),
    ]
    assert [body["turn"] for m, p, body in log if p == f"/conversation/{cid}" and m == "POST"] == [1, 2]  # its state
    assert app.state.live == set()


async def test_a_registered_dialect_s_recovery_rule_is_the_engine_s(toy: Any) -> None:
    log: list[tuple[str, str, Any]] = []
    app = toy_app(log, forget_first_create=True)
    async for url in _serve(app):
        async with H2oClient(url, dialect="toy", retries=FAST_RETRIES, timeouts=FAST_TIMEOUTS) as client:
            assert await client.ask("hi there") == "there hi "
    # the 419 was the toy's "forgot the session": settings again, then the create once more
    assert [p for _, p, _ in log][:3] == ["/conversation", "/settings", "/conversation"]
    assert app.state.live == set()


async def test_a_stepped_toy_conversation_describes_what_it_sends(toy_server: Any) -> None:
    url, log, _ = toy_server
    async with H2oClient(url, dialect="toy", retries=FAST_RETRIES, timeouts=FAST_TIMEOUTS, log_content=True) as c:
        conv = c.conversation()
        conv.queue("x y")
        seen = []
        while not conv.state.is_terminal:
            seen.append(conv.describe_next())
            await conv.step()
    assert seen[0].endswith("/settings (skipped)")  # the toy does not perform it
    assert any(d.startswith("POST ") and d.endswith("toy say=x y") for d in seen)
    assert [m for m, _, _ in log] == ["POST", "POST", "DELETE"]


def test_the_cli_the_emulator_and_the_fault_plans_read_the_registry(toy: Any) -> None:
    assert set(DIALECTS) <= set(names())
    with pytest.raises(ValueError, match="does not speak the 'toy' dialect"):
        create_app(dialect="toy")  # no emulator app named in its entry
    with pytest.raises(ValueError, match="unknown dialect"):
        emulator_app("nope")
    assert "fetch" not in phases_of("toy") and "settings" in phases_of("toy")
    assert suggested(Phase.CREATE, 419, "h2o") == "toy"  # its sign, read by the CLI's advice
    assert suggested(Phase.CREATE, 405, "chat-ui") == "h2o" and suggested(Phase.SETTINGS, 415, "h2o") == "chat-ui"
    assert suggested(Phase.CREATE, 405, "h2o") is None
    from h2o_fsm.cli._errors import error_line

    err = H2oStatusError("HTTP 419", phase=Phase.CREATE, status=419)
    assert "try --dialect toy" in error_line(err, "http://127.0.0.1:1", "chat-ui")


def test_a_dialect_is_named_nowhere_but_in_the_registry() -> None:
    """No ``if dialect == ...`` chain outside ``_dialects/__init__.py`` (each dialect's own package may
    of course name itself)."""
    pattern = re.compile(r"""dialect\s*[!=]=\s*["']|[!=]=\s*["'](h2o|chat-ui)["']|["'](h2o|chat-ui)["']\s*[!=]=""")
    offenders = []
    for path in sorted((ROOT / "h2o_fsm").rglob("*.py")):
        if path == ROOT / "h2o_fsm" / "_dialects" / "__init__.py":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_a_sweep_stops_a_journalled_generation_with_the_body_the_turn_would_have_sent(toy: Any) -> None:
    """The journal records ``generation(state)`` after the send; the sweep builds its stop from that id
    alone (``stop_body_of``) — the same body the live conversation's stop step sends."""
    chat = get_dialect("chat-ui")
    state = chat.new_state(None)
    assert isinstance(state, ChatUiState)
    state.parent_id = "m0"  # what the create's answer or the fetch named
    chat.send_body(state, "Hi", {})
    generation = chat.generation(state)
    assert generation
    assert chat.stop_body_of(generation) == chat.stop_body(state)
    for name in ("h2o", TOY.name):  # nothing to stop: nothing recorded, an empty body
        plain = get_dialect(name)
        assert plain.generation(plain.new_state(None)) == ""
        assert plain.stop_body_of("g") == plain.stop_body(plain.new_state(None))
