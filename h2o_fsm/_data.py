"""Plain data of one conversation, kept by its :class:`~h2o_fsm._driver.Driver`: what the conversation is
(:class:`ConversationData`), what its current turn is (:class:`TurnData`) and what the transition running
now did (:class:`TransitionData`). No behaviour here: the state callbacks (``_steps``), the stream reader
(``_reader``) and the driver read and write these fields; every field has a reader."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ._phase import Phase

if TYPE_CHECKING:
    import httpx

    from ._dialects import DialectState
    from ._events import FinalAnswer
    from ._exceptions import H2oCleanupError
    from ._log import Logger
    from ._protocol import Parameters
    from ._reattach import Resume
    from ._records import TransitionRecord
    from ._session import Session
    from ._stream import Parser
    from ._tail import Tail

__all__ = ["ConversationData", "TransitionData", "TurnData"]


@dataclasses.dataclass(eq=False, slots=True)
class ConversationData:
    """What the conversation is: given at its start, or learned from the server, kept to its end."""

    model: str  # the LLM that answers ("": the server's default, looked up by the first settings step)
    parameters: Parameters
    session: Session
    log: Logger  # bound to the conversation's id once the server named it
    dstate: DialectState  # the dialect's own protocol state (made again by the first turn)
    cid: str | None = None  # the server's id, once create succeeded (or attached)
    records: list[TransitionRecord] = dataclasses.field(default_factory=list)  # the history
    error: BaseException | None = None  # what ended it, if anything did
    cleanup_error: H2oCleanupError | None = None  # its DELETE failed (or never ran)


@dataclasses.dataclass(eq=False, slots=True)
class TurnData:
    """The current (or last) turn: its prompt, its deadline, its answer's stream. One object for the
    conversation's life, set afresh by each turn: ``prompt`` by ``queue``/``turn``, ``deadline`` by the
    driver's ``start_turn``, ``delivered``/``resume`` by the reader when the stream starts, the stream's
    fields by the ``send``/``stream`` steps; ``final`` and ``generating`` hold until the next answer."""

    prompt: str | None = None
    prompt_pending: bool = False  # queued for the next send, not sent yet
    generating: bool = False  # a send reached the server and its answer was not read to the end
    deadline: float | None = None  # loop time by which the turn must be over (``Timeouts.total``)
    response: httpx.Response | None = None  # the answer's stream, while it is read
    parser: Parser | None = None
    send_status: int | None = None
    stream_t0: float = 0.0  # when the stream state was entered (``finish`` is charged from there)
    delivered: int = 0  # characters of answer text the caller got
    resume: Resume | None = None  # chat-ui: this answer's reattaching, after a cut
    final: FinalAnswer | None = None  # the last complete answer
    tail: Tail | None = None  # the stream once its answer is complete, until a task of the client reads it


@dataclasses.dataclass(eq=False, slots=True)
class TransitionData:
    """What the transition running now did (reset when it starts; its history record is made of it)."""

    source: Phase = Phase.NEW
    t0: float = 0.0
    status: int | None = None
    headers: httpx.Headers | None = None  # the answer's (what the stepper shows)
    skipped: bool = False
    retries: int = 0  # how often the step's request was sent again
