"""The bundled emulator's chat-ui dialect, driven with plain httpx: gates, the message tree, the stream, faults."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from support import emulator

from h2o_fsm.server import PHASES, Fault, FaultPlan, LocalServer, ServerConfig, generate, phases_of
from h2o_fsm.server._faults import ALLOWED
from h2o_fsm.testing import assert_nothing_leaked

MODEL = "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1"


def answer_of(history: list[tuple[str, str]], n: int) -> str:
    return "".join(generate(history, n))


def updates(text: str) -> list[dict[str, object]]:
    """A chat-ui stream body as a client must read it: one JSON object per line, whitespace stripped."""
    return [json.loads(line) for line in text.split("\n") if line.strip()]


class Client:
    """A minimal hand-written chat-ui client (one session). It keeps the session cookie itself: the
    server sets it ``Secure`` even over http, and httpx's cookie jar would never send it back."""

    def __init__(self, server: LocalServer, cookies: dict[str, str] | None = None, **kw: object) -> None:
        self.origin = server.url
        self.cookies = dict(cookies or {})
        hooks = {"request": [self._send_cookies], "response": [self._keep_cookies]}
        self.http = httpx.Client(base_url=server.url, timeout=10, event_hooks=hooks, **kw)  # type: ignore[arg-type]

    def _send_cookies(self, request: httpx.Request) -> None:
        if self.cookies:
            request.headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    def _keep_cookies(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            name, _, value = header.split(";", 1)[0].partition("=")
            self.cookies[name.strip()] = value.strip()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def create(self, **body: object) -> tuple[str, str]:
        r = self.http.post("/conversation", json={"model": MODEL, **body})
        assert r.status_code == 200, r.text
        cid = r.json()["conversationId"]
        if "conversation" in r.json():
            return cid, json.loads(r.json()["conversation"])["json"]["rootMessageId"]
        return cid, self.read(cid)["rootMessageId"]  # type: ignore[return-value]

    def read(self, cid: str) -> dict[str, object]:
        r = self.http.get(f"/api/v2/conversations/{cid}")
        assert r.status_code == 200, r.text
        return r.json()["json"]  # type: ignore[no-any-return]

    def send(
        self, cid: str, parent: str | None, inputs: str, *, origin: str | None = "", **extra: object
    ) -> httpx.Response:
        data = {"inputs": inputs, "id": parent, "is_retry": False, "generationId": str(uuid.uuid4()), **extra}
        headers = {"Origin": self.origin if origin == "" else origin} if origin is not None else {}
        return self.http.post(f"/conversation/{cid}", files={"data": (None, json.dumps(data))}, headers=headers)

    def last_id(self, cid: str) -> str:
        return self.read(cid)["messages"][-1]["id"]  # type: ignore[index, no-any-return]


@pytest.fixture
def chatui() -> Iterator[LocalServer]:
    with emulator(ServerConfig(max_tokens=6, keep_alive=0), dialect="chat-ui") as server:
        yield server


def test_origin_gate_and_login(chatui: LocalServer) -> None:
    with Client(chatui) as a:
        cid, root = a.create()  # JSON POSTs are not checked
        assert a.send(cid, root, "hi", origin=None).status_code == 403
        denied = a.send(cid, root, "hi", origin="http://evil.test")
        assert denied.status_code == 403 and "message" in denied.json()
        assert a.http.post("/settings", data={"activeModel": MODEL}).status_code == 403  # urlencoded
        assert a.http.post("/settings", content=b"x", headers={"content-type": "text/plain"}).status_code == 403
        assert a.http.post("/settings", json={"activeModel": MODEL, "welcomeModalSeen": True}).status_code == 200
        assert a.send(cid, root, "hi").status_code == 200
    with emulator(ServerConfig(required_cookies={"token": "secret"}), dialect="chat-ui") as server:
        with httpx.Client(base_url=server.url) as anon:
            r = anon.post("/conversation", json={"model": MODEL})
            assert (r.status_code, r.json()) == (401, {"message": "You have to be logged in."})
        with Client(server, cookies={"token": "secret"}) as user:
            cid, _ = user.create()
            assert user.http.delete(f"/conversation/{cid}").status_code == 200


@pytest.mark.parametrize("field", [True, False])
def test_create_with_and_without_the_conversation_field(field: bool) -> None:
    with emulator(ServerConfig(conversation_field=field), dialect="chat-ui") as server, Client(server) as c:
        r = c.http.post("/conversation", json={"model": MODEL, "preprompt": "Be brief."})
        cid = r.json()["conversationId"]
        assert len(cid) == 24 and int(cid, 16) >= 0
        conv = c.read(cid)
        root = conv["messages"][0]  # type: ignore[index]
        assert (root["from"], root["content"], root["id"]) == ("system", "Be brief.", conv["rootMessageId"])
        assert conv["preprompt"] == "Be brief." and conv["model"] == MODEL
        assert ("conversation" in r.json()) is field
        if field:
            inline = json.loads(r.json()["conversation"])["json"]
            assert inline["rootMessageId"] == conv["rootMessageId"] and len(inline["messages"]) == 1
        bad = c.http.post("/conversation", json={"model": "nope"})
        assert (bad.status_code, bad.json()) == (400, {"message": "Invalid request"})


def test_three_turns_on_the_message_tree(chatui: LocalServer) -> None:
    with Client(chatui) as c:
        cid, parent = c.create()
        history: list[tuple[str, str]] = []
        for prompt in ("one", "two", "three"):
            r = c.send(cid, parent, prompt)
            assert r.status_code == 200 and r.headers["content-type"].startswith("application/jsonl")
            history.append(("user", prompt))
            expected = answer_of(history, 6)
            lines = updates(r.text)
            tokens = [u["token"] for u in lines if u["type"] == "stream"]
            assert all(len(t) >= 16 for t in tokens) and any("\0" in t for t in tokens)  # type: ignore[arg-type]
            assert "".join(tokens).replace("\0", "") == expected  # type: ignore[arg-type]
            final = next(u for u in lines if u["type"] == "finalAnswer")
            assert final == {"type": "finalAnswer", "text": expected, "interrupted": False}
            history.append(("assistant", expected))
            parent = c.last_id(cid)  # the assistant message just written
        turns = chatui.accounting.turns(cid)
        assert turns[0].parent == c.read(cid)["rootMessageId"]
        assert [t.parent for t in turns[1:]] == [t.assistant for t in turns[:-1]]
        assert [m.role for m in chatui.accounting.messages(cid)] == ["system"] + ["user", "assistant"] * 3
        assert chatui.accounting.branched == 0
        assert c.send(cid, c.read(cid)["rootMessageId"], "fork").status_code == 200  # type: ignore[arg-type]
        assert chatui.accounting.branched == 1
        assert c.http.delete(f"/conversation/{cid}").status_code == 200
    assert_nothing_leaked(chatui)


def test_bad_sends(chatui: LocalServer) -> None:
    with Client(chatui) as c:
        cid, root = c.create()
        for parent in (None, str(uuid.uuid4())):
            r = c.send(cid, parent, "hi")
            assert r.status_code == 500 and r.json()["message"] == "An error occurred" and r.json()["errorId"]
        assert c.http.post(f"/conversation/{cid}", json={"inputs": "hi", "id": root}).status_code == 400
        empty = c.http.post(f"/conversation/{cid}", files={"other": (None, "x")}, headers={"Origin": c.origin})
        assert empty.status_code == 400
        assert c.send(cid, root, "   ").status_code == 400
        assert c.send(cid, root, "hi", generationId="nope").status_code == 400
        assert c.send("0" * 24, root, "hi").status_code == 404
        assert len(c.read(cid)["messages"]) == 1  # type: ignore[arg-type]  # nothing appended


@pytest.mark.parametrize("title", ["before", "after", "none"])
def test_stream_shape(title: str) -> None:
    config = ServerConfig(max_tokens=3, token_delay=0.05, keep_alive=0.01, title=title, reasoning_tokens=2,
                          unknown_updates=True)  # fmt: skip
    with emulator(config, dialect="chat-ui") as server, Client(server) as c:
        cid, root = c.create()
        text = c.send(cid, root, "Hello there, emulator").text
        lines = updates(text)
        kinds = [u["type"] for u in lines]
        assert lines[0] == {"type": "status", "status": "started"}
        assert lines[-1] == {"type": "status", "status": "finished"}
        assert text.endswith(" " * 4096 + '{"type":"status","status":"finished"}\n')
        assert {"type": "status", "status": "keepAlive"} in lines
        assert kinds.count("reasoning") == 2 and {"routerMetadata", "futureUpdate"} <= set(kinds)
        final = kinds.index("finalAnswer")
        if title == "none":
            assert "title" not in kinds
        else:
            at = kinds.index("title")
            assert (at < final) if title == "before" else (at > final)
            assert lines[at]["title"] == "Hello there, emulator"
        again = updates(c.send(cid, c.last_id(cid), "more").text)
        assert "title" not in [u["type"] for u in again]  # only the first turn names the conversation


def test_stop_generating(chatui: LocalServer) -> None:
    with emulator(ServerConfig(max_tokens=50, token_delay=0.02, keep_alive=0), dialect="chat-ui") as server:
        with Client(server) as c:
            cid, root = c.create()
            data = {"inputs": "hi", "id": root, "is_retry": False}
            with c.http.stream("POST", f"/conversation/{cid}", files={"data": (None, json.dumps(data))},
                               headers={"Origin": c.origin}) as r:  # fmt: skip
                lines = r.iter_lines()
                assert json.loads(next(lines))["status"] == "started"
                json.loads(next(lines))  # a first token
                assert c.http.post(f"/conversation/{cid}/stop-generating", json={}).status_code == 200
                rest = [json.loads(line) for line in lines if line.strip()]
            final = next(u for u in rest if u["type"] == "finalAnswer")
            assert final["interrupted"] is True and len(str(final["text"])) < len(answer_of([("user", "hi")], 50))
            assert c.read(cid)["messages"][-1]["content"] == final["text"]  # type: ignore[index]
            # a client that walks away mid-stream: the server goes on generating until stopped
            with c.http.stream("POST", f"/conversation/{cid}", files={"data": (None, json.dumps(
                    {**data, "id": c.last_id(cid)}))}, headers={"Origin": c.origin}) as r:  # fmt: skip
                next(r.iter_lines())
            assert c.http.post(f"/conversation/{cid}/stop-generating").status_code == 200
            assert c.http.post(f"/conversation/{cid}/stop-generating").status_code == 200  # nothing running
            assert c.http.post(f"/conversation/{'0' * 24}/stop-generating").status_code == 404
            assert c.http.delete(f"/conversation/{cid}").status_code == 200
        snap = server.accounting.snapshot()
        assert (snap["stops"], snap["stopped_running"]) == (3, 2)


def test_read_route_and_delete_are_per_session(chatui: LocalServer) -> None:
    with Client(chatui) as a, Client(chatui) as b:
        cid, _ = a.create()
        assert b.http.get(f"/api/v2/conversations/{cid}").status_code == 404
        r = b.http.delete(f"/conversation/{cid}")
        assert (r.status_code, r.json()) == (404, {"message": "Conversation not found"})
        assert a.http.delete(f"/conversation/{cid}").status_code == 200
        assert a.http.delete(f"/conversation/{cid}").status_code == 404
        assert a.http.get(f"/api/v2/conversations/{cid}").status_code == 404
        assert httpx.get(chatui.url + "/_emulator/accounting").json()["deleted_twice"] == 1
    assert chatui.accounting.snapshot()["deleted_twice"] == 1


CHATUI_FAULTS = [(p, k) for p in phases_of("chat-ui") for k in sorted(ALLOWED[p])]


@pytest.mark.parametrize(("phase", "kind"), CHATUI_FAULTS)
def test_each_fault(phase: str, kind: str) -> None:
    fault = Fault(phase, kind, status=503, retry_after=1 if kind == "status" else None, seconds=0.2, at_token=2)  # type: ignore[arg-type]
    with emulator(ServerConfig(max_tokens=4, keep_alive=0.05), [fault], dialect="chat-ui") as server:
        with Client(server) as c:
            calls = {
                "settings": lambda: c.http.post("/settings", json={}),
                "create": lambda: c.http.post("/conversation", json={"model": MODEL}),
            }
            cid, root = ("", "") if phase in calls else c.create()
            calls |= {
                "fetch": lambda: c.http.get(f"/api/v2/conversations/{cid}"),
                "send": lambda: c.send(cid, root, "hi"),
                "stream": lambda: c.send(cid, root, "hi"),
                "stop": lambda: c.http.post(f"/conversation/{cid}/stop-generating"),
                "delete": lambda: c.http.delete(f"/conversation/{cid}"),
                "reattach": lambda: c.send(cid, root, "hi") and c.http.get(f"/conversation/{cid}/stream"),
            }
            started = time.monotonic()
            if phase == "reattach" and kind == "cut":  # the reattach stream closes without its end
                r = calls[phase]()
                assert r.status_code == 200 and r.text.count("event: update") == 2 and "event: end" not in r.text
                return
            if kind in ("drop", "cut"):
                with pytest.raises(httpx.RemoteProtocolError):
                    calls[phase]()
                return
            r = calls[phase]()
            if kind == "status":
                assert (r.status_code, r.headers["retry-after"]) == (503, "1") and "message" in r.json()
            elif kind == "html":
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            elif kind == "stall":
                assert time.monotonic() - started >= 0.2 and r.status_code == 200
                if phase == "stream":
                    assert {"type": "status", "status": "keepAlive"} in updates(r.text)
                    assert updates(r.text)[-1]["status"] == "finished"
            elif kind == "malformed":
                with pytest.raises(ValueError):
                    updates(r.text)
            elif kind == "error_event":
                last = updates(r.text)[-1]
                assert last == {"type": "status", "status": "error", "message": last["message"], "statusCode": 503}
                assert "finalAnswer" not in r.text
            elif kind == "create_then_error":
                assert r.status_code == 503 and server.accounting.live == 1
        assert server.faults.fired == [fault]
        if phase == "delete" and kind == "status":
            assert server.accounting.excused_ids()["delete_failed"] == {cid}
            assert_nothing_leaked(server)
            with pytest.raises(AssertionError, match="did not report"):
                assert_nothing_leaked(server, reported=[])
            assert_nothing_leaked(server, reported=[cid])
        if kind == "create_then_error":
            assert_nothing_leaked(server)  # excused: the client never learned the id


def test_a_leak_is_caught(chatui: LocalServer) -> None:
    with Client(chatui) as c:
        c.create()
    with pytest.raises(AssertionError, match="leaked"):
        assert_nothing_leaked(chatui)


def test_reset_and_forget_sessions(chatui: LocalServer) -> None:
    with Client(chatui) as c:
        cid, root = c.create()
        chatui.faults.add(Fault("send", "status", status=429, count=-1))
        assert c.send(cid, root, "hi").status_code == 429
        chatui.forget_sessions()
        r = c.http.get(f"/api/v2/conversations/{cid}")
        assert r.status_code == 404 and "hf-chat" in r.headers.get("set-cookie", "")  # a new session
        assert c.http.delete(f"/conversation/{cid}").status_code == 404
        assert chatui.accounting.live == 1 and chatui.accounting.excused_ids()["orphaned"] == {cid}
        assert_nothing_leaked(chatui)  # stranded by the server, not by the client
        chatui.reset()
        assert chatui.accounting.snapshot()["created"] == 0 and chatui.accounting.live == 0
        assert chatui.faults.faults == [] and chatui.accounting.requests_for() == []
        cid, root = c.create()
        assert c.send(cid, root, "hi").status_code == 200  # the 429 plan is gone
        plan = chatui.reset([Fault("create", "status", status=500)])
        assert isinstance(plan, FaultPlan) and c.http.post("/conversation", json={"model": MODEL}).status_code == 500


def test_reset_stops_running_generations() -> None:
    with emulator(ServerConfig(max_tokens=200, token_delay=0.05, keep_alive=0), dialect="chat-ui") as server:
        with Client(server) as c:
            cid, root = c.create()
            result: list[str] = []
            thread = threading.Thread(target=lambda: result.append(c.send(cid, root, "hi").text))
            thread.start()
            time.sleep(0.2)
            server.reset()
            thread.join(5)
        assert not thread.is_alive()
        final = next(u for u in updates(result[0]) if u["type"] == "finalAnswer")
        assert final["interrupted"] is True


def test_phases_are_one_tuple() -> None:
    assert set(phases_of("chat-ui")) == set(PHASES) and set(ALLOWED) == set(PHASES)
    assert "fetch" not in phases_of("h2o") and "stop" not in phases_of("h2o") and "reattach" not in phases_of("h2o")
