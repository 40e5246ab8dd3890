"""A journal shared by a fleet, on Redis (redis-py's asyncio client; the ``redis`` extra).

What it stores, under keys that start with ``{namespace}:`` (``{h2o-fsm}`` by default, one hash slot):

* ``{ns}:entries`` — a hash, one field per conversation (``[base URL, conversation id]`` as JSON), its
  value a JSON object with the **session cookies** the DELETE needs, the dialect, the generation id of
  a running turn, the owner id, the creation time and the writer's pid. Cookies are values, never key
  or field names.
* ``{ns}:owner:{owner id}`` — an owner's lease: a key that expires by itself (``PX``) unless renewed.
* ``{ns}:claim:{sha256 of the field}`` — a sweeper's claim on an entry, expiring by itself too.

Whoever can read this Redis can use those sessions: give it the trust the SQLite file gets (0600):
a password or ACL user, TLS (``rediss://``) off loopback, not shared with untrusted tenants.
Every call is bounded (``timeout``, 1 s by default): a Redis that is down or slow raises promptly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ._journal_base import DEFAULT_LEASE, JournalEntry, JournalScan, ServerJournal, check_lease, new_owner
from ._journal_file import check_row

__all__ = ["RedisJournal"]

T = TypeVar("T")

# KEYS: entries hash, claim key, owner key; ARGV: field, claimer, ttl ms, include_live ("1"/"0")
_CLAIM = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if ARGV[4] == '0' and KEYS[3] ~= '' and redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return 1 end
return 0
"""
_UNCLAIM = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
# KEYS: entries hash; ARGV: field, generation id, cookies JSON — only an entry that is still there
_RUNNING = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local entry = cjson.decode(raw)
entry['generation_id'] = ARGV[2]
entry['cookies'] = ARGV[3]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(entry))
return 1
"""


def _parse_url(url: str, lease: float | None, timeout: float | None) -> tuple[str, float, float, str | None]:
    """``(the URL redis-py gets, lease, timeout, namespace)``; a ValueError naming what is wrong (never the
    password)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"a Redis journal URL starts with redis:// or rediss://, not {parts.scheme[:10]!r}://")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the Redis journal URL's port is not a number") from None
    if not parts.hostname:
        raise ValueError("the Redis journal URL names no host")
    db = parts.path.strip("/")
    if db and not (db.isdigit() and len(db) < 6):
        raise ValueError(f"the Redis journal URL's path is the database number (/0, /1...), not {db[:20]!r}")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - {"lease", "timeout", "namespace"})
    if unknown:
        shown = ", ".join(unknown)[:80]
        raise ValueError(f"unknown option(s) in the Redis journal URL: {shown} (known: lease, timeout, namespace)")
    values: dict[str, float] = {}
    for name, given in (("lease", lease), ("timeout", timeout)):
        if name in options:
            try:
                values[name] = float(options[name])
            except ValueError:
                raise ValueError(f"?{name}= in the Redis journal URL is not a number of seconds") from None
        elif given is not None:
            values[name] = given
    chosen_lease = check_lease(values.get("lease", DEFAULT_LEASE))
    chosen_timeout = check_lease(values.get("timeout", 1.0), "timeout")
    del port
    clean = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return clean, chosen_lease, chosen_timeout, options.get("namespace")


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{'***@' if parts.password or parts.username else ''}{host}{f':{parts.port}' if parts.port else ''}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class RedisJournal(ServerJournal):
    """The journal on a Redis server, shared by every replica that names the same URL and namespace.

    Args:
        url: ``redis://[user:password@]host:port/db`` or ``rediss://`` (TLS); ``?lease=N``,
            ``?timeout=N`` (seconds) and ``?namespace=NAME`` may ride along.
        lease: seconds an owner's lease lasts (default 30; the URL's ``?lease=`` wins).
        timeout: the longest one Redis call may take (default 1 s; the URL's ``?timeout=`` wins).
        namespace: the key prefix (several deployments may share a Redis under different ones; the
            URL's ``?namespace=`` wins).
        max_connections: the connection pool's size (a call waits for a free one, within ``timeout``).

    Nothing is sent at construction; the connection is made by the first call.
    """

    def __init__(
        self, url: str, *, lease: float | None = None, timeout: float | None = None, namespace: str = "h2o-fsm",
        max_connections: int = 32,
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, not {type(url).__name__}")
        clean, self.lease, self.op_timeout, in_url = _parse_url(url, lease, timeout)
        namespace = in_url if in_url is not None else namespace
        if not isinstance(namespace, str) or not namespace or any(c in namespace for c in "{}\r\n "):
            raise ValueError("namespace must be a non-empty text without braces, spaces or line breaks")
        self.url = _redacted(url)
        try:
            from redis.asyncio import BlockingConnectionPool, Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError as exc:  # pragma: no cover - the extra is installed in the tests
            raise ImportError("a Redis journal needs redis-py: pip install 'h2o-fsm[redis]'") from exc
        # a bounded pool (a burst of conversations waits for a connection, at most `timeout`), no retries
        pool = BlockingConnectionPool.from_url(
            clean, max_connections=max_connections, timeout=self.op_timeout, socket_timeout=self.op_timeout,
            socket_connect_timeout=self.op_timeout, retry=Retry(NoBackoff(), 0), decode_responses=True,
        )
        self._redis: Any = Redis(connection_pool=pool)
        self.namespace = namespace
        self._prefix = "{" + namespace + "}:"
        self._entries = self._prefix + "entries"
        self._claim = self._redis.register_script(_CLAIM)
        self._unclaim = self._redis.register_script(_UNCLAIM)
        self._running = self._redis.register_script(_RUNNING)
        self.owner = new_owner()

    def __repr__(self) -> str:  # no password
        return f"<RedisJournal {self.url} {self._prefix}>"

    async def _bounded(self, call: Awaitable[T]) -> T:
        """``call`` within :attr:`op_timeout`; a Redis failure as an ``OSError`` (``TimeoutError``,
        ``ConnectionError``) naming the journal, never its password."""
        from redis.exceptions import RedisError
        from redis.exceptions import TimeoutError as RedisTimeout

        try:
            return await asyncio.wait_for(call, self.op_timeout)
        except (asyncio.TimeoutError, RedisTimeout):
            raise TimeoutError(f"Redis journal {self.url}: no answer within {self.op_timeout:g} s") from None
        except RedisError as exc:
            raise ConnectionError(f"Redis journal {self.url}: {type(exc).__name__}: {str(exc)[:200]}") from exc

    def _owner_key(self, owner: str) -> str:
        return f"{self._prefix}owner:{owner}"

    def _claim_key(self, field: str) -> str:
        return f"{self._prefix}claim:{hashlib.sha256(field.encode()).hexdigest()}"

    @staticmethod
    def _field(base_url: str, conversation_id: str) -> str:
        return json.dumps([base_url, conversation_id])

    async def add_async(
        self, base_url: str, conversation_id: str, cookies: dict[str, str], *,
        owner: str | None = None, dialect: str | None = None,
    ) -> None:
        owner = self._writer(owner)
        value = {"cookies": json.dumps(cookies), "created_at": time.time(), "pid": os.getpid(), "owner": owner,
                 "dialect": dialect, "generation_id": None}
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._entries, self._field(base_url, conversation_id), json.dumps(value))
        pipe.set(self._owner_key(owner), "1", px=int(self.lease * 1000))
        await self._bounded(pipe.execute())

    async def running_async(
        self, base_url: str, conversation_id: str, generation_id: str, cookies: dict[str, str]
    ) -> None:
        args = [self._field(base_url, conversation_id), generation_id, json.dumps(cookies)]
        await self._bounded(self._running(keys=[self._entries], args=args))

    async def remove_async(self, base_url: str, conversation_id: str) -> None:
        field = self._field(base_url, conversation_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(self._entries, field)
        pipe.delete(self._claim_key(field))
        await self._bounded(pipe.execute())

    async def _read(self, base_url: str | None, sweepable: bool) -> JournalScan:
        raw: dict[str, str] = await self._bounded(self._redis.hgetall(self._entries))
        scan = JournalScan(entries=[], bad_rows=[])
        for field, text in raw.items():
            checked = _check(field, text)
            if isinstance(checked, str):
                scan.bad_rows.append(checked)
            elif base_url is None or checked.base_url == base_url:
                scan.entries.append(checked)
        if sweepable:
            owners = sorted({e.owner for e in scan.entries if e.owner})
            alive: set[str] = set()
            if owners:
                pipe = self._redis.pipeline(transaction=False)
                for owner in owners:
                    pipe.exists(self._owner_key(owner))
                alive = {o for o, n in zip(owners, await self._bounded(pipe.execute()), strict=True) if n}
            kept = [e for e in scan.entries if e.owner not in alive]
            scan.live, scan.entries = len(scan.entries) - len(kept), kept
        scan.entries.sort(key=lambda e: e.created_at)
        return scan

    async def claim_async(self, entry: JournalEntry, claimer: str, ttl: float, *, include_live: bool = False) -> bool:
        field = self._field(entry.base_url, entry.conversation_id)
        owner_key = self._owner_key(entry.owner) if entry.owner else ""
        keys = [self._entries, self._claim_key(field), owner_key]
        args: list[str | int] = [field, claimer, max(1, int(ttl * 1000)), "1" if include_live else "0"]
        return bool(await self._bounded(self._claim(keys=keys, args=args)))

    async def unclaim_async(self, entry: JournalEntry, claimer: str) -> None:
        key = self._claim_key(self._field(entry.base_url, entry.conversation_id))
        await self._bounded(self._unclaim(keys=[key], args=[claimer]))

    async def renew_async(self, owner: str) -> None:
        await self._bounded(self._redis.set(self._owner_key(owner), "1", px=int(self.lease * 1000)))

    async def release_async(self, owner: str) -> None:
        await self._bounded(self._redis.delete(self._owner_key(owner)))

    async def aclose(self) -> None:
        """Release this journal's own owner (if it wrote) and close the connection pool."""
        try:
            await self._release_own()
        finally:
            await self._redis.aclose()
            await self._redis.connection_pool.disconnect()


def _check(field: str, text: str) -> JournalEntry | str:
    """The entry of a hash field, or why it cannot be one (the cookie values never in the reason)."""
    try:
        key = json.loads(field)
        value = json.loads(text)
    except ValueError:
        return f"field {field[:80]!r}: not JSON"
    if not (isinstance(key, list) and len(key) == 2 and isinstance(value, dict)):
        return f"field {field[:80]!r}: not an entry"
    row = (key[0], key[1], value.get("cookies"), value.get("created_at"), value.get("pid"),
           value.get("owner"), value.get("dialect"), value.get("generation_id"))
    return check_row((field[:80], *row), where="field")
