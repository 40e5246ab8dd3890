"""The bundled emulator itself: gates, ownership, fault plans from files, the pytest plugin."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support import emulator

from h2o_fsm import H2oClient, H2oLimitError, Limits, Phase
from h2o_fsm.server import Fault, FaultPlan, LocalServer, ServerConfig
from h2o_fsm.testing import assert_nothing_leaked

MODEL = "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1"


def test_gates_and_ownership(server: LocalServer) -> None:
    with httpx.Client(base_url=server.url) as a, httpx.Client(base_url=server.url) as b:
        assert a.post("/settings", data={"activeModel": MODEL}).status_code == 403  # no Referer
        evil = {"Referer": "http://evil.test/"}
        assert a.post("/settings", data={"activeModel": MODEL}, headers=evil).status_code == 403
        assert a.post("/conversation", json={"model": MODEL}).status_code == 405  # welcome modal
        accept = {"activeModel": MODEL, "ethicsModalAccepted": "true"}
        ok = a.post("/settings", data=accept, headers={"Referer": server.url + "/"})
        assert ok.status_code == 303 and "hf-chat" in a.cookies
        assert a.post("/conversation", json={"model": "nope"}).status_code == 400
        cid = a.post("/conversation", json={"model": MODEL}).json()["conversationId"]
        assert len(cid) == 24 and int(cid, 16) >= 0
        b.post("/settings", data=accept, headers={"Referer": server.url + "/"})
        assert b.delete(f"/conversation/{cid}").status_code == 404  # another session's
        body = {"inputs": "hi", "parameters": {"stream": False}, "stream": True, "options": {}}
        assert a.post(f"/conversation/{cid}", json=body).status_code == 400
        assert a.delete(f"/conversation/{cid}").status_code == 200
        assert a.delete(f"/conversation/{cid}").status_code == 404
    assert server.accounting.deleted_twice == 1 and server.accounting.live == 0


def test_fault_plan_from_json_and_toml(tmp_path: Path) -> None:
    data = {"faults": [{"phase": "send", "kind": "status", "status": 429, "retry_after": 1},
                       {"phase": "stream", "kind": "drop", "at_token": 5}]}
    (tmp_path / "f.json").write_text(json.dumps(data))
    plan = FaultPlan.from_file(tmp_path / "f.json")
    assert plan.faults == [Fault("send", "status", status=429, retry_after=1), Fault("stream", "drop", at_token=5)]
    if sys.version_info >= (3, 11):
        (tmp_path / "f.toml").write_text('[[faults]]\nphase = "delete"\nkind = "status"\nstatus = 503\ncount = 2\n')
        assert FaultPlan.from_file(tmp_path / "f.toml").faults == [Fault("delete", "status", status=503, count=2)]


@pytest.mark.parametrize(
    "bad",
    [{"phase": "nowhere", "kind": "status"}, {"phase": "stream", "kind": "status"},
     {"phase": "send", "kind": "status", "status": 99}, {"phase": "send", "kind": "html", "bogus": 1}],
)
def test_bad_faults_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        FaultPlan.from_data([bad])


def test_faults_fire_count_times() -> None:
    plan = FaultPlan([Fault("send", "status", count=2)])
    assert [plan.take("send") is not None for _ in range(3)] == [True, True, False]
    always = FaultPlan([Fault("send", "status", count=-1)])
    assert all(always.take("send") for _ in range(10))


async def test_stream_limits_cut_a_stream_that_would_not_end(server: LocalServer) -> None:
    async with H2oClient(server.url, limits=Limits(max_tokens=3)) as client:
        with pytest.raises(H2oLimitError) as info:
            await client.ask("x")
    assert info.value.phase is Phase.STREAM
    async with H2oClient(server.url, limits=Limits(max_stream_bytes=200)) as client:
        with pytest.raises(H2oLimitError):
            await client.ask("x")
    assert_nothing_leaked(server)


@pytest.mark.h2o_faults(Fault("stream", "error_event", at_token=1))
@pytest.mark.h2o_config(max_tokens=4)
async def test_the_pytest_plugin_fixture(h2o_server: LocalServer) -> None:
    from h2o_fsm import H2oUpstreamError

    async with H2oClient(h2o_server.url) as client:
        with pytest.raises(H2oUpstreamError):
            await client.ask("x")
        assert len(await client.ask("y")) > 0
    assert_nothing_leaked(h2o_server)


def test_request_log_is_bounded_but_counters_are_not() -> None:
    from h2o_fsm.server import ServerConfig

    with emulator(ServerConfig(request_log_size=5, max_tokens=2)) as server:
        with httpx.Client(base_url=server.url) as c:
            for _ in range(12):
                c.get("/")
        assert len(server.accounting.requests) == 5  # the newest five records
        assert server.accounting.snapshot()["requests"] == 12


def test_fault_plan_add_and_extend_reach_a_running_server(server: LocalServer) -> None:
    plan = server.faults.add(Fault("create", "status", status=503))
    plan.extend([Fault("create", "html"), Fault("settings", "status", status=500)])
    with httpx.Client(base_url=server.url) as c:
        referer = {"Referer": server.url + "/"}
        assert c.post("/settings", data={"activeModel": MODEL}, headers=referer).status_code == 500
        c.post("/settings", data={"activeModel": MODEL, "ethicsModalAccepted": "true"}, headers=referer)
        assert c.post("/conversation", json={"model": MODEL}).status_code == 503
        assert c.post("/conversation", json={"model": MODEL}).headers["content-type"].startswith("text/html")
        assert c.post("/conversation", json={"model": MODEL}).status_code == 200
    assert [f.kind for f in server.faults.fired] == ["status", "status", "html"]
    with pytest.raises(TypeError):
        server.faults.add({"phase": "send"})  # type: ignore[arg-type]


def test_reset_and_forget_sessions_h2o(server: LocalServer) -> None:
    with httpx.Client(base_url=server.url) as c:
        referer = {"Referer": server.url + "/"}
        c.post("/settings", data={"activeModel": MODEL, "ethicsModalAccepted": "true"}, headers=referer)
        cid = c.post("/conversation", json={"model": MODEL}).json()["conversationId"]
        old_cookie = c.cookies["hf-chat"]
        server.forget_sessions()
        r = c.post("/conversation", json={"model": MODEL})
        assert r.status_code == 405 and c.cookies["hf-chat"] != old_cookie  # the welcome gate, a new session
        c.post("/settings", data={"activeModel": MODEL, "ethicsModalAccepted": "true"}, headers=referer)
        assert c.delete(f"/conversation/{cid}").status_code == 404  # the old session's conversation
        assert server.accounting.excused_ids()["orphaned"] == {cid}
        assert_nothing_leaked(server)
        server.reset([Fault("settings", "status", status=502)])
        assert server.accounting.snapshot()["created"] == 0 and server.accounting.live == 0
        assert c.post("/conversation", json={"model": MODEL}).status_code == 405  # sessions forgotten too
        assert c.post("/settings", data={"activeModel": MODEL}, headers=referer).status_code == 502


def test_assert_nothing_leaked_excuses_only_what_faults_made_undeletable() -> None:
    faults = [Fault("create", "create_then_error"), Fault("delete", "status", status=503)]
    config = ServerConfig(require_settings=False)
    with emulator(config, faults) as server, httpx.Client(base_url=server.url) as c:
        assert c.post("/conversation", json={"model": MODEL}).status_code == 500  # created, id never told
        assert_nothing_leaked(server)
        cid = c.post("/conversation", json={"model": MODEL}).json()["conversationId"]
        with pytest.raises(AssertionError, match="leaked"):
            assert_nothing_leaked(server)  # the client never tried to delete it
        assert c.delete(f"/conversation/{cid}").status_code == 503
        assert_nothing_leaked(server, reported=[cid])  # tried, refused, reported
        with pytest.raises(AssertionError, match="did not report"):
            assert_nothing_leaked(server, reported=[])


def test_the_plugin_works_in_an_empty_folder(tmp_path: Path) -> None:
    """``pytest file.py`` with no conftest and no configuration: the pytest11 entry point registers the
    fixture (the package must be installed, as it is in this venv)."""
    import subprocess

    (tmp_path / "test_mine.py").write_text(
        "import httpx, pytest\n"
        "from h2o_fsm.server import Fault\n"
        "from h2o_fsm.testing import assert_nothing_leaked\n\n"
        "def test_h2o(h2o_server):\n"
        "    assert httpx.get(h2o_server.url + '/').status_code == 200 and h2o_server.dialect == 'h2o'\n"
        "    assert_nothing_leaked(h2o_server)\n\n"
        "@pytest.mark.h2o_dialect('chat-ui')\n"
        "@pytest.mark.h2o_faults(Fault('fetch', 'status', status=503))\n"
        "@pytest.mark.h2o_config(max_tokens=2)\n"
        "def test_chatui(h2o_server):\n"
        "    assert h2o_server.dialect == 'chat-ui' and h2o_server.config.max_tokens == 2\n"
        "    assert httpx.get(h2o_server.url + '/api/v2/conversations/' + '0' * 24).status_code == 503\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_mine.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_strategies_per_dialect_and_recoverable() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from h2o_fsm.server import phases_of
    from h2o_fsm.testing.strategies import fault_plans

    @settings(max_examples=200, deadline=None)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        h2o = data.draw(fault_plans(max_faults=4))
        assert all(f.phase in phases_of("h2o") for f in h2o.faults)
        plan = data.draw(fault_plans(max_faults=4, dialect="chat-ui", recoverable=True))
        assert all(f.kind != "create_then_error" for f in plan.faults)
        deletes = [f for f in plan.faults if f.phase == "delete"]
        assert len(deletes) <= 1
        assert all(f.kind == "stall" or (f.count == 1 and f.status in (429, 500, 502, 503)) for f in deletes)

    check()


def test_installed_without_the_server_extra_pytest_still_runs(tmp_path: Path) -> None:
    """The plugin is registered by installing h2o-fsm; without the server extra it must stay out of the
    way of a project's unrelated tests, and only the h2o_server fixture says what to install."""
    (tmp_path / "test_plain.py").write_text("def test_x():\n    assert 1\n\ndef test_uses(h2o_server):\n    pass\n")
    code = (
        "import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None\n"  # as if not installed
        "import pytest; sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'test_plain.py']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "1 passed" in result.stdout and "1 error" in result.stdout, result.stdout + result.stderr
    assert "pip install 'h2o-fsm[server]'" in result.stdout


def test_emulator_names_say_one_thing_each() -> None:
    """No class or alias of the emulator has the name of one of the engine's (``Conversation``,
    ``Session``, ``Dialect``…); the old public ``h2o_fsm.server.Dialect`` is kept as an alias."""
    import importlib
    import inspect
    import pkgutil

    import h2o_fsm
    from h2o_fsm import _dialects, _session, server

    engine = set(h2o_fsm.__all__) | {"Session", "Dialect", "DialectState", "BaseDialect"}
    assert {"Session"} <= set(vars(_session)) and {"Dialect"} <= set(vars(_dialects))
    for info in pkgutil.iter_modules(server.__path__):
        module = importlib.import_module(f"h2o_fsm.server.{info.name}")
        own = {n for n, v in vars(module).items() if inspect.isclass(v) and v.__module__ == module.__name__}
        assert not own & engine, f"{module.__name__} reuses engine names: {sorted(own & engine)}"
        assert "Dialect" not in vars(module), module.__name__
    assert server.Dialect is server.DialectName  # the deprecated alias still imports
