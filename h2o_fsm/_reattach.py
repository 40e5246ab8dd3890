"""The reattach step (chat-ui, a state of the table): the answer's connection dropped while the server
goes on generating, so ask for the run's event log (``GET /conversation/{id}/stream``) and read the
answer on from there.

The log is replayed from the start (its seq numbers do not match the answer's lines: keepAlive is not
logged and tokens coalesce), through the dialect's :class:`~h2o_fsm._stream.ResumingParser` that
skips exactly the characters the caller already got; after a plain close of that stream the next
reattach reconnects with ``Last-Event-ID``. A server without the endpoint (404) refuses: the turn then
fails as it would have without reattaching (see ``_resume``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Final, cast

from ._exceptions import H2oStatusError
from ._phase import Phase

if TYPE_CHECKING:
    from transitions.core import EventData

    from ._driver import Driver
    from ._stream import ResumingParser

__all__ = ["MAX_REATTACHES", "Resume", "reattach"]

MAX_REATTACHES: Final = 3
"""Reattaches one answer may make (each bounded by ``Timeouts.send``, all by ``Timeouts.total``)."""


@dataclasses.dataclass
class Resume:
    """One answer's reattaching: the cut that started it (what the caller sees if reattaching cannot
    help), how many reattaches were made, and why the server refused, if it did."""

    cause: Exception
    attempts: int = 0
    refused: str | None = None
    parser: ResumingParser | None = None  # the reattach stream's, once the first reattach made it


async def reattach(event: EventData) -> None:
    """The state's ``on_enter``: one ``GET /conversation/{id}/stream``; the answer is read on from it."""
    d = cast("Driver", event.model)
    conv, turn = d.conv, d.turn
    assert conv.cid is not None and isinstance(turn.resume, Resume)
    state = turn.resume
    parser = state.parser
    headers = None
    if parser is not None:  # reconnecting: from the last event this reattach read
        parser.reconnect()
        if parser.last_id is not None:
            headers = {"Last-Event-ID": parser.last_id}
    else:  # replay from the start, skipping what the caller got from the answer's own stream
        turn.parser = state.parser = d.rt.dialect.resume_parser(turn.parser, turn.delivered, d.rt.limits.max_line_bytes)
    state.attempts += 1
    query = d.rt.dialect.reattach_query(conv.dstate)
    rq = d.rt.requester
    async with rq.step(Phase.REATTACH, turn.deadline, conv.cid):
        try:
            response = await rq.call(Phase.REATTACH, session=conv.session, cid=conv.cid, query=query, headers=headers)
        except H2oStatusError as exc:
            if exc.status != 404:
                raise
            d.transition.status = 404
            state.refused = "the server cannot reattach (no such endpoint, or the conversation is gone): 404"
            return
    d.transition.status = response.status_code
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        await rq.drain(response)
        state.refused = f"the server answered the reattach with {response.headers.get('content-type')!r}"
        return
    turn.response = response
