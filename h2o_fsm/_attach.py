"""Attach and detach: a conversation that exists on the server continued by this client, and one left
on the server on purpose.

An attached conversation starts in ``new`` with its id known; the table's ``start`` then leads to
``ready`` (nothing to create) and its first turn reads the message tree (``fetch``, chat-ui) to hang
from its last message. Like every other it is deleted at its end — unless detached: ``detach`` ends
it in ``closed`` without a DELETE, removes it from the journal and logs ``conversation_detached``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from ._exceptions import H2oStateError
from ._history import note
from ._phase import Phase
from ._protocol import validate_conversation_id

if TYPE_CHECKING:
    from ._driver import Driver

__all__ = ["attach", "detach"]


def attach(d: Driver, conversation_id: str) -> None:
    """Make ``d`` (new, never used) the conversation ``conversation_id`` of the server."""
    if not isinstance(conversation_id, str):
        raise TypeError(f"conversation_id must be a str, not {type(conversation_id).__name__}")
    try:
        cid = validate_conversation_id(conversation_id)
    except ValueError:
        raise ValueError("conversation_id must be 1-64 characters of A-Z a-z 0-9 _ -") from None
    conv = d.conv
    if d.state is not Phase.NEW or conv.cid is not None or d.busy:
        raise H2oStateError("only a new conversation can be attached", phase=d.state, conversation_id=conv.cid)
    conv.cid = cid
    d.rt.live.add(d)  # from now on it is deleted at its end (the client's aclose() included)
    with contextlib.suppress(Exception):  # a failing log sink never stops the machine
        conv.log = conv.log.bind(conversation_id=cid)
        conv.log.info("conversation_attached")


async def detach(d: Driver) -> str:
    """End ``d`` without deleting it on the server; return its id."""
    cid = d.conv.cid
    if cid is None:
        raise H2oStateError("nothing to detach: the conversation does not exist on the server yet",
                            phase=d.state)
    if d.busy or d.transitioning or d.ending is not None or d.state.is_terminal:
        raise H2oStateError(f"cannot detach in state {d.state.value!r} (a turn running, or ended)",
                            phase=d.state, conversation_id=cid)
    await d.fire("detach")
    rt = d.rt
    if rt.journal is not None:
        try:
            await rt.journal.remove_async(rt.requester.base_url, cid)
        except Exception as exc:  # a sweep would delete it: say so
            note(d, "journal_failed", error=type(exc).__name__)
    note(d, "conversation_detached", level="info")
    return cid
