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

from h2o_fsm import H2oClient, H2oStateError, H2oStatusError, Phase
from h2o_fsm._dialects import DIALECTS, emulator_app, get_dialect, names, suggested, usage_limit, with_catalog
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


async def test_a_dialect_without_a_catalog_refuses_the_lists_before_any_request(toy_server: Any) -> None:
    url, log, _ = toy_server
    async with H2oClient(url, dialect="toy", retries=FAST_RETRIES, timeouts=FAST_TIMEOUTS) as client:
        for call, what in ((client.models, "model list"), (client.list_conversations, "conversation list"),
                           (client.delete_all_conversations, "delete-all")):
            with pytest.raises(H2oStateError, match=rf"the toy dialect has no {what} \(chat-ui has one\)"):
                await call()
    assert log == []  # nothing sent


def test_the_lists_the_usage_limit_and_the_reattach_parser_are_a_dialect_s_hooks(toy: Any) -> None:
    from h2o_fsm._stream import ResumeClosed, ResumeEnded

    assert with_catalog() == ("chat-ui",) and get_dialect("h2o").catalog is None and TOY.catalog is None
    words = '{"message":"You have reached the maximum number of conversations. Delete some to continue."}'
    assert get_dialect("chat-ui").usage_limited(429, words) and not TOY.usage_limited(429, words)
    assert usage_limit(429, words) and not usage_limit(429, "slow down") and not usage_limit(400, words)
    with pytest.raises(ValueError, match="the toy dialect has no reattach step"):
        TOY.resume_parser(None, 0, 1024)
    parser = get_dialect("chat-ui").resume_parser(None, 2, 1024)  # the seam's errors, raised by chat-ui's parser
    with pytest.raises(ResumeEnded):
        parser.feed(b'event: end\ndata: {"status": "gone"}\n\n')
    parser.reconnect()
    with pytest.raises(ResumeClosed):
        parser.close()


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



def _imported_modules(source: str, package: list[str]) -> list[tuple[int, str]]:
    """Every module ``source`` (a module of ``package``) imports — anywhere: module level, under
    ``TYPE_CHECKING``, inside functions, through ``importlib.import_module``/``__import__`` with a literal
    name — as absolute dotted names (``from .x import y`` also as ``…x.y``: ``y`` may be a module)."""
    import ast

    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and {getattr(node.func, "attr", None), getattr(node.func, "id", None)} & {"import_module", "__import__"}):
            found.append((node.lineno, node.args[0].value))
    return found


def _dialect_imports(source: str, package: list[str], dialects: set[str]) -> dict[int, str]:
    """The lines of ``source`` that import a module of one of the ``dialects`` packages (the first such)."""
    lines: dict[int, str] = {}
    for line, module in _imported_modules(source, package):
        below = module.removeprefix("h2o_fsm._dialects.") if module.startswith("h2o_fsm._dialects.") else ""
        if below.split(".")[0] in dialects:
            lines.setdefault(line, module)
    return lines


def test_no_module_outside_the_registry_imports_a_dialect_s_package() -> None:
    """A dialect is one package behind the registry: no module of ``h2o_fsm/`` outside ``_dialects/``
    imports one (``_dialects.h2o``, ``_dialects.chatui``, a host's...), relative or absolute, at module
    level, under ``TYPE_CHECKING`` or in a function; the registry's own import of the built-in ones is the
    one place that names them. The engine reaches a dialect only through its registry entry's hooks."""
    root = ROOT / "h2o_fsm" / "_dialects"
    dialects = {p.name for p in root.iterdir() if (p / "__init__.py").exists()}
    dialects |= {p.stem for p in root.glob("*.py") if p.stem != "__init__"}
    assert {"h2o", "chatui"} <= dialects
    # every spelling is caught (a check that cannot see an import proves nothing)
    spellings = ("from ._dialects.chatui.catalog import X", "from ._dialects import chatui",
                 "import h2o_fsm._dialects.h2o", "def f():\n    from .._dialects.h2o import stream",
                 "import importlib\nimportlib.import_module('h2o_fsm._dialects.chatui')",
                 "__import__('h2o_fsm._dialects.chatui.catalog')")
    for source in spellings:
        package = ["h2o_fsm", "cli"] if ".._" in source else ["h2o_fsm"]
        assert _dialect_imports(source, package, dialects), source
    neutral = "from ._dialects import get_dialect\nfrom ._stream import Parser"
    assert not _dialect_imports(neutral, ["h2o_fsm"], dialects)
    offenders = []
    for path in sorted((ROOT / "h2o_fsm").rglob("*.py")):
        if root in path.parents:
            continue
        package = list(path.relative_to(ROOT).parts[:-1])
        for line, module in _dialect_imports(path.read_text(encoding="utf-8"), package, dialects).items():
            offenders.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    assert not offenders, "\n".join(offenders)
