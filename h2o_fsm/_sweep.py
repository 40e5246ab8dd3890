"""Delete the conversations a dead process left behind, from a :class:`~h2o_fsm.Journal`."""

from __future__ import annotations

import contextlib
import dataclasses
import os

from ._exceptions import H2oError
from ._journal import Journal
from ._phase import Phase
from ._requester import Requester
from ._session import Session
from ._table import DELETE_OK

__all__ = ["SweepReport", "sweep"]


@dataclasses.dataclass
class SweepReport:
    """What :meth:`H2oClient.sweep` did with each journal entry of its deployment."""

    deleted: int = 0
    already_gone: int = 0
    failed: int = 0
    skipped: int = 0
    bad_rows: int = 0


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def sweep(requester: Requester, journal: Journal, *, include_live_processes: bool = False) -> SweepReport:
    """DELETE every journalled conversation of ``requester.base_url``; one entry's failure never stops
    the others.

    Entries written by a process that is still running are skipped (it will delete them itself)
    unless ``include_live_processes``. 200 and 404 both remove the entry; other failures keep it.
    """
    report = SweepReport()
    scan = await journal.scan_async(requester.base_url)
    report.bad_rows = len(scan.bad_rows)
    for entry in scan.entries:
        if not include_live_processes and _alive(entry.pid):
            report.skipped += 1
            continue
        try:
            async with requester.step(Phase.DELETE, None, entry.conversation_id):
                session = Session(entry.cookies)
                response = await requester.call(Phase.DELETE, session=session, ok=DELETE_OK, cid=entry.conversation_id)
                await requester.drain(response)
        except (H2oError, ValueError, TypeError):
            report.failed += 1
            continue
        if response.status_code == 404:
            report.already_gone += 1
        else:
            report.deleted += 1
        with contextlib.suppress(Exception):  # a locked journal: the entry stays, the next sweep finds it gone
            await journal.remove_async(entry.base_url, entry.conversation_id)
    return report
