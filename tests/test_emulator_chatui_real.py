"""The chat-ui emulator behaves as a real chat-ui server was seen to (PROTOCOL.md, "Observed on a real
chat-ui server", reattach, models): error pages, the Secure cookie, JSON-only settings, the stop point,
the usage limit, runs that outlive their connection and their DELETE, the session-wide routes and the
reattach stream. Driven with plain httpx."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from test_emulator_chatui import MODEL, Client, answer_of, updates

from h2o_fsm.server import Fault, LocalServer, ServerConfig
from h2o_fsm.testing import assert_nothing_leaked

LIMIT = "You have reached the maximum number of conversations. Delete some to continue."


@pytest.fixture
def slow() -> Iterator[LocalServer]:
    with LocalServer(ServerConfig(max_tokens=40, token_delay=0.02, keep_alive=0), dialect="chat-ui") as server:
        yield server


def sse(text: str) -> list[tuple[str | None, str, object]]:
    """SSE frames as ``(id, event, data)``; comments as ``(None, ":", text)``."""
    frames: list[tuple[str | None, str, object]] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                frames.append((None, ":", line[1:].strip()))
            else:
                key, _, value = line.partition(": ")
                fields[key] = value
        if "data" in fields:
            frames.append((fields.get("id"), fields.get("event", "message"), json.loads(fields["data"])))
    return frames


def wait_for(check: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def send_stream(c: Client, cid: str, parent: str, gid: str) -> contextlib.AbstractContextManager[httpx.Response]:
    data = {"inputs": "hi", "id": parent, "is_retry": False, "generationId": gid}
    return c.http.stream("POST", f"/conversation/{cid}", files={"data": (None, json.dumps(data))},
                         headers={"Origin": c.origin})  # fmt: skip


def test_errors_are_html_unless_accept_negotiates_json() -> None:
    with LocalServer(dialect="chat-ui") as server:
        for accept, is_json in [("*/*", True), ("application/json", True), ("text/html", False),
                                ("text/html;q=0.5, application/json", True), ("text/*", False)]:  # fmt: skip
            r = httpx.post(server.url + "/conversation", json={"model": "nope"}, headers={"Accept": accept})
            assert r.status_code == 400
            if is_json:
                assert r.json() == {"message": "Invalid request"}
            else:
                assert r.headers["content-type"].startswith("text/html") and "<h1>Invalid request</h1>" in r.text


def test_no_accept_header_at_all_gets_the_html_page() -> None:
    with LocalServer(dialect="chat-ui") as server, httpx.Client() as http:
        request = http.build_request("POST", server.url + "/conversation", json={"model": "nope"})
        del request.headers["accept"]  # httpx adds */*; a bare client (or a transport) sends none
        r = http.send(request)
        assert r.status_code == 400 and r.headers["content-type"].startswith("text/html")
        assert "Invalid request" in r.text and "{" not in r.text


def test_the_session_cookie_is_secure_even_over_http() -> None:
    with LocalServer(dialect="chat-ui") as server:
        with httpx.Client(base_url=server.url) as jar_only:  # a standard cookie jar
            r = jar_only.post("/conversation", json={"model": MODEL})
            cookie = r.headers["set-cookie"].lower()
            assert "secure" in cookie and "samesite=none" in cookie and "httponly" in cookie
            cid = r.json()["conversationId"]
            assert jar_only.get(f"/api/v2/conversations/{cid}").status_code == 404  # the cookie never came back
            assert server.accounting.live == 1
        with Client(server) as keeper:  # keeps the cookie whatever its attributes: one session
            cid, _ = keeper.create()
            assert keeper.http.delete(f"/conversation/{cid}").status_code == 200
    with LocalServer(ServerConfig(secure_cookie=False), dialect="chat-ui") as server:
        r = httpx.post(server.url + "/conversation", json={"model": MODEL})
        assert "secure" not in r.headers["set-cookie"].lower()
    with LocalServer() as server:  # the 2023 emulator keeps its plain cookie
        assert "secure" not in httpx.get(server.url + "/").headers["set-cookie"].lower()


def test_settings_are_json_only() -> None:
    with LocalServer(dialect="chat-ui") as server, Client(server) as c:
        form = c.http.post("/settings", data={"ethicsModalAccepted": "true", "activeModel": MODEL},
                           headers={"Origin": c.origin})  # fmt: skip
        assert form.status_code == 500  # the handler calls request.json()
        assert c.http.post("/settings", json={"activeModel": MODEL}).status_code == 200


def test_the_stop_point_clamps_the_answer_and_a_bad_body_is_discarded(slow: LocalServer) -> None:
    with Client(slow) as c:
        for body, seen in [({"seenContentLength": 7}, 7), ({"seenContentLength": "7"}, None), ({}, None),
                           ({"seenContentLength": -1}, None), (None, None)]:  # fmt: skip
            cid, root = c.create()
            gid = str(uuid.uuid4())
            with send_stream(c, cid, root, gid) as r:
                lines = r.iter_lines()
                next(lines), next(lines), next(lines)  # started and two tokens
                payload = None if body is None else {"generationId": gid, **body}
                stop = c.http.post(f"/conversation/{cid}/stop-generating", json=payload)
                assert stop.status_code == 200
                final = next(u for u in updates("\n".join(lines)) if u["type"] == "finalAnswer")
            assert final["interrupted"] is True
            stored = c.read(cid)["messages"][-1]["content"]  # type: ignore[index]
            if seen is not None:
                assert final["text"] == stored == answer_of([("user", "hi")], 40)[:seen]
            else:
                assert final["text"] == stored and len(str(stored)) >= 2
            assert slow.accounting.stop_points[-1] == seen
            c.http.delete(f"/conversation/{cid}")
        other = c.create()[0]  # a stop point for an unknown generation: the stop happens, nothing clamped
        assert c.http.post(f"/conversation/{other}/stop-generating",
                           json={"generationId": str(uuid.uuid4()), "seenContentLength": 0}).status_code == 200
        c.http.delete(f"/conversation/{other}")
    assert_nothing_leaked(slow)


def test_the_usage_limit() -> None:
    with LocalServer(ServerConfig(max_conversations=2), dialect="chat-ui") as server:
        with Client(server) as a, Client(server) as b:
            first, _ = a.create()
            a.create()
            r = a.http.post("/conversation", json={"model": MODEL})
            assert (r.status_code, r.json()) == (429, {"message": LIMIT})
            assert "retry-after" not in r.headers
            b.create()  # per session
            assert a.http.delete(f"/conversation/{first}").status_code == 200
            a.create()  # deleting helps, waiting does not
        assert server.accounting.created == 4


def test_a_delete_does_not_stop_the_run(slow: LocalServer) -> None:
    acct = slow.accounting
    with Client(slow) as c:
        cid, root = c.create()
        with send_stream(c, cid, root, str(uuid.uuid4())) as r:
            next(r.iter_lines())
            assert c.http.delete(f"/conversation/{cid}").status_code == 200
        assert acct.runs_running == 1  # deleted, and still generating
        assert c.http.post(f"/conversation/{cid}/stop-generating").status_code == 404  # too late to stop it
        wait_for(lambda: acct.runs_running == 0)
        assert (acct.runs_completed, acct.runs_interrupted) == (1, 0)
        cid, root = c.create()  # stop first, then delete: the run is stopped
        with send_stream(c, cid, root, str(uuid.uuid4())) as r:
            next(r.iter_lines())
            assert c.http.post(f"/conversation/{cid}/stop-generating").status_code == 200
            assert c.http.delete(f"/conversation/{cid}").status_code == 200
        wait_for(lambda: acct.runs_running == 0)
        assert acct.snapshot()["runs_interrupted"] == 1 and acct.runs_started == 2
    assert_nothing_leaked(slow)


def test_models_list_and_delete_all() -> None:
    config = ServerConfig(models=("org/first-model", MODEL), page_size=2)
    with LocalServer(config, dialect="chat-ui") as server, Client(server) as c, Client(server) as other:
        models = c.http.get("/api/v2/models").json()["json"]
        assert [m["id"] for m in models] == ["org/first-model", MODEL]  # the first is the default
        assert {"id", "name", "displayName", "description", "multimodal", "supportsTools", "supportsReasoning",
                "unlisted", "isRouter"} <= set(models[0])  # fmt: skip
        ids = [c.create(model="org/first-model")[0] for _ in range(3)]
        mine = other.create()[0]
        page0 = c.http.get("/api/v2/conversations", params={"p": 0}).json()["json"]
        page1 = c.http.get("/api/v2/conversations?p=1").json()["json"]
        assert page0["hasMore"] is True and page1["hasMore"] is False
        listed = [x["_id"] for x in page0["conversations"] + page1["conversations"]]
        assert sorted(listed) == sorted(ids) and mine not in listed
        assert set(page0["conversations"][0]) == {"_id", "title", "updatedAt", "model"}
        gone = c.http.delete("/api/v2/conversations")
        assert gone.status_code == 200 and gone.json()["json"] == 3
        assert c.http.get("/api/v2/conversations").json()["json"]["conversations"] == []
        assert server.accounting.live_ids == {mine}
        other.http.delete(f"/conversation/{mine}")
    assert_nothing_leaked(server)


def test_reattach_replays_the_log_then_ends() -> None:
    config = ServerConfig(max_tokens=12, keep_alive=0.01, token_delay=0.005, title="after")
    with LocalServer(config, dialect="chat-ui") as server, Client(server) as c:
        cid, root = c.create()
        gid = str(uuid.uuid4())
        with send_stream(c, cid, root, gid) as r:
            lines = updates(r.read().decode())
        expected = answer_of([("user", "hi")], 12)
        frames = sse(c.http.get(f"/conversation/{cid}/stream", params={"generationId": gid, "fromSeq": 0}).text)
        updates_ = [f for f in frames if f[1] == "update"]
        assert [int(f[0] or 0) for f in updates_] == list(range(1, len(updates_) + 1))  # seq contiguous from 1
        logged = [f[2] for f in updates_]
        assert {"type": "status", "status": "keepAlive"} not in logged
        tokens = [u["token"] for u in logged if isinstance(u, dict) and u["type"] == "stream"]
        assert "".join(tokens) == expected and all("\0" not in t for t in tokens)
        assert len(logged) != len(lines)  # the log is not the answer's lines: a client cannot count seq
        assert frames[-1] == (None, "end", {"status": "completed"})
        tail = sse(c.http.get(f"/conversation/{cid}/stream", params={"generationId": gid, "fromSeq": 1}).text)
        assert [f[0] for f in tail if f[1] == "update"][0] == "2" and len(logged) >= 5
        wins = c.http.get(f"/conversation/{cid}/stream?generationId={gid}&fromSeq=1", headers={"Last-Event-ID": "3"})
        assert [f[0] for f in sse(wins.text) if f[1] == "update"][0] == "4"  # Last-Event-ID wins over fromSeq
        gone = c.http.get(f"/conversation/{cid}/stream", params={"generationId": str(uuid.uuid4())})
        assert gone.status_code == 200 and sse(gone.text) == [(None, "end", {"status": "gone"})]
        assert gone.headers["content-type"].startswith("text/event-stream")
        with Client(server) as stranger:
            assert stranger.http.get(f"/conversation/{cid}/stream", params={"generationId": gid}).status_code == 404
        c.http.delete(f"/conversation/{cid}")
        assert c.http.get(f"/conversation/{cid}/stream", params={"generationId": gid}).status_code == 404
    with LocalServer(ServerConfig(reattach=False), dialect="chat-ui") as old, Client(old) as c:
        cid, _ = c.create()
        assert c.http.get(f"/conversation/{cid}/stream").status_code == 404  # a server from before runs
        c.http.delete(f"/conversation/{cid}")


def test_a_cut_ends_the_connection_while_the_run_goes_on(slow: LocalServer) -> None:
    slow.faults.add(Fault("stream", "cut", at_token=5))
    with Client(slow) as c:
        cid, root = c.create()
        gid = str(uuid.uuid4())
        got = b""
        with pytest.raises(httpx.RemoteProtocolError), send_stream(c, cid, root, gid) as r:
            for chunk in r.iter_raw():
                got += chunk
        whole = got[: got.rindex(b"\n")]
        assert whole.count(b'"type":"stream"') == 5 and not got.endswith(b"\n")  # cut mid-line
        assert slow.accounting.runs_running == 1
        frames = sse(c.http.get(f"/conversation/{cid}/stream", params={"generationId": gid}).text)
        final = next(f[2] for f in frames if isinstance(f[2], dict) and f[2].get("type") == "finalAnswer")
        assert final == {"type": "finalAnswer", "text": answer_of([("user", "hi")], 40), "interrupted": False}
        assert frames[-1][1:] == ("end", {"status": "completed"})
        c.http.delete(f"/conversation/{cid}")
    assert_nothing_leaked(slow)


def test_the_reattach_stream_closes_without_end_and_resumes_from_last_event_id() -> None:
    config = ServerConfig(max_tokens=30, token_delay=0.03, keep_alive=0, heartbeat=0.01, reattach_cap=0.2)
    with LocalServer(config, [Fault("reattach", "cut", at_token=2)], dialect="chat-ui") as server, Client(server) as c:
        cid, root = c.create()
        gid = str(uuid.uuid4())
        with send_stream(c, cid, root, gid) as r:
            next(r.iter_lines())
        cut = sse(c.http.get(f"/conversation/{cid}/stream", params={"generationId": gid}).text)
        assert [f[1] for f in cut if f[1] != ":"] == ["update", "update"]  # closed without end
        seen = [int(cut[-1][0] or 0)]
        for _ in range(50):  # reconnect with Last-Event-ID until the end
            frames = sse(c.http.get(f"/conversation/{cid}/stream", params={"generationId": gid},
                                    headers={"Last-Event-ID": str(seen[-1])}).text)  # fmt: skip
            ids = [int(f[0] or 0) for f in frames if f[1] == "update"]
            assert ids == list(range(seen[-1] + 1, seen[-1] + 1 + len(ids)))  # nothing twice, nothing skipped
            seen += ids
            if frames and frames[-1][1] == "end":
                break
        assert frames[-1][2] == {"status": "completed"}
        assert server.accounting.reattaches >= 3
        c.http.delete(f"/conversation/{cid}")


@pytest.mark.parametrize("own_client", [False, True])
async def test_the_engine_keeps_the_secure_session_cookie_over_http(own_client: bool, transport: str) -> None:
    from h2o_fsm import H2oClient

    with LocalServer(ServerConfig(max_tokens=4), dialect="chat-ui") as server:
        async with httpx.AsyncClient() as http:
            kw: dict[str, object] = {"http_client": http} if own_client else {"transport": transport}
            async with H2oClient(server.url, dialect="chat-ui", **kw) as client:  # type: ignore[arg-type]
                async with client.conversation() as conv:
                    assert await conv.ask("one") and await conv.ask("two")  # one session: no 404
        assert len({r.session for r in server.accounting.requests_for()}) == 1
        assert server.accounting.live == 0 and server.accounting.deleted == 1


def test_a_reset_forgets_runs_that_end_after_it(slow: LocalServer) -> None:
    with Client(slow) as c:
        cid, root = c.create()
        with send_stream(c, cid, root, str(uuid.uuid4())) as r:
            lines = r.iter_lines()
            next(lines)
            slow.reset()  # stops the run; its end comes after the accounting was reset
            assert any('"interrupted":true' in line for line in lines)
    time.sleep(0.1)
    assert (slow.accounting.runs_started, slow.accounting.runs_running, slow.accounting.runs_interrupted) == (0, 0, 0)


def test_heartbeats_while_the_run_waits_and_the_cap_closes_without_end() -> None:
    config = ServerConfig(max_tokens=2, token_delay=1.0, keep_alive=0, heartbeat=0.02, reattach_cap=0.4)
    with LocalServer(config, dialect="chat-ui") as server, Client(server) as c:
        cid, root = c.create()
        gid = str(uuid.uuid4())
        with send_stream(c, cid, root, gid) as r:
            next(r.iter_lines())
            frames = sse(c.http.get(f"/conversation/{cid}/stream", params={"generationId": gid}).text)
        assert (None, ":", "heartbeat") in frames  # the run had nothing new for a second
        assert "end" not in [f[1] for f in frames]  # the cap closed it: a client reconnects
        c.http.post(f"/conversation/{cid}/stop-generating")
        c.http.delete(f"/conversation/{cid}")
