"""What every journal stores and answers, whatever holds it (a SQLite file, a Redis server).

An entry is a conversation that exists on a server: where, its id, the session cookies its DELETE
needs, and who wrote it — an *owner* (a random id per client instance, or per journal for direct
writes) holding a *lease* it renews while alive. An entry may be swept when its owner's lease expired
or its owner closed (released the lease); a row of a journal written before leases has no owner and
may be swept. Process ids are recorded for information only: they say nothing across PID namespaces
or hosts. A sweeper *claims* an entry atomically before its DELETE, so exactly one sweeper deletes it.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import math
import secrets

__all__ = ["DEFAULT_LEASE", "JournalBackend", "JournalEntry", "JournalScan", "check_lease", "new_owner"]

DEFAULT_LEASE = 30.0
MAX_LEASE = 86_400.0


def new_owner() -> str:
    """A random owner id (never derived from a pid or a host name)."""
    return secrets.token_hex(12)


def check_lease(lease: object, name: str = "lease") -> float:
    if isinstance(lease, bool) or not isinstance(lease, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(lease).__name__}")
    if not (math.isfinite(lease) and 0.1 <= lease <= MAX_LEASE):
        raise ValueError(f"{name} must be between 0.1 and {MAX_LEASE:g} seconds, got {lease!r}")
    return float(lease)


class JournalEntry:
    """One journalled conversation: where it lives, its id, the cookies its DELETE needs, its owner,
    its dialect and the generation that may be running (chat-ui's stop-generating needs its id)."""

    __slots__ = ("base_url", "conversation_id", "cookies", "created_at", "dialect", "generation_id", "owner", "pid")

    def __init__(
        self,
        base_url: str,
        conversation_id: str,
        cookies: dict[str, str],
        created_at: float,
        pid: int,
        *,
        owner: str | None = None,
        dialect: str | None = None,
        generation_id: str | None = None,
    ):
        self.base_url = base_url
        self.conversation_id = conversation_id
        self.cookies = cookies
        self.created_at = created_at
        self.pid = pid
        self.owner = owner
        self.dialect = dialect
        self.generation_id = generation_id

    def __repr__(self) -> str:  # cookies are secret
        return f"<JournalEntry {self.conversation_id} at {self.base_url} owner={self.owner} pid={self.pid}>"


@dataclasses.dataclass
class JournalScan:
    """What a read of the journal found: the readable entries, and a description of each row that
    was skipped (rowid or key, conversation id, reason; never cookie values). ``live``: entries left
    out because their owner's lease holds (only a sweep's read leaves them out)."""

    entries: list[JournalEntry]
    bad_rows: list[str]
    live: int = 0


class JournalBackend(abc.ABC):
    """The interface :class:`~h2o_fsm.H2oClient` and the sweep use; every method is async and bounded
    (it raises rather than wait long). ``lease``: seconds an owner's lease lasts once renewed."""

    lease: float = DEFAULT_LEASE
    op_timeout: float = 1.0  # the longest one call may take before the caller gives up on it
    owner: str  # this journal's own owner: of the rows written without one (scripts, the CLI)
    _owner_used: bool = False

    def _writer(self, owner: str | None) -> str:
        """``owner``, or this journal's own one (whose lease closing the journal then releases)."""
        if owner is not None:
            return owner
        self._owner_used = True
        return self.owner

    @abc.abstractmethod
    async def add_async(
        self, base_url: str, conversation_id: str, cookies: dict[str, str], *,
        owner: str | None = None, dialect: str | None = None,
    ) -> None:
        """Record a live conversation (and renew ``owner``'s lease; default: this journal's own owner)."""

    @abc.abstractmethod
    async def running_async(
        self, base_url: str, conversation_id: str, generation_id: str, cookies: dict[str, str]
    ) -> None:
        """Note the generation a turn starts (and the session's cookies now)."""

    @abc.abstractmethod
    async def remove_async(self, base_url: str, conversation_id: str) -> None:
        """Forget a conversation (it was deleted on the server)."""

    @abc.abstractmethod
    async def scan_async(self, base_url: str | None = None) -> JournalScan:
        """Every readable entry (of ``base_url``, or all), oldest first, and the rows skipped."""

    async def entries_async(self, base_url: str | None = None) -> list[JournalEntry]:
        """The readable entries (of ``base_url``, or all), oldest first."""
        return (await self.scan_async(base_url)).entries

    @abc.abstractmethod
    async def sweepable_async(self, base_url: str | None, *, include_live: bool = False) -> JournalScan:
        """The entries whose owner's lease expired or was released (all with ``include_live``)."""

    @abc.abstractmethod
    async def claim_async(self, entry: JournalEntry, claimer: str, ttl: float, *, include_live: bool = False) -> bool:
        """Atomically take ``entry`` for a sweep: ``False`` when it is gone, its owner's lease holds
        (unless ``include_live``) or another sweeper holds it. A claim lasts ``ttl`` seconds."""

    @abc.abstractmethod
    async def unclaim_async(self, entry: JournalEntry, claimer: str) -> None:
        """Give a claim back (the DELETE failed: the next sweep tries again)."""

    @abc.abstractmethod
    async def renew_async(self, owner: str) -> None:
        """Renew ``owner``'s lease for :attr:`lease` seconds from now."""

    @abc.abstractmethod
    async def release_async(self, owner: str) -> None:
        """End ``owner``'s lease now: what it left may be swept at once."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release this journal's own owner and close the connection."""


class ServerJournal(JournalBackend):
    """A journal kept by a database server (Redis, PostgreSQL): one read, of every entry or of the
    sweepable ones, serves the scans."""

    @abc.abstractmethod
    async def _read(self, base_url: str | None, sweepable: bool) -> JournalScan: ...

    async def _release_own(self) -> None:
        """Release this journal's own owner if it wrote (a server that is down: the lease runs out)."""
        if self._owner_used:
            self._owner_used = False
            with contextlib.suppress(Exception):
                await self.release_async(self.owner)

    async def scan_async(self, base_url: str | None = None) -> JournalScan:
        return await self._read(base_url, sweepable=False)

    async def sweepable_async(self, base_url: str | None, *, include_live: bool = False) -> JournalScan:
        return await self._read(base_url, sweepable=not include_live)
