"""Issue 18 items 1-8 end to end, on both transports, against a server that answers as PROTOCOL.md's
"Observed on a real chat-ui server" says (tests/chatui_real_like.py: HTML errors unless Accept says
JSON, a Secure cookie over http, JSON-only settings, the usage limit, models, the paged list,
delete-all, the stop-point schema) — and the 2023 emulator for the other side of the detection."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import structlog
from chatui_real_like import MODELS, USAGE_LIMIT, RealLikeServer
from support import FAST_RETRIES, FAST_TIMEOUTS

from h2o_fsm import H2oClient, H2oDialectError, H2oStatusError, H2oUsageLimitError, Phase
from h2o_fsm.cli import main
from h2o_fsm.server import LocalServer

COOKIES = {"hf-chat": "SECRET-session-e2e"}


@pytest.fixture
def real() -> Iterator[RealLikeServer]:
    with RealLikeServer(max_conversations=3, page_size=2, tokens=6, token_delay=0.05) as server:
        yield server


def client_of(server: RealLikeServer, transport: str | httpx.AsyncBaseTransport, **kw: object) -> H2oClient:
    kw.setdefault("retries", FAST_RETRIES)
    kw.setdefault("timeouts", FAST_TIMEOUTS)
    kw.setdefault("dialect", "chat-ui")
    return H2oClient(server.url, transport=transport, **kw)  # type: ignore[arg-type]


async def test_auto_models_default_model_and_accept(real: RealLikeServer, transport: str) -> None:
    async with client_of(real, transport, dialect="auto") as client:
        assert client.dialect == "chat-ui" and real.state.created == 0  # detected without a conversation
        models = await client.models()
        assert [m.id for m in models] == list(MODELS) and models[0].tools and models[1].multimodal
        assert await client.ask("hello") == "w0 w1 w2 w3 w4 w5"  # on the server's default model
    assert [c.model for c in real.state.conversations.values()] == []  # deleted
    assert real.state.created == real.state.deleted == 1
    for method, path, accept in real.state.requests:
        if method == "POST" and path.startswith("/conversation/") and path.count("/") == 2:
            continue  # the send: its answer is the stream
        assert accept == "application/json", (method, path)


@pytest.mark.parametrize("own", [False, True])
async def test_server_errors_arrive_as_json_with_the_servers_words(real: RealLikeServer, transport: str,
                                                                   own: bool) -> None:
    chosen: object = httpx.AsyncHTTPTransport() if own else transport  # a caller's transport sends no Accept itself
    async with client_of(real, chosen, model="no/such-model") as client:  # type: ignore[arg-type]
        with pytest.raises(H2oStatusError) as info:
            await client.ask("hi")
    assert info.value.status == 400 and "Invalid request" in info.value.body and "<" not in info.value.body


async def test_the_2023_dialect_on_chat_ui_and_chat_ui_on_a_2023_server_say_so(real: RealLikeServer,
                                                                                transport: str) -> None:
    async with client_of(real, transport, dialect="h2o") as client:
        with pytest.raises(H2oDialectError, match="use dialect='chat-ui'") as info:
            await client.ask("hi")
    assert info.value.phase is Phase.SETTINGS and info.value.status == 500
    assert sum(1 for m, p, _ in real.state.requests if p == "/settings") == 1  # not retried
    with LocalServer(dialect="h2o") as old:
        async with H2oClient(old.url, dialect="chat-ui", transport=transport, retries=FAST_RETRIES) as client:
            with pytest.raises(H2oDialectError, match="use dialect='h2o'"):
                await client.ask("hi")
        async with H2oClient(old.url, dialect="auto", transport=transport) as client:
            assert client.dialect == "h2o"
            assert await client.ask("hi")
        assert old.accounting.live == 0


async def test_stop_point_reaches_the_server_in_its_schema(real: RealLikeServer, transport: str) -> None:
    delivered = ""
    async with client_of(real, transport) as client:
        async for chunk in client.stream("hi"):
            delivered += chunk
            if len(delivered) >= 4:
                break
    assert real.state.stops_discarded == 0 and len(real.state.stops) == 1
    seen = real.state.stops[0]["seenContentLength"]
    assert isinstance(seen, int) and len(delivered) <= seen < len("w0 w1 w2 w3 w4 w5")
    assert real.live == 0


async def test_usage_limit_then_delete_all(real: RealLikeServer, transport: str) -> None:
    async with client_of(real, transport, cookies=COOKIES) as client:
        kept = [client.conversation() for _ in range(3)]
        for conv in kept:
            await conv.open()
        for conv in kept:
            await conv.detach()  # left on the server on purpose: the session is full
        creates = sum(1 for m, p, _ in real.state.requests if (m, p) == ("POST", "/conversation"))
        with pytest.raises(H2oUsageLimitError) as info:
            await client.ask("hi")
        assert sum(1 for m, p, _ in real.state.requests if (m, p) == ("POST", "/conversation")) == creates + 1
        assert USAGE_LIMIT.split(".")[0] in str(info.value) and "SECRET" not in str(info.value)
        listed = await client.list_conversations()
        assert sorted(c.id for c in listed) == sorted(c.conversation_id or "" for c in kept)  # 2 pages of 2
        assert await client.delete_all_conversations() == 3
        assert await client.ask("hi again")
    assert real.live == 0


async def test_attach_continues_a_conversation_and_detach_leaves_it(real: RealLikeServer, transport: str) -> None:
    async with client_of(real, transport, cookies=COOKIES) as first:
        async with first.conversation() as conv:
            await conv.ask("one")
            cid = await conv.detach()
    assert real.live == 1
    async with client_of(real, transport, cookies=COOKIES) as second:
        async with second.conversation(conversation_id=cid) as again:
            assert await again.ask("two")
    assert real.live == 0  # attached, then deleted at its end
    async with client_of(real, transport, cookies=COOKIES) as third:
        async with third.conversation() as conv:
            await conv.ask("one")
            cid = await conv.detach()
        async with third.conversation(conversation_id=cid) as again:
            await again.ask("two")
            tree = real.state.conversations[cid].messages
            assert [m["from"] for m in tree] == ["system", "user", "assistant", "user", "assistant"]
            assert tree[2]["children"] == [tree[3]["id"]]  # linear: hangs from the last answer
    assert real.live == 0


def test_cli_models_and_conversations(real: RealLikeServer, capsys: pytest.CaptureFixture[str]) -> None:
    structlog.reset_defaults()  # capture_logs() in earlier tests leaves structlog "configured": logs on stdout
    async def leave_two() -> None:
        async with client_of(real, "httpx", cookies=COOKIES) as client:
            for _ in range(2):
                conv = client.conversation()
                await conv.open()
                await conv.detach()

    asyncio.run(leave_two())
    cookie = f"hf-chat={COOKIES['hf-chat']}"
    assert main(["models", "--base-url", real.url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{MODELS[0]} (default)") and out[1].startswith(MODELS[1])
    assert main(["conversations", "--base-url", real.url, "--cookie", cookie]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 3 and listed[2] == "conversations: 2", listed  # the two, then their count
    assert main(["conversations", "--delete-all", "--base-url", real.url, "--cookie", cookie]) == 2
    assert "--yes" in capsys.readouterr().err and real.live == 2
    assert main(["conversations", "--delete-all", "--yes", "--base-url", real.url, "--cookie", cookie]) == 0
    assert capsys.readouterr().out == "deleted: 2\n" and real.live == 0
