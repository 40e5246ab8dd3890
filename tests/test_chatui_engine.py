"""The engine in the chat-ui dialect against the bundled emulator over real loopback HTTP (issue 11).

Every test runs on both transports. Answers are computed as the emulator computes them
(``generate`` seeded by the linear history), the message tree is read from the emulator's
accounting, and the cleanup guarantee is checked after the client closed (the ending runs in a task
the client owns).
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager
import itertools
import time

import pytest
import structlog
from support import FAST_RETRIES, FAST_TIMEOUTS, caller_timeout, emulator

from h2o_fsm import (
    DEFAULT_MODEL,
    H2oCleanupError,
    H2oClient,
    H2oError,
    H2oProtocolError,
    H2oStatusError,
    H2oTimeoutError,
    H2oTransportError,
    H2oUpstreamError,
    Phase,
    Retries,
    Timeouts,
)
from h2o_fsm.server import Fault, LocalServer, ServerConfig, generate

NO_RETRY = Retries(attempts=1)
# short step timeouts so that stalls become timeouts quickly; a small cleanup budget
# step limits well under the faults' stalls (1.0-2.0 s) yet over what a loaded 2-core machine takes for a step
SHORT = Timeouts(connect=2.0, settings=0.6, create=0.6, fetch=0.6, send=0.6, token=0.6, delete=0.6, cleanup=1.5)


def chatui(faults: list[Fault] | None = None, **config: object) -> AbstractContextManager[LocalServer]:
    config.setdefault("max_tokens", 8)
    config.setdefault("keep_alive", 0.0)
    return emulator(ServerConfig(**config), faults=faults, dialect="chat-ui")  # type: ignore[arg-type]


def client_for(server: LocalServer, transport: str, **kw: object) -> H2oClient:
    """Every test takes conftest's ``transport`` fixture: it runs on httpx-aiohttp and on httpx's own."""
    kw.setdefault("transport", transport)
    kw.setdefault("retries", FAST_RETRIES)
    kw.setdefault("timeouts", FAST_TIMEOUTS)
    # a model named: without one the client asks the server's list first (tests/test_chatui_fidelity*.py)
    kw.setdefault("model", DEFAULT_MODEL)
    return H2oClient(server.url, dialect="chat-ui", **kw)  # type: ignore[arg-type]


def answer(history: list[tuple[str, str]], n: int = 8) -> str:
    return "".join(generate(history, n))


def deletes(server: LocalServer, cid: str | None) -> list[int]:
    """The statuses of the DELETEs the server answered for ``cid``."""
    return [r.status for r in server.accounting.requests_for("DELETE") if r.conversation_id == cid]


def assert_clean(server: LocalServer, *cids: str | None) -> None:
    acct = server.accounting
    assert acct.live == 0, acct.snapshot()
    assert acct.deleted == acct.created and acct.deleted_twice == 0, acct.snapshot()
    for cid in cids:
        assert deletes(server, cid) == [200], (cid, deletes(server, cid))


def stop_then_delete(server: LocalServer, cid: str | None) -> None:
    """Exactly one stop-generating for ``cid``, answered before its one DELETE."""
    paths = [(r.method, r.path) for r in server.accounting.requests if r.conversation_id == cid]
    stops = [i for i, p in enumerate(paths) if p == ("POST", f"/conversation/{cid}/stop-generating")]
    dels = [i for i, p in enumerate(paths) if p[0] == "DELETE"]
    assert len(stops) == 1 and len(dels) == 1 and stops[0] < dels[0], paths


# ---------------------------------------------------------------- the happy path
@pytest.mark.parametrize("conversation_field", [True, False])
async def test_three_turns_exact_answers_on_the_linear_history_one_delete(transport: str, conversation_field: bool) -> None:
    with chatui(conversation_field=conversation_field) as server:
        async with client_for(server, transport) as client, client.conversation() as conv:
            answers = [await conv.ask(p) for p in ("first", "second", "third")]
            cid = conv.conversation_id
            assert conv.state is Phase.READY and server.accounting.live == 1
        assert conv.state is Phase.CLOSED
        history: list[tuple[str, str]] = []
        for prompt, got in zip(("first", "second", "third"), answers, strict=True):
            history.append(("user", prompt))
            assert got == answer(history), prompt
            history.append(("assistant", got))
        assert cid is not None
        messages = server.accounting.messages(cid)
        turns = server.accounting.turns(cid)
        assert messages[0].role == "system" and len(turns) == 3
        assert turns[0].parent == messages[0].id  # the first turn hangs from the root
        for before, after in itertools.pairwise(turns):
            assert after.parent == before.assistant  # each later one from the previous answer
        assert not any(t.branched for t in turns) and server.accounting.branched == 0
        assert [m.content for m in messages if m.role == "assistant"] == answers
        assert server.accounting.stops == 0  # every answer was read to its end: nothing to stop
        assert_clean(server, cid)
        fetches = [r for r in conv.history if r.trigger == "fetch"]
        assert len(fetches) == 3 and not any(r.skipped for r in fetches[1:])
        assert fetches[0].skipped is conversation_field  # the create answer named the root
        settings = conv.history[0]
        assert settings.trigger == "start" and settings.skipped  # chat-ui: no settings unless asked
        assert server.accounting.requests_for("POST", "/settings") == []


async def test_a_system_message_becomes_the_preprompt(transport: str) -> None:
    with chatui() as server:
        async with client_for(server, transport) as client, client.conversation() as conv:
            first = await conv.ask([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
            second = await conv.ask("More")
            cid = conv.conversation_id
        assert cid is not None
        messages = server.accounting.messages(cid)
        assert (messages[0].role, messages[0].content) == ("system", "Be brief.")
        assert [(m.role, m.content) for m in messages[1:] if m.role == "user"] == [("user", "Hi"), ("user", "More")]
        assert first == answer([("system", "Be brief."), ("user", "Hi")])
        assert second == answer([("system", "Be brief."), ("user", "Hi"), ("assistant", first), ("user", "More")])
        assert_clean(server, cid)


async def test_settings_are_posted_only_when_asked(transport: str) -> None:
    with chatui() as server:
        async with client_for(server, transport, settings=True) as client:
            assert await client.ask("x") == answer([("user", "x")])
            assert await client.ask("y") == answer([("user", "y")])
        assert len(server.accounting.requests_for("POST", "/settings")) == 1  # once per session and model
        assert_clean(server)


@pytest.mark.parametrize("title", ["before", "after", "none"])
async def test_final_has_title_reasoning_and_interrupted_as_sent(transport: str, title: str) -> None:
    # unknown update types and fields, reasoning tokens, the 4096-space padding and `finished`: all tolerated
    with chatui(reasoning_tokens=3, title=title, unknown_updates=True) as server:
        async with client_for(server, transport) as client, client.conversation() as conv:
            text = await conv.ask("Tell me a long story please now")
            final = conv.final
        history = [("user", "Tell me a long story please now")]
        assert text == answer(history)
        assert final is not None and final.generated_text == text and final.interrupted is False
        assert final.reasoning == "".join(generate([*history, ("reasoning", "")], 3))
        assert final.reasoning not in text
        assert final.title == (None if title == "none" else "Tell me a long story")
        assert_clean(server)


async def test_interrupted_answer_is_reported(transport: str) -> None:
    # Another tab of the same logged-in session stops the generation: finalAnswer says interrupted.
    import httpx

    cookies = {"hf-chat": "a-known-session-0123456789"}
    with chatui(max_tokens=100, token_delay=0.02, required_cookies=cookies) as server:
        async with client_for(server, transport, cookies=cookies) as client, client.conversation() as conv:
            got: list[str] = []
            async for chunk in conv.stream("go"):
                got.append(chunk)
                if len(got) == 3:
                    async with httpx.AsyncClient(base_url=server.url, cookies=cookies) as other:
                        r = await other.post(f"/conversation/{conv.conversation_id}/stop-generating", json={})
                        assert r.status_code == 200
            final = conv.final
            assert conv.state is Phase.READY  # an interrupted answer is an answer, not a failure
        assert final is not None and final.interrupted is True
        assert 3 <= len(got) < 100 and final.generated_text == "".join(got)
        assert server.accounting.stopped_running == 1 and server.accounting.stops == 1  # only the other tab's
        assert_clean(server)


async def test_keepalive_lines_reset_the_token_gap(transport: str) -> None:
    # a 1 s pause with keepAlive every 50 ms is not a stalled stream for a 0.3 s token timeout
    faults = [Fault("stream", "stall", at_token=2, seconds=1.0)]
    with chatui(faults, keep_alive=0.05) as server:
        async with client_for(server, transport, timeouts=Timeouts(token=0.3, delete=2.0, cleanup=5.0)) as client:
            assert await client.ask("x") == answer([("user", "x")])
        assert server.faults.fired == faults
        assert_clean(server)


# ---------------------------------------------------------------- every fault in every phase
FAULTS = [
    ("settings", Fault("settings", "status", status=500), H2oStatusError),
    ("settings", Fault("settings", "html"), H2oProtocolError),
    ("settings", Fault("settings", "stall", seconds=1.0), H2oTimeoutError),
    ("create", Fault("create", "status", status=429), H2oStatusError),
    ("create", Fault("create", "html"), H2oProtocolError),
    ("create", Fault("create", "stall", seconds=1.0), H2oTimeoutError),
    ("create", Fault("create", "create_then_error", status=500), H2oStatusError),
    ("fetch", Fault("fetch", "status", status=500), H2oStatusError),
    ("fetch", Fault("fetch", "html"), H2oProtocolError),
    ("fetch", Fault("fetch", "stall", seconds=1.0), H2oTimeoutError),
    ("send", Fault("send", "status", status=429), H2oStatusError),
    ("send", Fault("send", "html"), H2oProtocolError),
    ("send", Fault("send", "stall", seconds=1.0), H2oTimeoutError),
    ("stream", Fault("stream", "stall", at_token=2, seconds=1.5), H2oTimeoutError),
    ("stream", Fault("stream", "drop", at_token=2), H2oTransportError),
    ("stream", Fault("stream", "malformed", at_token=2), H2oProtocolError),
    ("stream", Fault("stream", "error_event", at_token=2, status=503), H2oUpstreamError),
    ("delete", Fault("delete", "status", status=500, count=-1), H2oCleanupError),
    ("delete", Fault("delete", "stall", seconds=1.0, count=-1), H2oCleanupError),
]


@pytest.mark.parametrize(("phase", "fault", "error"), FAULTS, ids=[f"{p}-{f.kind}" for p, f, _ in FAULTS])
async def test_every_fault_is_a_typed_error_of_its_phase_and_nothing_is_left(transport: str, phase: str, fault: Fault, error: type[H2oError]) -> None:
    # fetch faults: a server without the `conversation` field makes the first turn read the root
    with chatui([fault], conversation_field=phase != "fetch") as server:
        async with client_for(server, transport, retries=NO_RETRY, timeouts=SHORT, settings=True) as client:
            conv = client.conversation()
            with pytest.raises(H2oError) as info:
                async with conv:
                    await conv.ask("hello")
            assert client.live_conversations == 0
        err = info.value
        assert type(err) is error and err.phase is Phase(phase), repr(err)
        assert err.conversation_id == conv.conversation_id and conv.state is Phase.FAILED
        assert server.faults.fired[:1] == [fault]
        acct = server.accounting
        cid = conv.conversation_id
        if phase in ("settings",) or fault.kind == "create_then_error" or (phase == "create" and fault.kind != "stall"):
            assert cid is None and deletes(server, None) == []
        if fault.kind == "create_then_error":  # created, then answered an error: the client never learned its id
            assert acct.excused_ids()["create_then_error"] == acct.live_ids and acct.live == 1
            return
        if phase == "create" and fault.kind == "stall":  # it may exist and cannot be named: reported, not hidden
            assert cid is None and client.undeleted_conversations == 1
            return
        if phase == "delete":
            assert client.undeleted_conversations == 1 and err.status == (500 if fault.kind == "status" else None)
            if fault.kind == "status":
                assert len(deletes(server, cid)) >= 2  # retried until the budget, not given up at once
                assert acct.excused_ids()["delete_failed"] == {cid}
                return
            # The stalled requests are still acted upon once their stall ends: the first one deletes,
            # the retries the client sent meanwhile find it gone (404; the emulator counts those as
            # deleted twice, which is the server acting late, not the client deleting twice).
            await _eventually(lambda: acct.live == 0 and len(deletes(server, cid)) >= 2)
            assert deletes(server, cid).count(200) == 1
            return
        assert client.undeleted_conversations == 0
        if fault.kind == "stall" and phase in ("settings", "send"):
            await _eventually(lambda: server.accounting.live == 0)  # the stalled request ends on its own
        assert_clean(server, *([cid] if cid else []))
        if phase == "send" and fault.kind == "status":
            assert acct.stops == 0  # refused: nothing generates, nothing to stop
        if phase == "stream" and fault.kind == "stall":
            assert acct.stopped_running == 1  # it was still running: stopped before the DELETE
            stop_then_delete(server, cid)
        if phase == "stream" and fault.kind == "error_event":
            assert "model overloaded" in err.message and err.status == 503
            assert acct.stops == 0  # the server ended the run itself: nothing to stop


async def _eventually(check: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------- stop-generating faults
@pytest.mark.parametrize("kind", ["status", "stall"])
async def test_a_failed_stop_never_hides_the_real_error_and_the_delete_still_runs(transport: str, kind: str) -> None:
    fault = Fault("stop", kind, status=500, seconds=1.0, count=-1)
    stall = Fault("stream", "stall", at_token=2, seconds=2.0)
    with chatui([stall, fault], max_tokens=8) as server:
        log = structlog.get_logger()
        with structlog.testing.capture_logs() as logs:
            async with client_for(server, transport, timeouts=SHORT, logger=log) as client:
                conv = client.conversation()
                with pytest.raises(H2oTimeoutError) as info:
                    async with conv:
                        await conv.ask("x")
        assert info.value.phase is Phase.STREAM and info.value.cleanup_error is None
        assert server.faults.fired.count(fault) >= 1
        failed = [e for e in logs if e["event"] == "stop_generating_failed"]
        assert len(failed) == 1
        said = "HTTP 500" if kind == "status" else f"within {SHORT.delete:.3g}s"  # the stop's own timeout
        assert said in failed[0]["error"]
        into_stop = [r for r in conv.history if r.dest is Phase.STOP]
        assert len(into_stop) == 1 and into_stop[0].status == (500 if kind == "status" else None)
        assert_clean(server, conv.conversation_id)


async def test_a_failed_stop_on_early_exit_still_deletes(transport: str) -> None:
    with chatui([Fault("stop", "status", status=503, count=-1)], max_tokens=100, token_delay=0.02) as server:
        async with client_for(server, transport) as client:
            async with client.conversation() as conv:
                turn = conv.stream("x")
                async for _ in turn:
                    break
                await turn.aclose()
            assert conv.state is Phase.CLOSED
        assert len(server.accounting.requests_for("POST", f"/conversation/{conv.conversation_id}/stop")) >= 1
        assert_clean(server, conv.conversation_id)


# ---------------------------------------------------------------- abandonment mid-stream
def slow() -> AbstractContextManager[LocalServer]:
    return chatui(max_tokens=100, token_delay=0.03)


def assert_stopped_and_deleted(server: LocalServer, cid: str | None) -> None:
    assert cid is not None
    assert server.accounting.stopped_running == 1, server.accounting.snapshot()
    stop_then_delete(server, cid)
    assert_clean(server, cid)
    assert len(server.accounting.messages(cid)[-1].content.split()) < 100  # the generation did not run on


async def test_consumer_break_stops_then_deletes(transport: str) -> None:
    with slow() as server:
        async with client_for(server, transport) as client, client.conversation() as conv:
            turn = conv.stream("x")
            async for _ in turn:
                break
            await turn.aclose()
            assert conv.state is Phase.CLOSED
        assert [r.trigger for r in conv.history][-3:] == ["close", "stopped", "deleted"]
        assert_stopped_and_deleted(server, conv.conversation_id)


async def test_task_cancel_stops_then_deletes_in_the_clients_task(transport: str) -> None:
    with slow() as server:
        async with client_for(server, transport) as client:
            conv = client.conversation()
            got: list[str] = []
            three = asyncio.Event()

            async def consume() -> None:
                async with conv:
                    async for chunk in conv.stream("x"):
                        got.append(chunk)
                        if len(got) == 3:
                            three.set()

            task = asyncio.create_task(consume())
            await asyncio.wait_for(three.wait(), 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert conv.state is Phase.FAILED
        assert_stopped_and_deleted(server, conv.conversation_id)


async def test_timeout_around_the_caller_stops_then_deletes(transport: str) -> None:
    with slow() as server:
        async with client_for(server, transport) as client:
            conv = client.conversation()
            with pytest.raises(TimeoutError):
                async with caller_timeout(0.3):
                    async with conv:
                        await conv.ask("x")
        assert conv.state is Phase.FAILED
        assert_stopped_and_deleted(server, conv.conversation_id)


async def test_an_exception_in_the_callers_loop_body_stops_then_deletes(transport: str) -> None:
    with slow() as server:
        async with client_for(server, transport) as client:
            conv = client.conversation()
            with pytest.raises(RuntimeError, match="the caller's own bug"):
                async with conv:
                    async for _ in conv.stream("x"):
                        raise RuntimeError("the caller's own bug")
        assert conv.state is Phase.FAILED
        assert_stopped_and_deleted(server, conv.conversation_id)


async def test_error_event_fails_the_turn_then_one_delete(transport: str) -> None:
    with chatui([Fault("stream", "error_event", at_token=3, status=429)]) as server:
        async with client_for(server, transport) as client:
            with pytest.raises(H2oUpstreamError) as info:
                async for _ in client.stream("x"):
                    pass
        err = info.value
        assert err.phase is Phase.STREAM and err.status == 429 and "model overloaded" in str(err)
        assert server.accounting.stops == 0  # the server ended the run itself: nothing to stop
        assert_clean(server, err.conversation_id)


# ---------------------------------------------------------------- login and cookies
SECRET = "tok-3f9a1c55d2e84b7e-SECRET"


async def test_login_required_401_without_cookies_works_with_them_and_never_shows_them(transport: str) -> None:
    with chatui(required_cookies={"token": SECRET}) as server:
        async with client_for(server, transport) as client:
            with pytest.raises(H2oStatusError) as info:
                await client.ask("x")
        assert info.value.status == 401 and info.value.phase is Phase.CREATE
        assert "logged in" in str(info.value) and server.accounting.created == 0

        with structlog.testing.capture_logs() as logs:
            async with client_for(server, transport, cookies={"token": SECRET}, logger=structlog.get_logger(),
                                  log_content=True) as client:
                assert await client.ask("hello") == answer([("user", "hello")])
                server.faults.add(Fault("send", "status", status=500))
                with pytest.raises(H2oStatusError) as failed:
                    await client.ask("again")
                assert SECRET not in repr(client)
        assert failed.value.phase is Phase.SEND
        for shown in (str(failed.value), repr(failed.value), failed.value.body or "", repr(logs)):
            assert SECRET not in shown
        assert any(e["event"] == "transition" for e in logs)  # something was logged, without the secret
        assert_clean(server)


async def test_concurrent_first_conversations_share_one_new_session(transport: str) -> None:
    """A fresh client has no session yet: the first create starts it (the server sets its cookie) and
    the others wait for that answer, instead of each starting a session the client cannot keep."""
    with chatui() as server:
        async with client_for(server, transport) as client:
            answers = await asyncio.gather(*(client.ask(f"q{i}") for i in range(20)))
        assert answers == ["".join(generate([("user", f"q{i}")], 8)) for i in range(20)]
        acct = server.accounting
        assert acct.created == acct.deleted == 20 and acct.live == 0 and acct.deleted_twice == 0
