"""What a conversation reports about itself: one record per transition, one result per step."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from ._phase import Phase

__all__ = ["StepResult", "TransitionRecord"]


class TransitionRecord(NamedTuple):
    """One entry of a conversation's history (and one log line / trace record). Immutable; a
    ``NamedTuple`` because seven are made per conversation (a frozen dataclass costs ~6x more).

    ``duration_ms`` is the time the transition took, which includes the HTTP request performed on
    entering ``dest``; for ``finish`` (leaving ``stream``) it is the time spent reading the stream.
    """

    source: Phase
    dest: Phase
    trigger: str
    duration_ms: float
    status: int | None = None
    error: str | None = None
    skipped: bool = False
    conversation_id: str | None = None
    request: str | None = None
    retries: int = 0  # the step's request was sent again this many times (the table's retry policy)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict (the ``--trace`` record)."""
        return {
            "conversation_id": self.conversation_id,
            "source": self.source.value,
            "dest": self.dest.value,
            "trigger": self.trigger,
            "duration_ms": round(self.duration_ms, 3),
            "status": self.status,
            "error": self.error,
            "skipped": self.skipped,
            "request": self.request,
            "retries": self.retries,
        }


@dataclasses.dataclass(frozen=True)
class StepResult:
    """What one :meth:`Conversation.step` did. ``headers``: the answer's headers worth showing, scrubbed
    (``(name, value)`` pairs; a ``set-cookie`` only named). A failed step raises its error instead (an
    :class:`~h2o_fsm.H2oStatusError` carries ``status``, ``headers`` and the scrubbed ``body``)."""

    state: Phase
    trigger: str
    request: str | None
    status: int | None
    elapsed_ms: float
    skipped: bool = False
    text: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
