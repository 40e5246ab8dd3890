"""Unit tests of each step of the chat-ui dialect with respx (no server): requests as sent, each error path."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import AsyncIterator
from email import policy
from email.parser import BytesParser

import httpx
import pytest
import respx

from h2o_fsm import (
    DEFAULT_MODEL,
    H2oCleanupError,
    H2oClient,
    H2oProtocolError,
    H2oStatusError,
    H2oTimeoutError,
    H2oTransportError,
    H2oUpstreamError,
    Phase,
    Retries,
    Timeouts,
)

BASE = "http://chat.test:8080"
CID = "66a1b2c3d4e5f60718293a4b"
ROOT = "0b5e0c2e-1f6a-4d1b-9b1e-3f2a4c5d6e7f"
ASSISTANT = "7c9d8e1f-2a3b-4c5d-8e6f-a1b2c3d4e5f6"
MODEL = "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1"
NO_RETRY = Retries(attempts=1)
SECRET = "tok-55aa-never-shown"


def lines(*updates: dict[str, object], padding: bool = True) -> bytes:
    out = b"".join(json.dumps(u).encode() + b"\n" for u in updates)
    return out + (b" " * 4096 + b'{"type":"status","status":"finished"}\n' if padding else b"")


def answer(*tokens: str, **final: object) -> bytes:
    body = [{"type": "status", "status": "started"}, {"type": "status", "status": "keepAlive"}]
    body += [{"type": "stream", "token": t.ljust(16, "\0")} for t in tokens]
    body.append({"type": "finalAnswer", "text": "".join(tokens), "interrupted": False, **final})
    return lines(*body)


def conversation(*messages: tuple[str, str]) -> dict[str, object]:
    """A superjson conversation whose linear history is ``messages`` (id, from), the root first."""
    items = [{"id": mid, "from": role, "content": "", "ancestors": [m for m, _ in messages[:i]], "children": []}
             for i, (mid, role) in enumerate(messages)]
    for parent, child in itertools.pairwise(items):
        parent["children"] = [child["id"]]
    return {"json": {"id": CID, "rootMessageId": messages[0][0], "messages": items}, "meta": {}}


def jsonl(body: bytes | httpx.SyncByteStream | httpx.AsyncByteStream, status: int = 200) -> httpx.Response:
    if isinstance(body, bytes):
        return httpx.Response(status, content=body, headers={"content-type": "application/jsonl"})
    return httpx.Response(status, stream=body, headers={"content-type": "application/jsonl"})


def routes(
    router: respx.MockRouter, *, field: bool = True, stream: httpx.Response | None = None
) -> dict[str, respx.Route]:
    created: dict[str, object] = {"conversationId": CID}
    if field:
        created["conversation"] = json.dumps(conversation((ROOT, "system")))
    return {
        "settings": router.post("/settings").respond(200),
        "create": router.post("/conversation").respond(200, json=created,
                                                       headers={"Set-Cookie": "hf-chat=sess1; Path=/"}),
        "fetch": router.get(f"/api/v2/conversations/{CID}").respond(200, json=conversation((ROOT, "system"))),
        "send": router.post(f"/conversation/{CID}").mock(return_value=stream or jsonl(answer("Hi", " there"))),
        "stop": router.post(f"/conversation/{CID}/stop-generating").respond(200),
        "delete": router.delete(f"/conversation/{CID}").respond(200),
    }


def data_part(request: httpx.Request) -> dict[str, object]:
    """The JSON of the one ``data`` part of a multipart send."""
    head = b"Content-Type: " + request.headers["content-type"].encode() + b"\r\n\r\n"
    parsed = BytesParser(policy=policy.HTTP).parsebytes(head + request.content)
    parts = list(parsed.iter_parts())  # type: ignore[attr-defined]
    assert [p.get_param("name", header="content-disposition") for p in parts] == ["data"]
    return json.loads(parts[0].get_payload(decode=True))  # type: ignore[no-any-return]


def client(**kw: object) -> H2oClient:
    kw.setdefault("transport", "httpx")
    kw.setdefault("retries", NO_RETRY)
    # a model named: without one the client asks the server's list first (tests/test_chatui_fidelity*.py)
    kw.setdefault("model", DEFAULT_MODEL)
    return H2oClient(BASE, dialect="chat-ui", **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the requests as sent
@pytest.mark.parametrize("field", [True, False])
async def test_create_send_delete_as_sent_with_and_without_the_conversation_field(field: bool) -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router, field=field)
        async with client() as c:
            messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hello"}]
            assert await c.ask(messages) == "Hi there"
        create = r["create"].calls.last.request
        assert create.headers["content-type"] == "application/json"
        assert json.loads(create.content) == {"model": MODEL, "preprompt": "Be terse."}
        assert r["fetch"].call_count == (0 if field else 1)  # the root from the create answer, else from GET
        send = r["send"].calls.last.request
        assert send.headers["content-type"].startswith("multipart/form-data; boundary=")
        assert send.headers["origin"] == BASE  # the CSRF gate: scheme://host:port of the base URL
        assert send.headers["cookie"] == "hf-chat=sess1"
        data = data_part(send)
        assert data["inputs"] == "Hello" and data["id"] == ROOT and data["is_retry"] is False
        assert uuid.UUID(str(data["generationId"])).version == 4
        assert not r["settings"].called and not r["stop"].called  # no settings unless asked; nothing to stop
        assert r["delete"].call_count == 1 and r["delete"].calls.last.request.content == b""


async def test_create_without_a_system_message_has_no_preprompt() -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router)
        async with client() as c:
            await c.ask("Hello")
        assert json.loads(r["create"].calls.last.request.content) == {"model": MODEL}


async def test_the_second_turn_hangs_from_the_previous_answer_read_with_get() -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router)
        user = str(uuid.uuid4())
        r["fetch"].respond(200, json=conversation((ROOT, "system"), (user, "user"), (ASSISTANT, "assistant")))
        async with client() as c, c.conversation() as conv:
            await conv.ask("one")
            assert r["fetch"].call_count == 0
            await conv.ask("two")
        assert r["fetch"].call_count == 1
        parents = [data_part(call.request)["id"] for call in r["send"].calls]
        assert parents == [ROOT, ASSISTANT]
        assert r["delete"].call_count == 1


async def test_settings_when_asked_are_json() -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router)
        async with client(settings=True) as c:
            await c.ask("x")
        request = r["settings"].calls.last.request
        assert request.headers["content-type"] == "application/json"
        assert json.loads(request.content) == {"activeModel": MODEL, "welcomeModalSeen": True}


# ---------------------------------------------------------------- error paths, per step
@pytest.mark.parametrize("status", [400, 401, 429, 500])
async def test_create_refused_leaves_nothing_to_delete(status: int) -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router)
        r["create"].respond(status, json={"message": "Invalid request"})
        async with client() as c:
            with pytest.raises(H2oStatusError) as info:
                await c.ask("x")
        assert info.value.phase is Phase.CREATE and info.value.status == status
        assert "Invalid request" in (info.value.body or "")
        assert not r["send"].called and not r["delete"].called


@pytest.mark.parametrize("status", [403, 500])
async def test_settings_refused_is_a_settings_error(status: int) -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router)
        r["settings"].respond(status, json={"message": "no"})
        async with client(settings=True) as c:
            with pytest.raises(H2oStatusError) as info:
                await c.ask("x")
        assert info.value.phase is Phase.SETTINGS and not r["create"].called


@pytest.mark.parametrize(
    ("body", "deleted"),
    [
        ({"id": CID}, 0),  # no conversationId: nothing we can name
        ({"conversationId": "../etc"}, 0),  # not a valid id: never used in a path
        ({"conversationId": CID, "conversation": "{not json"}, 1),  # a valid id, a malformed rest: deleted
    ],
)
async def test_create_answer_malformed_is_a_protocol_error(body: dict[str, object], deleted: int) -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router)
        r["create"].respond(200, json=body)
        async with client() as c:
            with pytest.raises(H2oProtocolError) as info:
                await c.ask("x")
        assert info.value.phase is Phase.CREATE and r["delete"].call_count == deleted
        assert not r["send"].called


@pytest.mark.parametrize(
    ("answer_", "error"),
    [
        (httpx.Response(404, json={"message": "Conversation not found"}), H2oStatusError),
        (httpx.Response(500, json={"message": "An error occurred"}), H2oStatusError),
        (httpx.Response(200, content=b"<html>502</html>"), H2oProtocolError),
        (httpx.Response(200, json={"json": {"rootMessageId": ROOT}}), H2oProtocolError),  # no messages
    ],
)
async def test_fetch_failures_delete_once(answer_: httpx.Response, error: type[Exception]) -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router, field=False)
        r["fetch"].mock(return_value=answer_)
        async with client() as c:
            with pytest.raises(error) as info:
                await c.ask("x")
        assert info.value.phase is Phase.FETCH and info.value.conversation_id == CID  # type: ignore[attr-defined]
        assert not r["send"].called and not r["stop"].called and r["delete"].call_count == 1


async def test_fetch_transport_error_is_retried() -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router, field=False)
        root = conversation((ROOT, "system"))
        r["fetch"].side_effect = [httpx.ConnectError("refused"), httpx.Response(200, json=root)]
        async with client(retries=Retries(backoff=0.001)) as c:
            assert await c.ask("x") == "Hi there"
        assert r["fetch"].call_count == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 429, 500])
async def test_send_refused_deletes_once_and_stops_nothing(status: int) -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router, stream=httpx.Response(status, json={"message": "nope"}))
        async with client() as c:
            with pytest.raises(H2oStatusError) as info:
                await c.ask("x")
        assert info.value.phase is Phase.SEND and info.value.status == status and info.value.conversation_id == CID
        assert r["send"].call_count == 1  # a send is never repeated after the server answered
        assert not r["stop"].called and r["delete"].call_count == 1


async def test_send_html_page_is_a_protocol_error() -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        page = httpx.Response(200, text="<html>proxy</html>", headers={"content-type": "text/html"})
        r = routes(router, stream=page)
        async with client() as c:
            with pytest.raises(H2oProtocolError) as info:
                await c.ask("x")
        assert info.value.phase is Phase.SEND and r["delete"].call_count == 1


async def test_send_read_timeout_stops_then_deletes() -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router)
        r["send"].side_effect = httpx.ReadTimeout("slow")
        async with client(retries=Retries(backoff=0.001)) as c:
            with pytest.raises(H2oTimeoutError) as info:
                await c.ask("x")
        assert info.value.phase is Phase.SEND and r["send"].call_count == 1
        # the server may be generating: stop it (with the send's generationId), then delete
        stop = r["stop"].calls.last.request
        gid = data_part(r["send"].calls.last.request)["generationId"]
        assert json.loads(stop.content) == {"generationId": gid, "seenContentLength": 0}  # no answer seen yet
        assert r["stop"].call_count == 1 and r["delete"].call_count == 1


class Broken(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield lines({"type": "stream", "token": "Hi".ljust(16, "\0")}, padding=False)
        raise httpx.ReadError("connection reset")


@pytest.mark.parametrize(
    ("body", "error", "text"),
    [
        (lines({"type": "stream", "token": "Hi"}, {"type": "status", "status": "error", "message": "Overloaded",
                                                   "statusCode": 503}, padding=False), H2oUpstreamError, "Overloaded"),
        (lines({"type": "stream", "token": "Hi"}, padding=False), H2oProtocolError, "without its finalAnswer"),
        (lines({"type": "stream", "token": "Hi"}, padding=False) + b"{oops\n", H2oProtocolError, "not valid JSON"),
        (Broken(), H2oTransportError, "failed"),
    ],
)
async def test_stream_failures_stop_a_running_generation_then_delete(body: bytes | Broken, error: type[Exception], text: str) -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router, stream=jsonl(body))
        calls: list[str] = []
        r["stop"].side_effect = lambda request: calls.append("stop") or httpx.Response(200)
        r["delete"].side_effect = lambda request: calls.append("delete") or httpx.Response(200)
        async with client() as c:
            with pytest.raises(error) as info:
                await c.ask("x")
        err = info.value
        assert err.phase is Phase.STREAM and text in str(err)  # type: ignore[attr-defined]
        if error is H2oUpstreamError:  # the server ended the run itself: nothing left to stop
            assert err.status == 503  # type: ignore[attr-defined]
            assert calls == ["delete"]
        else:
            assert calls == ["stop", "delete"]


async def test_tolerated_stream_extras() -> None:
    body = lines(
        {"type": "status", "status": "started"},
        {"type": "routerMetadata", "route": "r", "model": "m", "provider": "p"},
        {"type": "reasoning", "subtype": "stream", "token": "think\0\0"},
        {"type": "stream", "token": "Hel\0\0\0\0\0\0\0\0\0\0\0\0\0", "extra": 1},
        {"type": "status", "status": "keepAlive"},
        {"type": "tool", "subtype": "call"},
        {"type": "stream", "token": "lo"},
        {"type": "finalAnswer", "text": "Hello", "interrupted": True},
        {"type": "title", "title": "Greeting"},
    )
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        routes(router, stream=jsonl(body.replace(b"\n", b"\r\n", 2)))
        async with client() as c, c.conversation() as conv:
            assert await conv.ask("x") == "Hello"
            final = conv.final
        assert final is not None and final.title == "Greeting" and final.reasoning == "think"
        assert final.interrupted is True


# ---------------------------------------------------------------- stop and delete
@pytest.mark.parametrize("failure", [httpx.Response(500), httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
async def test_a_failed_stop_never_hides_the_stream_error(failure: object) -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router, stream=jsonl(Broken()))
        r["stop"].mock(side_effect=[failure] * 5)  # every attempt fails (the stop is retried: idempotent)
        async with client(retries=Retries(attempts=2, backoff=0.001)) as c:
            with pytest.raises(H2oTransportError) as info:
                await c.ask("x")
        assert info.value.phase is Phase.STREAM and info.value.cleanup_error is None
        assert r["stop"].call_count >= 1 and r["delete"].call_count == 1


async def test_delete_404_counts_as_deleted_and_500_is_a_cleanup_error() -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router)
        r["delete"].respond(404, json={"message": "Conversation not found"})
        async with client() as c, c.conversation() as conv:
            await conv.ask("x")
        assert conv.state is Phase.CLOSED
        r["delete"].respond(500)
        timeouts = Timeouts(delete=0.2, cleanup=0.5)
        async with client(timeouts=timeouts, retries=Retries(backoff=0.01)) as c:
            with pytest.raises(H2oCleanupError) as info:
                async with c.conversation() as conv:
                    await conv.ask("x")
            assert c.undeleted_conversations == 1
            assert await c.ask("x")  # a one-shot has its answer: its failed DELETE is counted, not raised
        assert c.undeleted_conversations == 2
        assert info.value.phase is Phase.DELETE and info.value.status == 500


async def test_cookie_values_never_in_errors() -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router, stream=httpx.Response(500, text=f"bad cookie token={SECRET} hf-chat=sess1"))
        async with client(cookies={"token": SECRET}) as c:
            with pytest.raises(H2oStatusError) as info:
                await c.ask("x")
        assert f"token={SECRET}" in r["send"].calls.last.request.headers["cookie"]  # sent, as given
        for shown in (str(info.value), repr(info.value), info.value.body or ""):
            assert SECRET not in shown and "sess1" not in shown
