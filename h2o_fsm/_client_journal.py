"""The journal's part of :class:`~h2o_fsm.H2oClient`: the client's owner in its journal (every runtime
the client builds records into it), its lease (and background sweep) started in the running loop and
released at ``aclose()``, the failure counter and :meth:`sweep`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._journal_lease import ClientJournal, JournalValue, sweep_journal

if TYPE_CHECKING:
    from ._journal_base import JournalBackend
    from ._log import Logger
    from ._runtime import Runtime
    from ._sweep import SweepReport

__all__ = ["JournalClientPart"]


class JournalClientPart:
    """Mixed into the client: everything it does with its journal (``None``: it has none)."""

    _rt: Runtime
    _journal: ClientJournal | None = None

    if TYPE_CHECKING:
        async def _ready(self) -> None:
            """The client's: the dialect known (``"auto"`` detected) before anything is sent."""

    def _own_journal(
        self, store: JournalBackend | None, *, owned: bool, logger: Logger, background: bool
    ) -> ClientJournal | None:
        """This client as an owner in ``store`` (opened from ``journal=``; ``owned``: closed with the client)."""
        self._journal = None if store is None else ClientJournal(store, owned=owned, logger=logger,
                                                                 background=bool(background))
        return self._journal

    def _start_journal(self) -> None:
        if self._journal is not None:
            self._journal.start(self.sweep)

    async def _stop_journal(self) -> None:
        """Stop the background sweep (first thing ``aclose()`` does: its sweep uses the pool)."""
        if self._journal is not None:
            await self._journal.stop()

    async def _close_journal(self) -> None:
        """Release the lease and close the journal if the client opened it (last thing ``aclose()`` does)."""
        if self._journal is not None:
            await self._journal.aclose()

    @property
    def journal_failures(self) -> int:
        """Journal calls that failed or timed out (each is logged; the conversations went on)."""
        return 0 if self._journal is None else self._journal.failures

    async def sweep(self, journal: JournalValue = None, *, include_live_processes: bool = False) -> SweepReport:
        """Delete the conversations of this deployment whose owner's lease expired or was released, from
        ``journal`` (a journal, path or URL; default: this client's own)."""
        await self._ready()
        return await sweep_journal(self._rt.requester, self._journal, journal, include_live=include_live_processes)
