"""Issue 18 items 1-8, one step at a time (respx): the model list and the default model, the dialect's
detection, Accept, the stop point, the usage limit, unknown keyword arguments, attach/detach, the
conversation list and delete-all. End to end against a real-like server: test_chatui_fidelity_e2e.py."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
import respx
import structlog

from h2o_fsm import (
    H2oClient,
    H2oDialectError,
    H2oError,
    H2oStateError,
    H2oStatusError,
    H2oUsageLimitError,
    ModelInfo,
    Phase,
    Retries,
)
from h2o_fsm._dialects import Body, get_dialect
from h2o_fsm._dialects.chatui import CHAT_UI
from h2o_fsm._dialects.chatui.catalog import (
    conversations_page,
    is_usage_limit,
    parse_conversation_list,
    parse_delete_all,
    parse_models,
)
from h2o_fsm._dialects.chatui.stream import JsonLinesParser
from h2o_fsm._dialects.chatui.wire import WireError

BASE = "http://chat.test:8080"
CID = "66a1b2c3d4e5f60718293a4b"
ROOT = str(uuid.uuid4())
LAST = str(uuid.uuid4())  # an assistant message of a conversation tree
RETRY = Retries(attempts=3, backoff=0.0, max_wait=0.0)
MODELS = {"json": [{"id": "meta/default", "name": "meta/default", "displayName": "Default", "description": "d",
                    "multimodal": True, "supportsTools": True, "supportsReasoning": False},
                   {"id": "other/b", "name": "other/b"}], "meta": {}}
USAGE = "You have reached the maximum number of conversations. Delete some to continue."


def created() -> httpx.Response:
    inner = json.dumps({"json": {"rootMessageId": ROOT}})
    return httpx.Response(200, json={"conversationId": CID, "conversation": inner})


def answer(*tokens: str) -> httpx.Response:
    lines = [json.dumps({"type": "stream", "token": t}) for t in tokens]
    lines.append(json.dumps({"type": "finalAnswer", "text": "".join(tokens), "interrupted": False}))
    return httpx.Response(200, content="\n".join(lines).encode() + b"\n", headers={"content-type": "application/jsonl"})


def chat_ui(**kw: object) -> H2oClient:
    kw.setdefault("transport", "httpx")
    kw.setdefault("retries", RETRY)
    kw.setdefault("dialect", "chat-ui")
    return H2oClient(BASE, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- 1. models, the default model
def test_parse_models_is_typed_bounded_and_validated() -> None:
    models = parse_models(json.dumps(MODELS).encode())
    assert models[0] == ModelInfo("meta/default", "meta/default", "Default", "d", True, True, False)
    assert models[1].display_name == "other/b" and not models[1].tools  # missing fields: defaults
    for bad in (b"[", b'{"json": {}}', b'{"json": [1]}', b'{"json": [{"id": "a\\nb"}]}', b'{"json": [{"id": 5}]}'):
        with pytest.raises(WireError):
            parse_models(bad)
    with pytest.raises(WireError, match="more than"):
        parse_models(json.dumps([{"id": f"m{i}"} for i in range(1001)]).encode())
    long = parse_models(json.dumps([{"id": "m", "description": "x" * 10_000}]).encode())
    assert len(long[0].description) == 2000


async def test_models_and_the_default_model_looked_up_once_for_many_concurrent_conversations() -> None:
    with respx.mock(base_url=BASE) as router:
        models = router.get("/api/v2/models").mock(return_value=httpx.Response(200, json=MODELS))
        create = router.post("/conversation").mock(side_effect=lambda r: created())
        router.post(f"/conversation/{CID}").mock(side_effect=lambda r: answer("Hi"))
        router.delete(f"/conversation/{CID}").mock(return_value=httpx.Response(200))
        async with chat_ui() as client:
            assert [m.id for m in await client.models()] == ["meta/default", "other/b"]
            assert models.call_count == 1
            client2 = chat_ui()  # a fresh client: its first conversations share one lookup
            async with client2:
                answers = await asyncio.gather(*(client2.ask("hello") for _ in range(10)))
        assert answers == ["Hi"] * 10
        assert models.call_count == 2  # models() above, then one lookup for ten concurrent first conversations
        assert {json.loads(c.request.content)["model"] for c in create.calls} == {"meta/default"}
        assert models.calls.last.request.headers["accept"] == "application/json"


async def test_a_named_model_needs_no_lookup_and_the_2023_dialect_keeps_its_default() -> None:
    with respx.mock(base_url=BASE) as router:
        create = router.post("/conversation").mock(return_value=created())
        router.delete(f"/conversation/{CID}").mock(return_value=httpx.Response(200))
        async with chat_ui(model="other/b") as client, client.conversation() as conv:
            await conv.open()
        assert json.loads(create.calls.last.request.content)["model"] == "other/b"
    assert H2oClient(BASE).conversation().model == "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1"


# ---------------------------------------------------------------- 2. auto, the other dialect's answers
async def test_auto_detects_chat_ui_from_the_model_list_without_creating_a_conversation() -> None:
    with respx.mock(base_url=BASE) as router, structlog.testing.capture_logs() as logs:
        router.get("/api/v2/models").mock(return_value=httpx.Response(200, json=MODELS))
        client = H2oClient(BASE, dialect="auto", transport="httpx", logger=structlog.get_logger())
        assert client.dialect == "auto"
        with pytest.raises(H2oStateError, match="not detected yet"):
            client.conversation()
        async with client:
            assert client.dialect == "chat-ui"
            assert client.conversation().model == ""  # the server's default, from the list already read
        assert len(router.calls) == 1
    assert [e for e in logs if e["event"] == "dialect_detected"] == [
        {"event": "dialect_detected", "dialect": "chat-ui", "reason": "GET /api/v2/models answered a model list",
         "log_level": "info"}]


@pytest.mark.parametrize("status", [404, 405])
async def test_auto_detects_the_2023_server_by_its_missing_api(status: int) -> None:
    with respx.mock(base_url=BASE) as router:
        router.get("/api/v2/models").mock(return_value=httpx.Response(status, text="Not Found"))
        async with H2oClient(BASE, dialect="auto", transport="httpx") as client:
            assert client.dialect == "h2o"
            assert await client.detect_dialect() == "h2o"
        assert len(router.calls) == 1  # detected once


async def test_auto_does_not_guess_on_a_server_error() -> None:
    with respx.mock(base_url=BASE) as router:
        router.get("/api/v2/models").mock(return_value=httpx.Response(503))
        client = H2oClient(BASE, dialect="auto", transport="httpx", retries=Retries(attempts=1))
        with pytest.raises(H2oStatusError) as info:
            await client.detect_dialect()
        assert info.value.status == 503 and client.dialect == "auto"
        await client.aclose()


async def test_form_settings_answered_500_say_chat_ui_and_are_not_retried() -> None:
    with respx.mock(base_url=BASE) as router:
        settings = router.post("/settings").mock(return_value=httpx.Response(500, json={"message": "Internal Error"}))
        async with H2oClient(BASE, transport="httpx", retries=RETRY) as client:
            with pytest.raises(H2oDialectError) as info:
                await client.ask("hi")
        assert settings.call_count == 1
        err = info.value
        assert err.suggested_dialect == "chat-ui" and err.phase is Phase.SETTINGS and err.status == 500
        assert "this looks like a chat-ui server: use dialect='chat-ui'" in str(err)
        assert "try again" not in str(err)


async def test_a_2023_server_answering_chat_ui_requests_says_h2o() -> None:
    with respx.mock(base_url=BASE) as router:
        router.get("/api/v2/models").mock(return_value=httpx.Response(404, text="Not Found"))
        async with chat_ui() as client:
            with pytest.raises(H2oDialectError, match="use dialect='h2o'") as info:
                await client.ask("hi")
        assert info.value.suggested_dialect == "h2o"
        router.post("/conversation").mock(return_value=httpx.Response(405, text="accept the welcome modal"))
        async with chat_ui(model="m") as client:
            with pytest.raises(H2oDialectError, match="use dialect='h2o'"):
                await client.ask("hi")


# ---------------------------------------------------------------- 3. Accept
@pytest.mark.parametrize("how", ["ours", "transport", "http_client"])
async def test_accept_json_on_every_request_but_the_stream(how: str) -> None:
    with respx.mock(base_url=BASE) as router:
        router.get("/api/v2/models").mock(return_value=httpx.Response(200, json=MODELS))
        router.post("/conversation").mock(return_value=created())
        send = router.post(f"/conversation/{CID}").mock(return_value=answer("a", "b"))
        router.delete(f"/conversation/{CID}").mock(return_value=httpx.Response(200))
        kw: dict[str, object] = {}
        if how == "transport":
            kw["transport"] = httpx.AsyncHTTPTransport()  # respx patches it: a caller's own transport
        elif how == "http_client":
            kw = {"http_client": httpx.AsyncClient(headers={"Accept": "text/html"}), "transport": None}
        async with chat_ui(**kw) as client:
            assert await client.ask("hi") == "ab"
        for call in router.calls:
            accept = call.request.headers.get("accept")
            if call.request is send.calls.last.request:
                assert accept != "application/json"
            else:
                assert accept == "application/json", call.request.url
        if how == "http_client":
            await kw["http_client"].aclose()  # type: ignore[attr-defined]


# ---------------------------------------------------------------- 4. the stop point
def test_the_parser_counts_answer_text_as_chat_ui_does() -> None:
    parser = JsonLinesParser()
    parser.feed(b'{"type":"stream","token":"ab\\u0000\\u0000"}\n{"type":"reasoning","subtype":"stream","token":"zz"}\n')
    assert parser.answer_chars == 2  # padding and reasoning are not answer text
    parser.feed(json.dumps({"type": "stream", "token": "é😀"}).encode() + b"\n")
    assert parser.answer_chars == 2 + 3  # the emoji is two UTF-16 code units, as JavaScript counts


async def test_stop_generating_carries_the_characters_delivered() -> None:
    body = b"".join(json.dumps({"type": "stream", "token": t}).encode() + b"\n" for t in ("Hel", "lo", " you"))
    chunks = [body[: body.index(b"\n") + 1], body[body.index(b"\n") + 1:]]

    class Stream(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def, override]
            yield chunks[0]
            await asyncio.sleep(0.05)
            yield chunks[1]
            await asyncio.sleep(10)

    with respx.mock(base_url=BASE) as router:
        router.post("/conversation").mock(return_value=created())
        router.post(f"/conversation/{CID}").mock(return_value=httpx.Response(200, stream=Stream()))
        stop = router.post(f"/conversation/{CID}/stop-generating").mock(return_value=httpx.Response(200))
        router.delete(f"/conversation/{CID}").mock(return_value=httpx.Response(200))
        async with chat_ui(model="m") as client:
            async for chunk in client.stream("hi"):
                assert chunk == "Hel"
                break
        sent = json.loads(stop.calls.last.request.content)
        assert sent["seenContentLength"] == 3 and isinstance(sent["generationId"], str)


async def test_a_stop_before_the_second_turn_s_stream_says_nothing_was_delivered() -> None:
    """The stop point is the running turn's: a send that timed out after the first turn's answer was
    read stops at 0, not at the first answer's length (the state's parser is cleared by the send)."""
    with respx.mock(base_url=BASE) as router:
        router.post("/conversation").mock(return_value=created())
        router.get(f"/api/v2/conversations/{CID}").mock(return_value=httpx.Response(200, json=conversation_tree(LAST)))
        send = router.post(f"/conversation/{CID}")
        send.side_effect = [answer("Hello"), httpx.ReadTimeout("slow")]
        stop = router.post(f"/conversation/{CID}/stop-generating").mock(return_value=httpx.Response(200))
        router.delete(f"/conversation/{CID}").mock(return_value=httpx.Response(200))
        async with chat_ui(model="m") as client, client.conversation() as conv:
            assert await conv.ask("one") == "Hello"
            with pytest.raises(H2oError):
                await conv.ask("two")
        assert json.loads(stop.calls.last.request.content)["seenContentLength"] == 0


def test_a_stop_body_from_a_generation_id_alone() -> None:
    """What a sweep can send with no conversation state: the generation, stop point 0."""
    assert CHAT_UI.stop_body_of("g-1").json == {"generationId": "g-1", "seenContentLength": 0}
    assert CHAT_UI.stop_body(CHAT_UI.new_state(None)).json == {"generationId": "", "seenContentLength": 0}
    assert get_dialect("h2o").stop_body_of("g-1") == Body()  # no stop step in 2023


# ---------------------------------------------------------------- 5. the usage limit
def test_usage_limit_words() -> None:
    assert is_usage_limit(429, json.dumps({"message": USAGE}))
    assert not is_usage_limit(429, "Too many requests, slow down")
    assert not is_usage_limit(400, USAGE)


async def test_usage_limit_is_not_retried_and_says_what_helps() -> None:
    with respx.mock(base_url=BASE) as router:
        create = router.post("/conversation").mock(
            return_value=httpx.Response(429, json={"message": USAGE}, headers={"cookie-echo": "x"}))
        async with chat_ui(model="m", cookies={"hf-chat": "SECRET-123"}) as client:
            with pytest.raises(H2oUsageLimitError) as info:
                await client.ask("hi")
        assert create.call_count == 1
        err = info.value
        assert isinstance(err, H2oStatusError) and err.status == 429 and err.phase is Phase.CREATE
        assert "maximum number of conversations" in str(err) and "--delete-all --yes" in str(err)
        assert "SECRET-123" not in str(err) + repr(err)


async def test_a_real_rate_limit_is_still_retried() -> None:
    with respx.mock(base_url=BASE) as router:
        create = router.post("/conversation").mock(side_effect=[
            httpx.Response(429, text="Too many requests", headers={"Retry-After": "0"}), created()])
        router.post(f"/conversation/{CID}").mock(return_value=answer("ok"))
        router.delete(f"/conversation/{CID}").mock(return_value=httpx.Response(200))
        async with chat_ui(model="m") as client:
            assert await client.ask("hi") == "ok"
        assert create.call_count == 2


# ---------------------------------------------------------------- 6. unknown keyword arguments
async def test_unknown_keyword_arguments_are_refused_before_any_request() -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        h2o = H2oClient(BASE, transport="httpx")
        with pytest.raises(TypeError, match=r"'temprature'.*temperature"):
            await h2o.ask("hi", temprature=0.2)
        with pytest.raises(TypeError, match="'conversation_ids'"):
            h2o.conversation(conversation_ids=CID)
        h2o.conversation(temperature=0.2, max_new_tokens=5, stream=False)  # the 2023 dialect's own
        h2o.conversation(parameters={"new_server_param": 1})  # a mapping may name any
        chat = chat_ui(model="m")
        chat.conversation(temperature=0.2)  # accepted, not sent (the server's model configuration rules)
        with pytest.raises(TypeError, match=r"'temprature'.*the chat-ui dialect's generation parameters: details, do_sample"):
            await chat.ask("hi", temprature=0.2)
        assert len(router.calls) == 0
        await h2o.aclose()
        await chat.aclose()


# ---------------------------------------------------------------- 7. attach, detach
def conversation_tree(*assistant_ids: str) -> dict[str, object]:
    messages: list[dict[str, object]] = [{"id": ROOT, "from": "system", "content": "", "children": []}]
    for aid in assistant_ids:
        uid = str(uuid.uuid4())
        messages[-1]["children"] = [uid]
        messages += [{"id": uid, "from": "user", "content": "q", "children": [aid]},
                     {"id": aid, "from": "assistant", "content": "a", "children": []}]
    return {"json": {"rootMessageId": ROOT, "messages": messages}}


async def test_attach_continues_from_the_last_message_and_deletes_at_the_end() -> None:
    last = str(uuid.uuid4())
    with respx.mock(base_url=BASE) as router:
        read = router.get(f"/api/v2/conversations/{CID}").mock(return_value=httpx.Response(200, json=conversation_tree(last)))
        send = router.post(f"/conversation/{CID}").mock(return_value=answer("again"))
        delete = router.delete(f"/conversation/{CID}").mock(return_value=httpx.Response(200))
        async with chat_ui(model="m") as client:
            async with client.conversation(conversation_id=CID) as conv:
                assert conv.conversation_id == CID and conv.state is Phase.NEW
                assert await conv.ask("more") == "again"
            assert conv.state is Phase.CLOSED
            attached = client.conversation(conversation_id=CID)  # never used: the client's end deletes it
        assert read.call_count == 1 and delete.call_count == 2
        assert f'"id":"{last}"' in send.calls.last.request.content.decode().replace(" ", "")
        assert attached.state is Phase.CLOSED
        assert not any(c.request.url.path == "/conversation" for c in router.calls)  # nothing created


async def test_an_attached_conversation_keeps_its_system_message_and_says_nothing_is_created() -> None:
    """An attached conversation exists: its first turn is not a create's, so a system message travels
    as text (it is never dropped as a preprompt), and the stepper says its start sends nothing."""
    with respx.mock(base_url=BASE) as router:
        router.get(f"/api/v2/conversations/{CID}").mock(return_value=httpx.Response(200, json=conversation_tree(LAST)))
        send = router.post(f"/conversation/{CID}").mock(return_value=answer("ok"))
        router.delete(f"/conversation/{CID}").mock(return_value=httpx.Response(200))
        async with chat_ui(model="m", log_content=True) as client, client.conversation(conversation_id=CID) as conv:
            conv.queue([{"role": "system", "content": "Be brief"}, {"role": "user", "content": "more"}])
            said = conv.describe_next()
            assert (await conv.step()).state is Phase.READY
            assert said.startswith("nothing to send") and "POST" not in said
            assert conv.describe_next().startswith("GET ")
            while (await conv.step()).text is None:  # the queued turn, step by step
                pass
            assert await conv.ask([{"role": "system", "content": "Be terse"}, {"role": "user", "content": "x"}])
        first, second = (json.loads(_data_part(c.request)) for c in send.calls)
        assert "Be brief" in first["inputs"] and "more" in first["inputs"]
        assert "Be terse" in second["inputs"]
        assert not any(c.request.url.path == "/conversation" for c in router.calls)


def _data_part(request: httpx.Request) -> str:
    body = request.content.decode()
    return body[body.index("{"): body.rindex("}") + 1]


async def test_detach_leaves_it_on_the_server_and_returns_its_id() -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router, structlog.testing.capture_logs() as logs:
        router.post("/conversation").mock(return_value=created())
        delete = router.delete(f"/conversation/{CID}").mock(return_value=httpx.Response(200))
        async with chat_ui(model="m", logger=structlog.get_logger()) as client:
            async with client.conversation() as conv:
                with pytest.raises(H2oStateError, match="nothing to detach"):
                    await conv.detach()
                await conv.open()
                assert await conv.detach() == CID
            assert conv.state is Phase.CLOSED and client.live_conversations == 0
            with pytest.raises(TypeError):
                client.conversation(conversation_id=5)  # type: ignore[arg-type]
            with pytest.raises(ValueError):
                client.conversation(conversation_id="../x")
        assert delete.call_count == 0
        assert any(e["event"] == "conversation_detached" for e in logs)


# ---------------------------------------------------------------- 8. list, delete-all
def test_conversation_list_pages() -> None:
    page = {"json": {"conversations": [{"_id": CID, "title": "T", "model": "m", "updatedAt": "2026"}],
                     "hasMore": True}}
    items, more = parse_conversation_list(json.dumps(page).encode())
    assert more and items[0].id == CID and items[0].title == "T"
    with pytest.raises(WireError):
        parse_conversation_list(b'{"json": {"conversations": [{"_id": "../x"}]}}')
    assert conversations_page(3) == ("GET", "/api/v2/conversations?p=3")
    with pytest.raises(ValueError):
        conversations_page(-1)
    assert parse_delete_all(b'{"json": 4}') == 4 and parse_delete_all(b"") is None


async def test_list_conversations_reads_pages_bounded_and_delete_all() -> None:
    def page(request: httpx.Request) -> httpx.Response:
        p = int(request.url.params["p"])
        cid = f"{p:024x}"
        return httpx.Response(200, json={"json": {"conversations": [{"_id": cid, "title": f"t{p}"}], "hasMore": True}})

    with respx.mock(base_url=BASE) as router:
        listing = router.get("/api/v2/conversations").mock(side_effect=page)
        delete_all = router.delete("/api/v2/conversations").mock(return_value=httpx.Response(200, json={"json": 7}))
        async with chat_ui() as client:
            found = await client.list_conversations(max_pages=3)
            assert [c.title for c in found] == ["t0", "t1", "t2"] and listing.call_count == 3
            with pytest.raises(ValueError):
                await client.list_conversations(max_pages=0)
            assert await client.delete_all_conversations() == 7
        assert delete_all.calls.last.request.headers["accept"] == "application/json"


async def test_auto_detects_once_for_many_concurrent_first_asks() -> None:
    with respx.mock(base_url=BASE) as router:
        models = router.get("/api/v2/models").mock(return_value=httpx.Response(200, json=MODELS))
        create = router.post("/conversation").mock(side_effect=lambda r: created())
        router.post(f"/conversation/{CID}").mock(side_effect=lambda r: answer("Hi"))
        router.delete(f"/conversation/{CID}").mock(return_value=httpx.Response(200))
        client = H2oClient(BASE, dialect="auto", transport="httpx")
        assert await asyncio.gather(*(client.ask("hello") for _ in range(8))) == ["Hi"] * 8
        await client.aclose()
        assert models.call_count == 1  # the detection's list also names the default model
        assert {json.loads(c.request.content)["model"] for c in create.calls} == {"meta/default"}
