"""The states of a conversation (also used as the ``phase`` of errors)."""

from __future__ import annotations

import enum

__all__ = ["Phase"]


class Phase(str, enum.Enum):
    """A state of the conversation machine.

    The five protocol steps (``SETTINGS``, ``CREATE``, ``SEND``, ``STREAM``, ``DELETE``) are states;
    ``NEW`` is the initial state, ``READY`` rests between turns, ``CLOSED`` and ``FAILED`` are terminal.
    """

    NEW = "new"
    SETTINGS = "settings"
    CREATE = "create"
    SEND = "send"
    STREAM = "stream"
    READY = "ready"
    DELETE = "delete"
    CLOSED = "closed"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self is Phase.CLOSED or self is Phase.FAILED

    def __str__(self) -> str:
        return self.value
