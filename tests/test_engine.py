"""The engine against the bundled server over real loopback HTTP (no mocks).

One test per defect of the old provider (docs/protocol.md) and per cleanup path.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
import structlog
from support import FAST_RETRIES, FAST_TIMEOUTS, assert_clean, caller_timeout, client_for, emulator, happy_path, refused_url

from h2o_fsm import (
    H2o,
    H2oCleanupError,
    H2oClient,
    H2oProtocolError,
    H2oStatusError,
    H2oTimeoutError,
    H2oTransportError,
    H2oUpstreamError,
    Phase,
    Timeouts,
)
from h2o_fsm.server import Fault, LocalServer, ServerConfig, generate

USER = [{"role": "user", "content": "Hello, how are you?"}]


def expected(prompt: str, n: int = 8) -> str:
    return "".join(generate([("user", prompt)], n))


# ---------------------------------------------------------------- the seed's API
async def test_seed_example_against_an_ip_literal_base_url(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    assert server.url.startswith("http://127.0.0.1:")  # httpx keeps cookies of bare-IP hosts
    monkeypatch.setattr(H2o, "url", server.url)
    chunks = [c async for c in H2o.create_async_generator(H2o.model, USER, None, temperature=0.5)]
    assert len(chunks) == 8
    assert "".join(chunks) == expected(USER[0]["content"])
    assert_clean(server)
    await H2o.aclose()


async def test_create_async_does_not_leak_stream_into_parameters(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The emulator answers 400 when "stream" appears inside "parameters" (defect 5).
    monkeypatch.setattr(H2o, "url", server.url)
    text = await H2o.create_async("", USER, stream=False, temperature=0.2)
    assert text == expected(USER[0]["content"])
    assert_clean(server)
    await H2o.aclose()


async def test_classmethods_reuse_one_client_and_send_settings_once(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(H2o, "url", server.url)
    for _ in range(3):
        await H2o.create_async("", USER)
    assert len(server.accounting.requests_for("POST", "/settings")) == 1
    assert len(server.accounting.requests_for("POST", "/conversation")) == 6  # 3 creates + 3 sends
    assert_clean(server)
    await H2o.aclose()


def test_create_completion_is_a_plain_generator(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(H2o, "url", server.url)
    chunks = list(H2o.create_completion("", USER, stream=True))
    assert "".join(chunks) == expected(USER[0]["content"])
    whole = list(H2o.create_completion("", USER, stream=False))
    assert whole == ["".join(chunks)]
    gen = H2o.create_completion("", USER, stream=True)
    next(gen)
    gen.close()  # leaving early deletes before close() returns
    assert_clean(server)


# ---------------------------------------------------------------- native API
async def test_multi_turn_conversation_keeps_history_until_exit(server: LocalServer, transport: str) -> None:
    async with client_for(server, transport) as client:
        async with client.conversation() as conv:
            first = await conv.ask("first")
            second = await conv.ask("second")
            assert conv.state is Phase.READY and conv.conversation_id
            assert server.accounting.live == 1
        assert conv.state is Phase.CLOSED
    history = [("user", "first"), ("assistant", first), ("user", "second")]
    assert second == "".join(generate(history, 8))
    triggers = [r.trigger for r in conv.history]
    assert triggers == ["start", "create", "fetch", "send", "stream", "finish", "tail", "fetch", "send", "stream",
                        "finish", "tail", "close", "deleted"]  # each stream's tail read before what follows
    assert_clean(server)


async def test_history_records_status_duration_and_skipped_settings(server: LocalServer, transport: str) -> None:
    async with client_for(server, transport) as client:
        a = client.conversation()
        async with a:
            await a.ask("x")
        b = client.conversation()
        async with b:
            await b.ask("y")
    assert a.history[0].status == 303 and not a.history[0].skipped
    assert b.history[0].skipped and b.history[0].status is None  # same session: settings not re-sent
    assert all(r.duration_ms >= 0 for r in a.history)
    assert a.history[1].status == 200 and a.history[1].conversation_id == a.conversation_id


async def test_many_concurrent_conversations_one_failing(server: LocalServer, transport: str) -> None:
    server.faults.add(Fault("stream", "error_event", at_token=2))
    async with client_for(server, transport) as client:
        results = await asyncio.gather(*(client.ask(f"q{i}") for i in range(30)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], H2oUpstreamError)
    assert sum(isinstance(r, str) for r in results) == 29
    assert server.accounting.created == 30
    assert_clean(server)


async def test_bad_input_is_refused_before_any_request(server: LocalServer, transport: str) -> None:
    async with client_for(server, transport) as client:
        with pytest.raises(ValueError):
            await client.ask([])
        with pytest.raises(ValueError):
            await client.ask([{"role": "robot", "content": "x"}])
        with pytest.raises(TypeError):
            await client.ask(USER, temperature="hot")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        H2oClient("ftp://example.com")
    assert list(server.accounting.requests) == []


# ---------------------------------------------------------------- defects of the old provider
@pytest.mark.parametrize(
    ("fault", "error", "phase"),
    [
        (Fault("stream", "drop", at_token=3), H2oTransportError, Phase.STREAM),
        (Fault("stream", "malformed", at_token=2), H2oProtocolError, Phase.STREAM),
        (Fault("stream", "error_event", at_token=1), H2oUpstreamError, Phase.STREAM),
        (Fault("send", "status", status=500), H2oStatusError, Phase.SEND),
        (Fault("send", "html"), H2oProtocolError, Phase.SEND),
    ],
)
async def test_any_failure_after_create_deletes_the_conversation(
    fault: Fault, error: type[Exception], phase: Phase, transport: str
) -> None:
    # Defect 1 (leak), 2 (send status unchecked), 4 (error event → KeyError).
    with emulator(ServerConfig(max_tokens=8), faults=[fault]) as server:
        async with client_for(server, transport) as client:
            conv = client.conversation()
            with pytest.raises(error) as info:
                async with conv:
                    await conv.ask("hello")
        assert info.value.phase is phase  # type: ignore[attr-defined]
        assert info.value.conversation_id == conv.conversation_id  # type: ignore[attr-defined]
        assert conv.state is Phase.FAILED
        assert [r.trigger for r in conv.history][-3:] == ["abort", "stopped", "deleted"]
        assert_clean(server)


async def test_error_event_carries_its_type(server: LocalServer, transport: str) -> None:
    server.faults.add(Fault("stream", "error_event", at_token=0))
    async with client_for(server, transport) as client:
        with pytest.raises(H2oUpstreamError) as info:
            await client.ask("x")
    assert info.value.error_type == "overloaded" and info.value.status == 200


async def test_send_404_is_an_error_not_an_empty_answer(server: LocalServer, transport: str) -> None:
    server.faults.add(Fault("send", "status", status=404))
    async with client_for(server, transport) as client:
        with pytest.raises(H2oStatusError) as info:
            await client.ask("x")
    assert info.value.status == 404 and info.value.phase is Phase.SEND
    assert_clean(server)


async def test_another_session_cannot_use_a_conversation(server: LocalServer, transport: str) -> None:
    async with client_for(server, transport) as client:
        conv = client.conversation()
        await conv.open()
        async with httpx.AsyncClient() as other:
            r = await other.delete(f"{server.url}/conversation/{conv.conversation_id}")
        assert r.status_code in (404, 405)
        await conv.aclose()
    assert_clean(server)


# ---------------------------------------------------------------- cleanup on every path
async def test_timeout_around_the_caller_raises_timeout_error_and_still_deletes(transport: str) -> None:
    with emulator(ServerConfig(max_tokens=50, token_delay=0.05)) as server:
        async with client_for(server, transport) as client:
            conv = client.conversation()
            with pytest.raises(TimeoutError):
                async with caller_timeout(0.3), conv:
                    await conv.ask("slow")
        # the ending ran in a task the client owned; aclose() (the end of the block) waited for it
        assert conv.state is Phase.FAILED
        assert conv.conversation_id is not None
        assert_clean(server)


async def test_wait_for_around_the_caller(server: LocalServer, transport: str) -> None:
    server.faults.add(Fault("stream", "stall", at_token=2, seconds=3))
    async with client_for(server, transport) as client:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.ask("x"), 0.3)
    assert_clean(server)


async def test_task_cancellation_mid_stream_propagates_and_deletes(transport: str) -> None:
    with emulator(ServerConfig(max_tokens=100, token_delay=0.02)) as server:
        async with client_for(server, transport) as client:
            got: list[str] = []

            async def consume() -> None:
                async for chunk in client.stream("x"):
                    got.append(chunk)

            task = asyncio.create_task(consume())
            while len(got) < 3:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert_clean(server)


async def test_consumer_breaking_out_deletes(server: LocalServer, transport: str) -> None:
    async with client_for(server, transport) as client:
        conv = client.conversation()
        async with conv:
            turn = conv.stream("x")
            async for _ in turn:
                break
            await turn.aclose()
            assert conv.state is Phase.CLOSED
    assert_clean(server)


async def test_compat_generator_closed_early_deletes(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(H2o, "url", server.url)
    gen = H2o.create_async_generator("", USER)
    await gen.__anext__()
    await gen.aclose()  # type: ignore[attr-defined]
    assert_clean(server)
    await H2o.aclose()


async def test_token_timeout_is_our_timeout_error(transport: str) -> None:
    with emulator(ServerConfig(max_tokens=8), faults=[Fault("stream", "stall", at_token=1, seconds=2)]) as server:
        timeouts = Timeouts(token=0.2, delete=2, cleanup=5)
        async with client_for(server, transport, timeouts=timeouts) as client:
            with pytest.raises(H2oTimeoutError) as info:
                await client.ask("x")
        assert info.value.phase is Phase.STREAM
        assert_clean(server)


async def test_overall_deadline(transport: str) -> None:
    with emulator(ServerConfig(max_tokens=100, token_delay=0.02)) as server:
        async with client_for(server, transport, timeouts=Timeouts(total=0.3)) as client:
            with pytest.raises(H2oTimeoutError):
                await client.ask("x")
        assert_clean(server)


# ---------------------------------------------------------------- create / settings / delete faults
async def test_create_that_succeeds_on_the_server_but_answers_an_error(transport: str) -> None:
    # Documented decision: the client cannot name that conversation; it is not retried and it leaks
    # on the server (only a server-side expiry can remove it). The error says so by its phase.
    with emulator(ServerConfig(max_tokens=8), faults=[Fault("create", "create_then_error")]) as server:
        async with client_for(server, transport) as client:
            conv = client.conversation()
            with pytest.raises(H2oStatusError) as info:
                async with conv:
                    await conv.ask("x")
        assert info.value.phase is Phase.CREATE and conv.conversation_id is None
        assert server.accounting.created == 1 and len(server.accounting.requests_for("POST", "/conversation")) == 1


async def test_create_html_page_is_a_protocol_error(transport: str) -> None:
    with emulator(ServerConfig(max_tokens=8), faults=[Fault("create", "html")]) as server:
        async with client_for(server, transport) as client:
            with pytest.raises(H2oProtocolError) as info:
                await client.ask("x")
        assert info.value.phase is Phase.CREATE and info.value.status == 200
        assert_clean(server)


async def test_settings_429_with_retry_after_is_retried(transport: str) -> None:
    with emulator(ServerConfig(max_tokens=8), faults=[Fault("settings", "status", status=429, retry_after=0.05)]) as server:
        async with client_for(server, transport) as client:
            assert await client.ask("x") == expected("x")
        assert len(server.accounting.requests_for("POST", "/settings")) == 2
        assert_clean(server)


async def test_create_500_is_not_retried(transport: str) -> None:
    with emulator(ServerConfig(max_tokens=8), faults=[Fault("create", "status", status=500)]) as server:
        async with client_for(server, transport) as client:
            with pytest.raises(H2oStatusError):
                await client.ask("x")
        assert len(server.accounting.requests_for("POST", "/conversation")) == 1


async def test_delete_is_retried_on_5xx(transport: str) -> None:
    with emulator(ServerConfig(max_tokens=8), faults=[Fault("delete", "status", status=503, count=2)]) as server:
        async with client_for(server, transport) as client:
            await client.ask("x")
        assert len(server.accounting.requests_for("DELETE")) == 3
        assert_clean(server)


async def test_failed_cleanup_raises_cleanup_error_when_nothing_else_failed(transport: str) -> None:
    timeouts = Timeouts(connect=2.0, settings=5.0, create=5.0, send=5.0, token=5.0, delete=0.5, cleanup=1.0)
    with emulator(ServerConfig(max_tokens=8), faults=[Fault("delete", "status", status=500, count=-1)]) as server:
        async with client_for(server, transport, timeouts=timeouts) as client:
            conv = client.conversation()
            with pytest.raises(H2oCleanupError) as info:
                async with conv:
                    await conv.ask("x")
            assert client.undeleted_conversations == 1
        assert info.value.phase is Phase.DELETE and info.value.status == 500
        assert conv.state is Phase.FAILED
        # retried with backoff until the cleanup budget was spent, not a fixed number of times
        assert len(server.accounting.requests_for("DELETE")) > FAST_RETRIES.attempts


async def test_failed_cleanup_never_hides_the_original_error(transport: str) -> None:
    faults = [Fault("stream", "drop", at_token=1), Fault("delete", "status", status=500, count=-1)]
    timeouts = Timeouts(connect=2.0, settings=5.0, create=5.0, send=5.0, token=5.0, delete=0.5, cleanup=1.0)
    with emulator(ServerConfig(max_tokens=8), faults=faults) as server:
        async with client_for(server, transport, timeouts=timeouts) as client:
            with pytest.raises(H2oTransportError) as info:
                await client.ask("x")
        assert info.value.phase is Phase.STREAM
        assert isinstance(info.value.cleanup_error, H2oCleanupError)
        assert "cleanup also failed" in str(info.value)


async def test_connection_refused_is_a_transport_error(transport: str) -> None:
    url = refused_url()
    async with H2oClient(url, retries=FAST_RETRIES, timeouts=FAST_TIMEOUTS, transport=transport) as client:  # type: ignore[arg-type]
        with pytest.raises(H2oTransportError) as info:
            await client.ask("x")
    assert info.value.phase is Phase.SETTINGS
    assert not isinstance(info.value, H2oTimeoutError)  # refused is not a timeout, whatever the transport says
    assert isinstance(info.value.__cause__, httpx.ConnectError if transport == "httpx" else httpx.HTTPError)


# ---------------------------------------------------------------- logging
async def test_transitions_are_logged_without_prompt_or_cookie(server: LocalServer, transport: str) -> None:
    log = structlog.get_logger("test")
    with structlog.testing.capture_logs() as logs:
        async with client_for(server, transport, logger=log) as client:
            await client.ask("a secret prompt")
    transitions = [e for e in logs if e["event"] == "transition"]
    assert [(e["source"], e["dest"]) for e in transitions][:3] == [(a.value, b.value) for a, b in happy_path()[:3]]
    assert all("duration_ms" in e and "trigger" in e for e in transitions)
    assert transitions[-1]["conversation_id"]
    text = repr(logs)
    assert "a secret prompt" not in text and "hf-chat" not in text


async def test_prompt_is_logged_only_when_opted_in(server: LocalServer, transport: str) -> None:
    log = structlog.get_logger("test")
    with structlog.testing.capture_logs() as logs:
        async with client_for(server, transport, logger=log, log_content=True) as client:
            await client.ask("visible prompt")
    assert "visible prompt" in repr(logs)


# ---------------------------------------------------------------- client options
async def test_proxy_is_used(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # The emulator doubles as an HTTP forward proxy target: a host name that does not resolve can
    # only be reached through it, so an answer proves the proxy was used.
    monkeypatch.setattr(H2o, "url", "http://h2o-fsm-proxied.invalid")
    text = "".join([c async for c in H2o.create_async_generator("", USER, server.url)])
    assert text == expected(USER[0]["content"])
    assert_clean(server)
    await H2o.aclose()


async def test_fresh_session_per_conversation_posts_settings_each_time(server: LocalServer, transport: str) -> None:
    async with client_for(server, transport, share_session=False) as client:
        await asyncio.gather(*(client.ask(f"q{i}") for i in range(3)))
    assert len(server.accounting.requests_for("POST", "/settings")) == 3
    assert len({r.session for r in server.accounting.requests}) == 3
    assert_clean(server)


async def test_shared_session_under_concurrency_posts_settings_once(server: LocalServer, transport: str) -> None:
    async with client_for(server, transport) as client:
        await asyncio.gather(*(client.ask(f"q{i}") for i in range(10)))
    assert len(server.accounting.requests_for("POST", "/settings")) == 1
    assert len({r.session for r in server.accounting.requests}) == 1
    assert_clean(server)


async def test_a_handed_in_http_client_stays_open(server: LocalServer) -> None:
    async with httpx.AsyncClient() as http:
        async with H2oClient(server.url, http_client=http) as client:
            assert await client.ask("x") == expected("x")
        assert not http.is_closed
        assert (await http.get(server.url + "/")).status_code == 200
    assert_clean(server)


def test_sync_runner_closes_its_clients(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from h2o_fsm._provider import _REGISTRY, _SyncRunner

    monkeypatch.setattr(H2o, "url", server.url)
    assert list(H2o.create_completion("", USER))
    runner = _SyncRunner.get()
    clients = list(_REGISTRY[runner.loop].clients.values())
    assert clients and all(not c._http.is_closed for c in clients)
    runner.close()  # what atexit does
    assert all(c._http.is_closed for c in clients)
    assert not runner.thread.is_alive()
    assert list(H2o.create_completion("", USER))  # a new runner starts on demand
    assert_clean(server)
