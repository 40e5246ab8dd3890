"""Reattaching (chat-ui) and the stream's tail together: a cut before the final answer reattaches and the
caller returns at the reattached answer's final event, the tail (the rest of the reattach stream) read by
the client's task before the one DELETE; a cut after the final answer is the tail's (logged, counted),
never a reattach into a caller that already returned. A stop of a reattached answer names the characters
the caller got, UTF-16 units as chat-ui counts them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import respx
from support import assert_clean, client_for
from test_chatui_steps_respx import BASE, CID, answer, client, jsonl, routes

from h2o_fsm import Phase, TransitionRecord
from h2o_fsm._dialects.chatui.resume import ResumeParser
from h2o_fsm.server import Fault, LocalServer, ServerConfig, generate
from h2o_fsm.server._app import state_of

N = 8
EXPECTED = "".join(generate([("user", "Hi")], N))


@pytest.mark.parametrize("at", [0, 3, N])
async def test_a_cut_before_the_final_answer_reattaches_and_the_tail_reads_the_reattach_stream(at: int) -> None:
    records: list[TransitionRecord] = []
    config = ServerConfig(max_tokens=N, token_delay=0.002, answer_tail=0.3)
    with LocalServer(config, faults=[Fault("stream", "cut", at_token=at)], dialect="chat-ui") as server:
        async with client_for(server, "httpx", on_transition=records.append) as client:
            assert await client.ask("Hi") == EXPECTED  # nothing lost, nothing twice
            assert records[-1].trigger == "finish" and len(server.accounting.requests_for("DELETE")) == 0
        triggers = [r.trigger for r in records]
        assert [r.dest for r in records].count(Phase.REATTACH) == 1 and server.accounting.reattaches == 1
        assert triggers[-4:] == ["finish", "tail", "close", "deleted"]  # the reattach stream's rest, then the end
        assert records[-3].error is None and client.tail_errors == 0 and client.undeleted_conversations == 0
        assert len(server.accounting.requests_for("DELETE")) == 1 and server.accounting.stops == 0
        assert state_of(server.app).overlapping_sends == 0
        assert_clean(server)


class _CutAfterTheAnswer(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        whole = answer("Hi", " there")
        yield whole[: whole.index(b"\n", whole.index(b"finalAnswer")) + 1]  # up to the final answer's line
        raise httpx.ReadError("connection reset")  # in the tail: the status line never comes


async def test_a_cut_after_the_final_answer_is_the_tail_s_never_a_reattach() -> None:
    records: list[TransitionRecord] = []
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router, stream=jsonl(_CutAfterTheAnswer()))
        stream = router.get(f"/conversation/{CID}/stream").respond(404)
        async with client(on_transition=records.append) as c:
            assert await c.ask("x") == "Hi there"
        assert stream.call_count == 0  # the caller had its answer: nothing to reattach
        assert c.tail_errors == 1 and c.undeleted_conversations == 0
        tail = [rec for rec in records if rec.trigger == "tail"]
        assert len(tail) == 1 and (tail[0].error or "").startswith("H2oTransportError")
        assert r["stop"].call_count == 0 and r["delete"].call_count == 1


def test_a_reattached_answer_s_stop_point_counts_what_the_caller_got_in_utf16() -> None:
    def frame(seq: int, update: dict[str, object]) -> bytes:
        return f"id: {seq}\nevent: update\ndata: {json.dumps(update)}\n\n".encode()

    parser = ResumeParser(skip=2, seen=3)  # the caller got "a😀": 2 characters, 3 UTF-16 units
    assert parser.answer_chars == 3
    assert parser.feed(frame(1, {"type": "stream", "token": "a"})) == []
    assert parser.answer_chars == 3  # still replaying what the caller had
    assert parser.feed(frame(2, {"type": "stream", "token": "😀é"})) == ["é"]
    assert parser.answer_chars == 4  # past it: the replay's own count, "a😀é"
