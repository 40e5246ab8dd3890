"""Delete the conversations a dead process left behind, from a :class:`Journal`."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

import httpx

from ._journal import Journal
from ._protocol import ALREADY_GONE, DELETED, conversation_path
from ._session import Session

if TYPE_CHECKING:
    from ._client import H2oClient

__all__ = ["SweepReport", "sweep"]


@dataclasses.dataclass
class SweepReport:
    deleted: int = 0
    already_gone: int = 0
    failed: int = 0
    skipped: int = 0


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


async def sweep(client: H2oClient, journal: Journal, *, include_live_processes: bool = False) -> SweepReport:
    """DELETE every journalled conversation of ``client.base_url``.

    Entries written by a process that is still running are skipped (it will delete them itself)
    unless ``include_live_processes``. 200 and 404 both remove the entry; other failures keep it.
    """
    report = SweepReport()
    for entry in journal.entries(client.base_url):
        if not include_live_processes and _alive(entry.pid):
            report.skipped += 1
            continue
        headers = dict(client._headers)
        cookie = Session(entry.cookies).cookie_header
        if cookie is not None:
            headers["Cookie"] = cookie
        try:
            response = await client._http.delete(
                client._url(conversation_path(entry.conversation_id)),
                headers=headers,
                timeout=client.timeouts.delete,
            )
        except httpx.HTTPError:
            report.failed += 1
            continue
        if response.status_code in DELETED:
            report.deleted += 1
        elif response.status_code == ALREADY_GONE:
            report.already_gone += 1
        else:
            report.failed += 1
            continue
        journal.remove(entry.base_url, entry.conversation_id)
    return report
