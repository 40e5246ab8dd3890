"""The bound of one step: a deadline from its row's timeout and the turn's, translated to the
engine's errors when it fires."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import TYPE_CHECKING

from ._aio import Deadline
from ._exceptions import H2oStateError, H2oTimeoutError
from ._phase import Phase
from ._table import SPEC

if TYPE_CHECKING:
    from ._requester import Requester

__all__ = ["StepBound"]


class StepBound:
    """The bound of one step (see :meth:`~h2o_fsm._requester.Requester.step`): its row's timeout or the
    turn's deadline, whichever comes first, cut short by ``aclose()`` when it runs in a caller's task."""

    __slots__ = ("_bound", "_cid", "_cut", "_deadline", "_phase", "_rq", "_seconds", "_turn")

    def __init__(self, rq: Requester, phase: Phase, deadline: float | None, cid: str | None) -> None:
        self._rq, self._phase, self._deadline, self._cid = rq, phase, deadline, cid
        self._bound: Deadline | None = None
        self._seconds = rq.step_seconds[phase]
        self._cut = False  # the turn's deadline (Timeouts.total) ends the step before its own bound
        self._turn = not SPEC[phase].owned  # runs in a caller's task: aclose() may cut it; owned ones never

    async def __aenter__(self) -> None:
        rq = self._rq
        rq.refuse_late(self._phase, self._deadline, self._cid)
        now = asyncio.get_running_loop().time()
        when = now + self._seconds
        if self._deadline is not None and self._deadline < when:
            when, self._cut = self._deadline, not SPEC[self._phase].cleanup  # a cleanup's: its share
        self._seconds = when - now
        bound = self._bound = Deadline(when)
        await bound.__aenter__()
        if self._turn:
            rq.active.add(bound)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        bound = self._bound
        assert bound is not None
        self._rq.active.discard(bound)
        try:
            await bound.__aexit__(kind, exc, tb)
        except asyncio.TimeoutError as timeout:
            if not bound.fired:
                raise
            if bound.interrupted:
                raise H2oStateError("the client was closed during this step", phase=self._phase,
                                    conversation_id=self._cid) from timeout
            total = self._rq.timeouts.total  # the bound set, not the time left of it at the step's start
            within = f"the turn's deadline of {total:g}s" if self._cut and total else f"{self._seconds:.3g}s"
            raise H2oTimeoutError(f"no complete answer within {within}", phase=self._phase,
                                  conversation_id=self._cid, timeout="step") from timeout
