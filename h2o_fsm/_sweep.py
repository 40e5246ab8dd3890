"""Delete the conversations a dead (or closed) owner left behind in a journal.

Each entry is claimed first (atomically, in the journal), so of several replicas sweeping at once
exactly one deletes it; an entry whose owner's lease holds is never touched (unless asked). On chat-ui
an entry that names a generation gets ``stop-generating`` before its DELETE: a DELETE alone does not
stop a generation the server is still running.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3

from ._dialects import get_dialect
from ._exceptions import H2oError, H2oJournalError
from ._journal_base import JournalBackend, JournalEntry, new_owner
from ._log import redact
from ._phase import Phase
from ._requester import Requester
from ._session import Session
from ._table import DELETE_OK, SPEC

__all__ = ["JOURNAL_DOWN", "SweepReport", "journal_error", "sweep"]

# what a journal raises when it cannot be reached or read (every backend bounds its calls: a timeout is its own)
JOURNAL_DOWN = (OSError, TimeoutError, sqlite3.Error)


@dataclasses.dataclass
class SweepReport:
    """What a sweep did with the journal entries of its deployment. ``skipped``: entries whose owner's
    lease holds, or that another sweeper's claim holds; ``stopped``: generations stopped before the
    DELETE; ``bad_rows``: rows that could not be read (left as they are)."""

    deleted: int = 0
    already_gone: int = 0
    failed: int = 0
    skipped: int = 0
    bad_rows: int = 0
    stopped: int = 0

    def add(self, other: SweepReport) -> None:
        """Count ``other``'s entries in this report too (one report for sweeps of several deployments)."""
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


def journal_error(journal: object, exc: BaseException, doing: str = "read") -> H2oJournalError:
    """The :class:`H2oJournalError` of a sweep whose journal could not be ``doing`` (raise it ``from exc``).
    The backends name themselves without a password in their errors; ``redact`` makes sure of it."""
    if isinstance(journal, (str, os.PathLike)):  # as given to sweep(): a path or URL
        shown: object = os.fspath(journal)
    else:  # the backends' own public names (RedisJournal.url is already without its password)
        shown = getattr(journal, "url", None) or getattr(journal, "path", None) or type(journal).__name__
    where = redact(str(shown))
    said = redact(" ".join(str(exc).split()))[:300] or type(exc).__name__
    named = f"the journal {where}" if where not in said else "the journal"  # the backends name themselves
    detail = f"{named} could not be {doing}: {said}"
    return H2oJournalError(f"sweep failed: {detail}", journal=where, detail=detail)


def claim_ttl(journal: JournalBackend) -> float:
    """How long a sweeper's claim lasts: past any DELETE it may be running (a sweeper that dies
    holding one only delays that entry to a later sweep)."""
    return max(2 * journal.lease, 60.0)


async def _stop(requester: Requester, entry: JournalEntry, session: Session) -> bool:
    """Post the stop when the entry names a generation its dialect can stop; ``True`` if posted."""
    if not entry.generation_id or not entry.dialect:
        return False
    try:
        dialect = get_dialect(entry.dialect)
    except (TypeError, ValueError):  # the journal is not trusted either
        return False
    if Phase.STOP not in dialect.optional_steps:
        return False
    cid = entry.conversation_id
    try:
        async with requester.step(Phase.STOP, None, cid):
            body = dialect.stop_body_of(entry.generation_id)
            response = await requester.call(Phase.STOP, session=session, body=body, ok=SPEC[Phase.STOP].ok, cid=cid)
            await requester.drain(response)
    except (H2oError, ValueError):
        return False  # best effort: the DELETE goes on
    return True


async def sweep(
    requester: Requester, journal: JournalBackend, *, include_live_processes: bool = False, claimer: str | None = None
) -> SweepReport:
    """DELETE every journalled conversation of ``requester.base_url`` whose owner's lease expired or
    was released; one entry's failure never stops the others.

    Entries of a live owner are skipped (it deletes them itself) unless ``include_live_processes``.
    200 and 404 both remove the entry; other failures keep it for the next sweep. A journal that cannot
    be read raises :class:`H2oJournalError` (nothing swept).
    """
    claimer = claimer or new_owner()
    report = SweepReport()
    try:
        scan = await journal.sweepable_async(requester.base_url, include_live=include_live_processes)
    except JOURNAL_DOWN as exc:  # nothing swept: the caller learns why, as an H2oError
        raise journal_error(journal, exc) from exc
    report.bad_rows, report.skipped = len(scan.bad_rows), scan.live
    for entry in scan.entries:
        try:
            claimed = await journal.claim_async(entry, claimer, claim_ttl(journal), include_live=include_live_processes)
        except Exception:  # the journal is unreachable: the next sweep tries again
            report.failed += 1
            continue
        if not claimed:
            report.skipped += 1
            continue
        try:
            session = Session(entry.cookies)
            report.stopped += await _stop(requester, entry, session)
            async with requester.step(Phase.DELETE, None, entry.conversation_id):
                response = await requester.call(Phase.DELETE, session=session, ok=DELETE_OK, cid=entry.conversation_id)
                await requester.drain(response)
        except (H2oError, ValueError, TypeError):
            report.failed += 1
            with contextlib.suppress(Exception):  # else the claim runs out by itself
                await journal.unclaim_async(entry, claimer)
            continue
        if response.status_code == 404:
            report.already_gone += 1
        else:
            report.deleted += 1
        with contextlib.suppress(Exception):  # the entry stays claimed; a later sweep finds it gone (404)
            await journal.remove_async(entry.base_url, entry.conversation_id)
    return report
