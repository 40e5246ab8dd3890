"""A journal shared by a fleet, on PostgreSQL (asyncpg; the ``postgres`` extra).

Two tables, created on first use (``h2o_fsm_entries``, ``h2o_fsm_owners``), every row tagged with a
namespace. An entry holds the **session cookies** its DELETE needs, the dialect, the generation id of a
running turn, its owner and a sweeper's claim; an owner row holds its lease's end. Leases are compared
with the database server's clock (``clock_timestamp()``), so the hosts' clocks do not matter. A claim is
one ``UPDATE ... WHERE`` (the row lock makes a second sweeper see the first one's claim). Give that
database the trust the 0600 SQLite file gets. Every call is bounded (``timeout``, 1 s by default).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ._journal_base import DEFAULT_LEASE, JournalEntry, JournalScan, ServerJournal, check_lease, new_owner
from ._journal_file import check_row

__all__ = ["PostgresJournal"]

T = TypeVar("T")

_SCHEMA = """
SELECT pg_advisory_xact_lock(7305734812);
CREATE TABLE IF NOT EXISTS h2o_fsm_entries (
    ns TEXT NOT NULL, base_url TEXT NOT NULL, conversation_id TEXT NOT NULL, cookies TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL, pid BIGINT NOT NULL, owner TEXT, dialect TEXT, generation_id TEXT,
    claimed_by TEXT, claimed_until TIMESTAMPTZ, PRIMARY KEY (ns, base_url, conversation_id));
CREATE TABLE IF NOT EXISTS h2o_fsm_owners (
    ns TEXT NOT NULL, owner TEXT NOT NULL, expires_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (ns, owner));
"""
_RENEW = """INSERT INTO h2o_fsm_owners VALUES ($1, $2, clock_timestamp() + $3 * interval '1 second')
    ON CONFLICT (ns, owner) DO UPDATE SET expires_at = excluded.expires_at"""
_ADD = """INSERT INTO h2o_fsm_entries VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, NULL)
    ON CONFLICT (ns, base_url, conversation_id) DO UPDATE SET cookies = excluded.cookies,
    created_at = excluded.created_at, pid = excluded.pid, owner = excluded.owner, dialect = excluded.dialect,
    generation_id = NULL, claimed_by = NULL, claimed_until = NULL"""
_KEY = "ns = $1 AND base_url = $2 AND conversation_id = $3"
_ALIVE = "SELECT 1 FROM h2o_fsm_owners o WHERE o.ns = e.ns AND o.owner = e.owner AND o.expires_at > clock_timestamp()"
_SELECT = f"""SELECT e.base_url, e.conversation_id, e.cookies, e.created_at, e.pid, e.owner, e.dialect,
    e.generation_id, EXISTS ({_ALIVE}) AS alive FROM h2o_fsm_entries e WHERE e.ns = $1"""
_CLAIM = f"""UPDATE h2o_fsm_entries e SET claimed_by = $4, claimed_until = clock_timestamp() + $5 * interval '1 second'
    WHERE {_KEY} AND (claimed_until IS NULL OR claimed_until <= clock_timestamp()) AND ($6 OR NOT EXISTS ({_ALIVE}))"""


def _parse_url(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"a PostgreSQL journal URL starts with postgresql://, not {parts.scheme[:10]!r}://")
    try:
        parts.port  # noqa: B018 - validates it
    except ValueError:
        raise ValueError("the PostgreSQL journal URL's port is not a number") from None
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    ours: dict[str, str] = {k: options.pop(k) for k in ("lease", "timeout", "namespace") if k in options}
    query = "&".join(f"{k}={v}" for k, v in options.items())  # the driver's own options (sslmode...)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, "")), ours


def _seconds(options: dict[str, str], name: str, given: float | None, default: float) -> float:
    if name in options:
        try:
            return check_lease(float(options[name]), name)
        except ValueError:
            raise ValueError(f"?{name}= in the PostgreSQL journal URL is not a number of seconds >= 0.1") from None
    return check_lease(default if given is None else given, name)


class PostgresJournal(ServerJournal):
    """The journal in a PostgreSQL database (``postgresql://user:password@host:port/db``, with
    ``?lease=N``, ``?timeout=N``, ``?namespace=NAME`` and the driver's own options such as ``sslmode``).
    Nothing is sent at construction; the pool is made by the first call."""

    def __init__(
        self, url: str, *, lease: float | None = None, timeout: float | None = None, namespace: str = "h2o-fsm",
        max_connections: int = 10,
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, not {type(url).__name__}")
        self._dsn, options = _parse_url(url)
        self.lease = _seconds(options, "lease", lease, DEFAULT_LEASE)
        self.op_timeout = _seconds(options, "timeout", timeout, 1.0)
        self.namespace = options.get("namespace", namespace)
        if not self.namespace:
            raise ValueError("namespace must be a non-empty text")
        try:
            import asyncpg
        except ImportError as exc:  # pragma: no cover - the extra is installed in the tests
            raise ImportError("a PostgreSQL journal needs asyncpg: pip install 'h2o-fsm[postgres]'") from exc
        self._asyncpg: Any = asyncpg
        parts = urlsplit(url)
        self.url = urlunsplit((parts.scheme, f"{'***@' if parts.username else ''}{parts.hostname or ''}"
                                             f"{f':{parts.port}' if parts.port else ''}", parts.path, "", ""))
        self._max = max_connections
        self._pool: Any = None
        self._opening = asyncio.Lock()
        self.owner = new_owner()

    def __repr__(self) -> str:  # no password
        return f"<PostgresJournal {self.url} {self.namespace}>"

    async def _run(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """``work(connection)`` within :attr:`op_timeout`; failures as ``TimeoutError``/``ConnectionError``."""
        try:
            return await asyncio.wait_for(self._with_connection(work), self.op_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise TimeoutError(f"PostgreSQL journal {self.url}: no answer within {self.op_timeout:g} s") from None
        except (OSError, self._asyncpg.PostgresError, self._asyncpg.InterfaceError) as exc:
            raise ConnectionError(f"PostgreSQL journal {self.url}: {type(exc).__name__}") from exc

    async def _with_connection(self, work: Callable[[Any], Awaitable[T]]) -> T:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    pool = await self._asyncpg.create_pool(self._dsn, min_size=0, max_size=self._max,
                                                           timeout=self.op_timeout, command_timeout=self.op_timeout)
                    async with pool.acquire() as conn, conn.transaction():
                        await conn.execute(_SCHEMA)
                    self._pool = pool
        async with self._pool.acquire() as conn:
            return await work(conn)

    async def add_async(
        self, base_url: str, conversation_id: str, cookies: dict[str, str], *,
        owner: str | None = None, dialect: str | None = None,
    ) -> None:
        owner = self._writer(owner)
        row = (self.namespace, base_url, conversation_id, json.dumps(cookies), time.time(), os.getpid(), owner, dialect)

        async def work(conn: Any) -> None:
            async with conn.transaction():
                await conn.execute(_ADD, *row)
                await conn.execute(_RENEW, self.namespace, owner, self.lease)

        await self._run(work)

    async def running_async(
        self, base_url: str, conversation_id: str, generation_id: str, cookies: dict[str, str]
    ) -> None:
        sql = f"UPDATE h2o_fsm_entries SET generation_id = $4, cookies = $5 WHERE {_KEY}"
        await self._run(lambda c: c.execute(sql, self.namespace, base_url, conversation_id, generation_id,
                                            json.dumps(cookies)))

    async def remove_async(self, base_url: str, conversation_id: str) -> None:
        sql = f"DELETE FROM h2o_fsm_entries WHERE {_KEY}"
        await self._run(lambda c: c.execute(sql, self.namespace, base_url, conversation_id))

    async def _read(self, base_url: str | None, sweepable: bool) -> JournalScan:
        sql, args = (_SELECT, [self.namespace]) if base_url is None else (f"{_SELECT} AND e.base_url = $2",
                                                                          [self.namespace, base_url])
        rows = await self._run(lambda c: c.fetch(f"{sql} ORDER BY e.created_at", *args))
        scan = JournalScan(entries=[], bad_rows=[])
        for n, row in enumerate(rows):
            checked = check_row((n, *tuple(row)[:8]))
            if isinstance(checked, str):
                scan.bad_rows.append(checked)
            elif sweepable and row["alive"]:
                scan.live += 1
            else:
                scan.entries.append(checked)
        return scan

    async def claim_async(self, entry: JournalEntry, claimer: str, ttl: float, *, include_live: bool = False) -> bool:
        status = await self._run(lambda c: c.execute(_CLAIM, self.namespace, entry.base_url, entry.conversation_id,
                                                     claimer, float(ttl), include_live))
        return bool(status == "UPDATE 1")

    async def unclaim_async(self, entry: JournalEntry, claimer: str) -> None:
        sql = f"UPDATE h2o_fsm_entries SET claimed_by = NULL, claimed_until = NULL WHERE {_KEY} AND claimed_by = $4"
        await self._run(lambda c: c.execute(sql, self.namespace, entry.base_url, entry.conversation_id, claimer))

    async def renew_async(self, owner: str) -> None:
        await self._run(lambda c: c.execute(_RENEW, self.namespace, owner, self.lease))

    async def release_async(self, owner: str) -> None:
        sql = "DELETE FROM h2o_fsm_owners WHERE ns = $1 AND owner = $2"
        await self._run(lambda c: c.execute(sql, self.namespace, owner))

    async def aclose(self) -> None:
        """Release this journal's own owner (if it wrote) and close the pool (bounded)."""
        try:
            await self._release_own()
        finally:
            pool, self._pool = self._pool, None
            if pool is not None:
                try:
                    await asyncio.wait_for(pool.close(), self.op_timeout + 1.0)
                except Exception:
                    pool.terminate()
