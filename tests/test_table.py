"""One state, one row (issue 15, item 2): what the table's columns promise, and that the engine keeps it."""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest

from h2o_fsm import H2oClient, Phase, Timeouts
from h2o_fsm._table import DELETE_OK, SPEC, STATES, TRANSITIONS, TimeoutKey, destination, seconds
from h2o_fsm.server import LocalServer, ServerConfig


def _edges(trigger: str, source: Phase) -> list[tuple[Phase, str | None]]:
    return [(e.dest, e.conditions) for e in TRANSITIONS if e.trigger == trigger and source in e.sources]


@pytest.mark.parametrize("spec", [s for s in STATES if not s.phase.is_terminal], ids=lambda s: s.phase.value)
def test_every_state_has_its_ending_edges_from_its_ends_column(spec: object) -> None:
    assert isinstance(spec, type(STATES[0]))
    close, abort = _edges("close", spec.phase), _edges("abort", spec.phase)
    if spec.cleanup:  # the ending itself: no second ending, its `next` leads on to a terminal state
        assert close == abort == []
        phase = spec.phase
        for _ in STATES:
            if phase.is_terminal:
                break
            nxt = SPEC[phase].next
            assert nxt is not None
            phase = _edges(nxt, phase)[-1][0]
        assert phase.is_terminal
        return
    assert close and abort, f"{spec.phase.value} lacks close or abort"
    if spec.ends is None:
        assert close == [(Phase.CLOSED, None)] and abort == [(Phase.FAILED, None)]
    else:
        assert close[0] == abort[0] == (spec.ends, spec.ends_if)
        if spec.ends_if is not None:  # without the guard, nothing to clean
            assert close[1:] == [(Phase.CLOSED, None)] and abort[1:] == [(Phase.FAILED, None)]


def test_destination_honours_the_guards() -> None:
    assert destination(Phase.DELETE, "deleted", {"has_error": True}.__getitem__) is Phase.FAILED
    assert destination(Phase.DELETE, "deleted", {"has_error": False}.__getitem__) is Phase.CLOSED
    assert destination(Phase.CREATE, "abort", {"created": False}.__getitem__) is Phase.FAILED
    assert destination(Phase.CREATE, "abort", {"created": True}.__getitem__) is Phase.DELETE
    assert destination(Phase.SETTINGS, "create") is Phase.CREATE  # unguarded: no guard needed
    # `start` from `new` is guarded since attach (an attached conversation is created already)
    assert destination(Phase.NEW, "start", {"created": False}.__getitem__) is Phase.SETTINGS
    assert destination(Phase.NEW, "start", {"created": True}.__getitem__) is Phase.READY
    with pytest.raises(ValueError, match="created"):
        destination(Phase.NEW, "start")
    with pytest.raises(ValueError, match="has_error"):
        destination(Phase.DELETE, "deleted")
    assert destination(Phase.NEW, "finish") is None


def test_timeout_keys_are_typed_and_cover_the_table() -> None:
    t = Timeouts(settings=1, create=2, fetch=3, send=4, token=5, delete=6)
    for key in get_args(TimeoutKey):
        assert seconds(t, key) == getattr(t, key)
    fields = {f.name for f in dataclasses.fields(Timeouts)}
    assert set(get_args(TimeoutKey)) <= fields
    assert {s.timeout for s in STATES if s.timeout} | {s.gap for s in STATES if s.gap} <= set(get_args(TimeoutKey))
    assert [s.phase for s in STATES if s.gap] == [Phase.SEND, Phase.REATTACH]  # the token gap: their answers' reads


def test_statuses_and_budgets_are_columns() -> None:
    assert DELETE_OK is SPEC[Phase.DELETE].ok and 404 in DELETE_OK
    assert 303 in SPEC[Phase.SETTINGS].ok and SPEC[Phase.CREATE].ok == (200,)
    shares = {s.phase: s.budget for s in STATES if s.budget != 1.0}
    assert shares == {Phase.STOP: 0.5}  # the stop leaves the DELETE at least half of the ending's budget
    assert all(SPEC[p].cleanup for p in shares)
    for spec in STATES:  # a skip guard only where a step may be skipped
        assert spec.skip is None or spec.request is not None


async def test_the_stepper_announces_a_skipped_fetch_as_skipped_on_chat_ui() -> None:
    """The stepper and the step runner evaluate one skip rule: on chat-ui the create's answer names the
    root message, so the first fetch is announced as skipped, and is; the second turn's is performed."""
    with LocalServer(ServerConfig(max_tokens=3), dialect="chat-ui") as server:
        async with H2oClient(server.url, dialect="chat-ui") as client:
            conv = client.conversation()
            conv.queue("Hi")
            seen: list[tuple[Phase, str, bool]] = []
            while conv.state is not Phase.READY:
                said = conv.describe_next()
                result = await conv.step()
                seen.append((result.state, said, result.skipped))
            conv.queue("Again")
            said = conv.describe_next()
            result = await conv.step()
            seen.append((result.state, said, result.skipped))
            await conv.aclose()
    fetches = [(said, skipped) for state, said, skipped in seen if state is Phase.FETCH]
    assert len(fetches) == 2
    (first, first_skipped), (second, second_skipped) = fetches
    assert first.startswith("GET ") and first.endswith("(skipped)") and first_skipped
    assert second.startswith("GET ") and not second.endswith("(skipped)") and not second_skipped
    assert all(said.endswith("(skipped)") == skipped for _, said, skipped in seen)
    assert server.accounting.live == 0
