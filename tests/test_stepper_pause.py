"""The stepper after a failing step: the conversation waits at the failure (the server's state then is what
one debugs), each next step runs one step of its ending, and everything else that ends a conversation
still ends it — one DELETE. A step's result shows its answer's status and headers, never a cookie."""

from __future__ import annotations

import asyncio

import pytest
from support import FAST_RETRIES, assert_clean, caller_timeout, emulator

from h2o_fsm import H2oClient, H2oError, H2oStatusError, Phase
from h2o_fsm.server import DialectName, Fault, LocalServer, ServerConfig

DIALECTS: list[DialectName] = ["h2o", "chat-ui"]


def deletes(server: LocalServer) -> int:
    return len(server.accounting.requests_for("DELETE"))


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_failed_send_waits_then_each_step_runs_one_step_of_the_ending(dialect: DialectName) -> None:
    with emulator(ServerConfig(max_tokens=4), [Fault("send", "status", status=500)], dialect=dialect) as server:
        async with H2oClient(server.url, dialect=dialect, retries=FAST_RETRIES) as client:
            async with client.conversation() as conv:
                conv.queue("Hi")
                for _ in range(3):
                    await conv.step()
                with pytest.raises(H2oStatusError) as failed:
                    await conv.step()
                err = failed.value
                assert err.status == 500 and err.phase is Phase.SEND
                assert dict(err.headers)["content-type"].startswith("application/json")
                assert "injected fault" in err.body and len(err.body) <= 4096
                # paused at the failure: the conversation is still on the server, nothing deleted
                await asyncio.sleep(0.2)  # (an ending that ran on by itself would have deleted by now)
                assert conv.state is Phase.SEND and server.accounting.live == 1 and deletes(server) == 0
                assert conv.next_trigger() == "abort"
                assert "stop-generating" in conv.describe_next()  # the ending's first step
                stop = await conv.step()
                assert stop.state is Phase.STOP and stop.trigger == "abort" and stop.skipped  # nothing runs
                assert deletes(server) == 0
                assert conv.describe_next().startswith("DELETE ") and conv.conversation_id in conv.describe_next()
                delete = await conv.step()
                assert delete.state is Phase.DELETE and delete.status in (200, 204) and deletes(server) == 1
                assert conv.describe_next().startswith("end")
                last = await conv.step()
                assert last.state is Phase.FAILED and conv.state.is_terminal
            assert conv.error is err
        assert deletes(server) == 1
        assert_clean(server)


async def test_a_failed_create_waits_then_ends_without_a_delete() -> None:
    with emulator(ServerConfig(max_tokens=4), [Fault("create", "status", status=503)]) as server:
        async with H2oClient(server.url, retries=FAST_RETRIES) as client, client.conversation() as conv:
            conv.queue("Hi")
            await conv.step()
            with pytest.raises(H2oStatusError):
                await conv.step()
            assert conv.state is Phase.CREATE and conv.conversation_id is None
            assert conv.describe_next().startswith("end: nothing to send")
            assert (await conv.step()).state is Phase.FAILED
        assert deletes(server) == 0 and server.accounting.created == 0


HOW = ["leave-with-error", "leave-normally", "aclose", "cancel", "caller-deadline", "client-aclose"]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("before_delete", [False, True])
async def test_a_paused_ending_still_ends_one_delete(how: str, before_delete: bool) -> None:
    """Whatever ends a conversation paused at a failure ends it (before its first ending step, or after
    the stop): exactly one DELETE, the conversation terminal, nothing left on the server."""
    await asyncio.wait_for(_end_paused(how, before_delete), 30)  # an ending that waits forever fails here


async def _end_paused(how: str, before_delete: bool) -> None:
    with emulator(ServerConfig(max_tokens=4), [Fault("send", "status", status=500)]) as server:
        client = H2oClient(server.url, retries=FAST_RETRIES)
        conv = client.conversation()

        async def drive() -> None:
            async with conv:
                conv.queue("Hi")
                for _ in range(3):
                    await conv.step()
                try:
                    await conv.step()
                except H2oStatusError:
                    if how == "leave-with-error":
                        raise
                if before_delete:
                    await conv.step()  # the stop: the DELETE is next
                if how == "aclose":
                    await conv.aclose()
                elif how in ("cancel", "caller-deadline", "client-aclose"):
                    await asyncio.sleep(30)  # a person at the pause

        if how == "leave-with-error":
            with pytest.raises(H2oStatusError):
                await drive()
        elif how == "cancel":
            task = asyncio.create_task(drive())
            await asyncio.sleep(0.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        elif how == "caller-deadline":
            with pytest.raises(TimeoutError):
                async with caller_timeout(0.8):
                    await drive()
        elif how == "client-aclose":
            task = asyncio.create_task(drive())
            await asyncio.sleep(0.5)
            assert conv.state is (Phase.STOP if before_delete else Phase.SEND)
            await client.aclose()
            assert conv.state.is_terminal and deletes(server) == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            await drive()
        await client.aclose()
        assert conv.state is Phase.FAILED
        assert deletes(server) == 1
        assert_clean(server)


async def test_a_step_shows_headers_and_never_a_cookie_value(server: LocalServer) -> None:
    async with H2oClient(server.url) as client, client.conversation() as conv:
        conv.queue("Hi")
        settings = await conv.step()  # the 2023 server answers 303 with a Location and its session cookie
        shown = dict(settings.headers)
        assert settings.status == 303 and "location" in shown and shown["set-cookie"] == "***"
        cookies = [v for v in conv._driver.conv.session.cookies.values() if len(v) >= 4]
        assert cookies and not any(c in repr(settings) for c in cookies)
        create = await conv.step()
        assert dict(create.headers)["content-type"].startswith("application/json")
        assert set(dict(create.headers)) <= {"content-type", "content-length", "location", "retry-after", "set-cookie"}


async def test_a_step_cut_by_the_client_closing_does_not_wait_it_is_deleted() -> None:
    """The client's aclose() cuts a step in flight: that failure is the client's end, not one to debug —
    the conversation ends at once (one DELETE) instead of waiting for steps nobody will take."""
    with emulator(ServerConfig(max_tokens=4), [Fault("send", "stall", seconds=5.0)]) as server:
        client = H2oClient(server.url, retries=FAST_RETRIES)
        conv = client.conversation()
        conv.queue("Hi")
        for _ in range(3):
            await conv.step()
        step = asyncio.create_task(conv.step())
        await asyncio.sleep(0.5)  # the send is stalled in the server
        await asyncio.wait_for(client.aclose(), 20)
        with pytest.raises(Exception):  # noqa: B017 - the step's own failure (the client closed under it)
            await step
        assert conv.state is Phase.FAILED and conv._driver.pause is None
        assert deletes(server) == 1 and client.undeleted_conversations == 0
        assert_clean(server)


async def test_the_client_closing_during_a_stepped_ending_step_ends_the_rest() -> None:
    """aclose() while one step of a paused ending runs (a slow DELETE): the rest of the ending follows
    without waiting for a step, one DELETE."""
    faults = [Fault("send", "status", status=500), Fault("delete", "stall", seconds=1.0)]
    with emulator(ServerConfig(max_tokens=4), faults) as server:
        client = H2oClient(server.url, retries=FAST_RETRIES)
        conv = client.conversation()
        conv.queue("Hi")
        for _ in range(3):
            await conv.step()
        with pytest.raises(H2oStatusError):
            await conv.step()
        await conv.step()  # the stop
        step = asyncio.create_task(conv.step())  # the DELETE, stalled by the server
        await asyncio.sleep(0.3)
        await asyncio.wait_for(client.aclose(), 20)
        await asyncio.wait_for(step, 5)
        assert conv.state is Phase.FAILED and deletes(server) == 1 and client.undeleted_conversations == 0
        assert_clean(server)


async def test_a_stream_broken_mid_answer_waits_then_stops_the_run_then_deletes() -> None:
    """chat-ui: the answer's stream breaks while the server still generates: the paused ending's first
    step is a real stop-generating (said by describe_next()), then the DELETE."""
    config = ServerConfig(max_tokens=50, token_delay=0.05)
    with emulator(config, [Fault("stream", "malformed", at_token=2)], dialect="chat-ui") as server:
        client = H2oClient(server.url, dialect="chat-ui", retries=FAST_RETRIES)
        async with client, client.conversation() as conv:
            conv.queue("Hi")
            while conv.state is not Phase.STREAM:
                await conv.step()
            with pytest.raises(H2oError):
                await conv.step()  # the read
            assert conv.state is Phase.STREAM and "stop-generating" in conv.describe_next()
            stops = len(server.accounting.requests_for("POST", "/conversation/" + str(conv.conversation_id)))
            stop = await conv.step()
            assert stop.state is Phase.STOP and not stop.skipped and stop.status == 200
            after = len(server.accounting.requests_for("POST", "/conversation/" + str(conv.conversation_id)))
            assert after == stops + 1 and deletes(server) == 0
            assert conv.describe_next().startswith("DELETE ")
            await conv.step()
            assert deletes(server) == 1
        assert_clean(server)
