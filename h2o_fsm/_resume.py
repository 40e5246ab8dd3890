"""When the answer's stream breaks, whether to reattach, and the transition that does it (the table's
``reattach``): what the stream reader calls instead of failing at once.

Reattached only: a chat-ui client (its dialect performs ``reattach``), a connection that dropped or
closed before the final answer (not a timeout, a malformed line or a limit), while the turn's
deadline holds, at most :data:`~h2o_fsm._reattach.MAX_REATTACHES` times per answer. Otherwise — and
when the server refuses (404), has no run (``event: end`` ``gone``) or the reattach request fails —
the turn fails with the error of the first cut, as it would have without reattaching: stop, delete.
Only a timeout of the reattach step (its bound, the turn's deadline) and the client closing during it
are raised as themselves.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ._exceptions import H2oError, H2oStateError, H2oTimeoutError, H2oTransportError
from ._machine import MACHINE
from ._phase import Phase
from ._reattach import MAX_REATTACHES, Resume
from ._stream import ResumeClosed, ResumeEnded, StreamSyntaxError
from ._table import VALID_TRIGGERS
from ._translate import translate

if TYPE_CHECKING:
    from ._driver import Driver

__all__ = ["resume"]


def _dropped(d: Driver, exc: Exception, ended: bool) -> bool:
    """Whether ``exc`` means the connection went away before the final answer (worth a reattach)."""
    if isinstance(exc, ResumeClosed):
        return True
    if isinstance(exc, (ResumeEnded, asyncio.TimeoutError)):
        return False
    if isinstance(exc, StreamSyntaxError):  # only the end of a body without its final answer
        return ended and d.turn.parser is not None and d.turn.parser.final is None
    err = translate(exc, Phase.STREAM, d.conv.cid)
    return isinstance(err, H2oTransportError) and not isinstance(err, H2oTimeoutError)


async def resume(d: Driver, exc: Exception, *, ended: bool = False) -> Exception | None:
    """Reattach after ``exc`` broke the answer's stream: ``None`` when the answer goes on from
    ``d.turn.response`` and ``d.turn.parser``, else the error the turn must fail with."""
    state = d.turn.resume
    cause = state.cause if state is not None else exc
    if Phase.REATTACH not in d.rt.performs or not _dropped(d, exc, ended):
        return cause
    if state is None:
        state = d.turn.resume = Resume(exc)
    loop = asyncio.get_running_loop()
    late = d.turn.deadline is not None and d.turn.deadline <= loop.time()
    if state.refused is not None or state.attempts >= MAX_REATTACHES or late:
        return cause
    if "reattach" not in VALID_TRIGGERS[d.state] or d.transitioning:
        return cause
    d.transitioning = True
    try:
        await MACHINE.events["reattach"].trigger(d)
    except (H2oTimeoutError, H2oStateError):  # a bound, the deadline, the client closing: reported as such
        raise
    except Exception as err:  # the reattach could not help (its history record says why): the cut's error
        state.refused = err.message if isinstance(err, H2oError) else type(err).__name__
    finally:
        d.transitioning = False
    return cause if state.refused is not None or d.turn.response is None else None
