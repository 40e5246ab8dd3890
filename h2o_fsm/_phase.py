"""The states of a conversation (also used as the ``phase`` of errors)."""

from __future__ import annotations

import enum

__all__ = ["Phase"]


class Phase(str, enum.Enum):
    """A state of the conversation machine.

    The protocol steps (``SETTINGS``, ``CREATE``, ``FETCH``, ``SEND``, ``STREAM``, ``REATTACH``, ``STOP``,
    ``DELETE``)
    are states; ``NEW`` is the initial state, ``READY`` rests between turns, ``CLOSED`` and ``FAILED``
    are terminal. What each state does is written in the table (``_table.STATES``).
    """

    NEW = "new"
    SETTINGS = "settings"
    CREATE = "create"
    FETCH = "fetch"
    SEND = "send"
    STREAM = "stream"
    REATTACH = "reattach"
    STOP = "stop"
    READY = "ready"
    DELETE = "delete"
    CLOSED = "closed"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self is Phase.CLOSED or self is Phase.FAILED

    def __str__(self) -> str:
        return self.value
