"""The composition behind :class:`Conversation` (issue 15 item 4), seen from outside: the public face holds
nothing the engine needs, so dropping it loses no ending; the machine moves only the driver; a weakref to a
conversation works; what a conversation is (history, final, error, cleanup_error, model) reads through it."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
from support import FAST_RETRIES, FAST_TIMEOUTS, assert_clean, emulator

from h2o_fsm import H2oCleanupError, H2oClient, H2oStatusError, H2oSyncClient, Phase
from h2o_fsm._driver import Driver
from h2o_fsm._machine import MACHINE
from h2o_fsm.server import Dialect, Fault, LocalServer, ServerConfig

DIALECTS: list[Dialect] = ["h2o", "chat-ui"]


def deletes(server: LocalServer) -> int:
    return len(server.accounting.requests_for("DELETE"))


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_dropped_conversation_is_still_ended_by_the_clients_aclose(dialect: Dialect) -> None:
    """Nothing but the caller holds the Conversation: once it is collected, its driver (in the client's live
    set) still exists on the server, and ``client.aclose()`` deletes it — once."""
    with emulator(ServerConfig(max_tokens=4), dialect=dialect) as server:
        client = H2oClient(server.url, dialect=dialect, retries=FAST_RETRIES, timeouts=FAST_TIMEOUTS)
        conv = client.conversation()
        assert await conv.ask("Hi")
        ref = weakref.ref(conv)
        del conv
        gc.collect()
        assert ref() is None  # the public face is gone ...
        assert client.live_conversations == 1 and server.accounting.live == 1  # ... its conversation is not
        await client.aclose()
        assert client.live_conversations == 0 and client.undeleted_conversations == 0
        assert deletes(server) == 1
        assert_clean(server)


async def test_a_dropped_attached_conversation_is_still_deleted_by_the_clients_aclose() -> None:
    """An attached conversation (never created by this client) is in the live set from ``attach``: dropping its
    face before any turn still leaves its DELETE to ``client.aclose()``."""
    with emulator(ServerConfig(max_tokens=4)) as server:
        client = H2oClient(server.url, retries=FAST_RETRIES, timeouts=FAST_TIMEOUTS)
        async with client.conversation() as conv:  # (attaching is within this client's session)
            await conv.open()
            cid = await conv.detach()
        assert server.accounting.live == 1 and deletes(server) == 0 and client.live_conversations == 0
        attached = client.conversation(conversation_id=cid)
        ref = weakref.ref(attached)
        del attached
        gc.collect()
        assert ref() is None and client.live_conversations == 1
        await client.aclose()
        assert deletes(server) == 1 and client.undeleted_conversations == 0
        assert_clean(server)


async def test_the_machine_moves_only_drivers_and_registers_nothing(server: LocalServer,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Every trigger (and the forced ``failed``) moves a Driver; no model is registered
    with the shared machine; the public face has none of the machine's hooks (guards, prepare/finalize)."""
    moved: list[Any] = []
    set_state = MACHINE.set_state

    def spy(state: Any, model: Any = None) -> None:
        moved.append(model)
        set_state(state, model=model)

    monkeypatch.setattr(MACHINE, "set_state", spy)  # the forced ``failed``
    # every trigger's model, as its prepare_event callbacks (a public list of the machine) see it
    monkeypatch.setattr(MACHINE, "prepare_event", [*MACHINE.prepare_event, lambda event: moved.append(event.model)])
    async with H2oClient(server.url, retries=FAST_RETRIES) as client:
        async with client.conversation() as conv:
            await conv.ask("Hi")
            await conv.ask("Again")
        assert conv.state is Phase.CLOSED
    assert moved and all(type(m) is Driver for m in moved)
    assert len({id(m) for m in moved}) == 1  # one conversation, one driver
    assert not [m for m in MACHINE.models if m is not MACHINE]  # nothing registered (no per-model bindings)
    for hook in ("prepare", "finalize", "created", "has_error", "transition", "trigger"):
        assert not hasattr(conv, hook), hook
    assert_clean(server)


async def test_a_weakref_to_a_conversation_works_and_an_ended_one_is_collected(server: LocalServer) -> None:
    async with H2oClient(server.url, retries=FAST_RETRIES) as client:
        conv = client.conversation()
        ref, alive = weakref.ref(conv), weakref.WeakSet([conv])
        assert ref() is conv and conv in alive
        async with conv:
            assert await conv.ask("Hi")
        assert conv.state is Phase.CLOSED
        del conv
        gc.collect()
        assert ref() is None and not alive  # an ended conversation keeps nothing of itself alive
        assert client.live_conversations == 0
    assert_clean(server)


async def test_history_final_error_and_model_read_through_the_public_face(server: LocalServer) -> None:
    async with H2oClient(server.url, retries=FAST_RETRIES) as client:
        async with client.conversation() as conv:
            assert conv.history == () and conv.final is None and conv.error is None
            answer = await conv.ask("Hi")
            assert conv.final is not None and conv.final.generated_text == answer
            assert conv.model and repr(conv).endswith(f"model={conv.model!r}>")
            seen = conv.history
            assert seen and seen[-1].dest is Phase.READY and seen[-1].conversation_id == conv.conversation_id
            assert isinstance(seen, tuple) and conv.history is not seen  # a snapshot, not the live list
        assert conv.error is None and conv.cleanup_error is None
        assert conv.history[-1].dest is Phase.CLOSED and len(conv.history) > len(seen)
    assert_clean(server)


async def test_a_failed_turn_shows_its_error_through_the_public_face() -> None:
    with emulator(ServerConfig(max_tokens=4), [Fault("send", "status", status=500)]) as server:
        async with H2oClient(server.url, retries=FAST_RETRIES) as client:
            conv = client.conversation()
            with pytest.raises(H2oStatusError) as failed:
                async with conv:
                    await conv.ask("Hi")
            assert conv.error is failed.value and conv.state is Phase.FAILED
            assert conv.cleanup_error is None and deletes(server) == 1
        assert_clean(server)


async def test_a_failed_delete_is_the_cleanup_error_and_aclose_raises_it() -> None:
    with emulator(ServerConfig(max_tokens=4), [Fault("delete", "status", status=403, count=-1)]) as server:
        async with H2oClient(server.url, retries=FAST_RETRIES, timeouts=FAST_TIMEOUTS) as client:
            conv = client.conversation()
            await conv.ask("Hi")
            with pytest.raises(H2oCleanupError) as failed:
                await conv.aclose()
            assert conv.cleanup_error is failed.value and conv.error is None
            assert conv.state is Phase.FAILED  # (the table: a failed DELETE ends in failed)
            await conv.aclose()  # idempotent: ended, nothing raised twice, no second DELETE
            assert deletes(server) == 1 and client.undeleted_conversations == 1


def test_the_sync_face_reads_the_same_attributes() -> None:
    """``SyncConversation`` bridges public attributes by name (``__getattr__``): those of the face."""
    with emulator(ServerConfig(max_tokens=4)) as server, H2oSyncClient(server.url, retries=FAST_RETRIES) as client:
        with client.conversation() as conv:
            answer = conv.ask("Hi")
            assert conv.final is not None and conv.final.generated_text == answer
            assert conv.error is None and conv.cleanup_error is None and conv.model
            assert conv.history[-1].dest is Phase.READY
        assert conv.state is Phase.CLOSED
        assert_clean(server)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_each_record_has_only_its_own_transitions_status_and_retries(dialect: Dialect) -> None:
    """What a transition did is reset when the next one starts (``prepare``): a retried DELETE's retries and
    status never leak into the next record, and steps that send nothing record no status."""
    with emulator(ServerConfig(max_tokens=4), [Fault("delete", "status", status=503)], dialect=dialect) as server:
        async with H2oClient(server.url, dialect=dialect, retries=FAST_RETRIES) as c, c.conversation() as conv:
            await conv.ask("Hi")
            await conv.ask("Again")
        history = conv.history
        delete = next(r for r in history if r.dest is Phase.DELETE)
        assert delete.retries == 1 and delete.status in (200, 204)
        assert sum(r.retries for r in history) == 1 and deletes(server) == 2
        for r in history:
            if r.skipped or r.dest in (Phase.STREAM, Phase.READY, Phase.CLOSED):
                assert r.status is None, r
        assert history[-1].dest is Phase.CLOSED
        assert_clean(server)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_one_shot_leaves_one_task_after_its_answer_the_ending_that_reads_its_tail(dialect: Dialect) -> None:
    """``ask`` returns at the answer; its tail and DELETE go on in *one* task the client owns (the ending
    reads the tail itself: a task per one-shot less than a turn's tail task plus its ending), in order."""
    records: list[Any] = []
    with emulator(ServerConfig(max_tokens=4), dialect=dialect) as server:
        async with H2oClient(server.url, dialect=dialect, retries=FAST_RETRIES, timeouts=FAST_TIMEOUTS,
                             on_transition=records.append) as client:
            assert await client.ask("Hi")
            owned = [t for t in client._rt.tasks if not t.done()]
            assert len(owned) == 1  # the ending; no tail task beside it
            await owned[0]
            assert [r.trigger for r in records][-4:] == ["finish", "tail", "close", "deleted"]
            assert all(r.error is None for r in records)
        assert deletes(server) == 1
        assert_clean(server)
