"""The bundled emulator itself: gates, ownership, fault plans from files, the pytest plugin."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from h2o_fsm import H2oClient, H2oLimitError, Limits, Phase
from h2o_fsm.server import Fault, FaultPlan, LocalServer
from h2o_fsm.testing import assert_nothing_leaked

MODEL = "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1"


def test_gates_and_ownership(server: LocalServer) -> None:
    with httpx.Client(base_url=server.url) as a, httpx.Client(base_url=server.url) as b:
        assert a.post("/settings", data={"activeModel": MODEL}).status_code == 403  # no Referer
        assert a.post("/settings", data={"activeModel": MODEL}, headers={"Referer": "http://evil.test/"}).status_code == 403
        assert a.post("/conversation", json={"model": MODEL}).status_code == 405  # welcome modal
        ok = a.post("/settings", data={"activeModel": MODEL, "ethicsModalAccepted": "true"}, headers={"Referer": server.url + "/"})
        assert ok.status_code == 303 and "hf-chat" in a.cookies
        assert a.post("/conversation", json={"model": "nope"}).status_code == 400
        cid = a.post("/conversation", json={"model": MODEL}).json()["conversationId"]
        assert len(cid) == 24 and int(cid, 16) >= 0
        b.post("/settings", data={"activeModel": MODEL, "ethicsModalAccepted": "true"}, headers={"Referer": server.url + "/"})
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

    with LocalServer(ServerConfig(request_log_size=5, max_tokens=2)) as server:
        with httpx.Client(base_url=server.url) as c:
            for _ in range(12):
                c.get("/")
        assert len(server.accounting.requests) == 5  # the newest five records
        assert server.accounting.snapshot()["requests"] == 12
