"""Shared constants and helpers of the test suite (imported as a plain module: ``from support import ...``).

Servers: a test that needs the bundled emulator takes one from the session's pool instead of starting
its own (a start is cheap, a stop costs ~0.2 s: uvicorn's shutdown poll)::

    from support import emulator

    def test_x() -> None:
        with emulator(ServerConfig(max_tokens=4), [Fault("send", "status", status=500)], dialect="chat-ui") as server:
            ...  # a running server of that dialect and config, reset: no sessions, conversations,
                 # accounting; exactly these faults installed (``server.reset(...)`` installs others)

``emulator(config, faults, dialect=...)`` takes the arguments of ``LocalServer`` and hands out a server
nobody else holds: two ``with emulator()`` at once are two servers. When the block ends the server
goes back to the pool once its requests have finished (one still stalled after 0.2 s is stopped
instead, so a late request never lands in the next test's accounting); the pool starts one server per
(dialect, config) it is asked for and stops them all at the end of the session (conftest). The
``server`` fixture of conftest is ``emulator(ServerConfig(max_tokens=8))``; ``chatui_server`` the same
in the chat-ui dialect. A hypothesis test resets the one it holds per example (``server.reset(plan)``).
Tests of ``LocalServer`` itself (start, stop, ports) still build their own.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from types import TracebackType

from starlette.types import ASGIApp, Receive, Scope, Send

from h2o_fsm import H2oClient, Phase, Retries, Timeouts
from h2o_fsm._table import SPEC, TRANSITIONS
from h2o_fsm.server import DialectName, Fault, FaultPlan, LocalServer, ServerConfig, bind_socket

__all__ = [
    "FAST_RETRIES", "FAST_TIMEOUTS", "POOL", "TRANSPORTS", "assert_clean", "caller_timeout",
    "cli_chat_and_sweep_through", "client_for", "emulator", "happy_path", "no_task_left", "refused_url",
    "stepped_states", "sweep_of_a_journal_that_is_down",
]

# Fast but real: small waits so that fault tests stay quick.
FAST_RETRIES = Retries(attempts=3, backoff=0.01, max_wait=0.05, max_time=2.0)
FAST_TIMEOUTS = Timeouts(connect=2.0, settings=5.0, create=5.0, send=5.0, token=5.0, delete=2.0, cleanup=5.0)

# The transports an engine test runs on: httpx-aiohttp (the default with the fast extra) and httpx's own.
TRANSPORTS = ("aiohttp", "httpx")


def client_for(server: LocalServer, transport: str, **kw: object) -> H2oClient:
    """A client of ``server`` on ``transport`` with the suite's fast retries and timeouts (``kw`` wins)."""
    kw.setdefault("retries", FAST_RETRIES)
    kw.setdefault("timeouts", FAST_TIMEOUTS)
    kw.setdefault("dialect", server.dialect)
    return H2oClient(server.url, transport=transport, **kw)  # type: ignore[arg-type]


def happy_path() -> list[tuple[Phase, Phase]]:
    """The (source, dest) transitions of one answered turn and then the end, read from the table: each
    state's ``next`` trigger from ``NEW`` until the caller has read an answer and the machine rests, then
    that state's ``idle`` trigger, then ``next`` to a terminal state (edges with a condition are not the
    happy path; an ``unless`` guard is false there)."""
    edges: list[tuple[Phase, Phase]] = []
    state, read = Phase.NEW, False
    while not state.is_terminal:
        spec = SPEC[state]
        trigger = spec.idle if read and spec.rests else spec.next
        edge = next(e for e in TRANSITIONS if e.trigger == trigger and state in e.sources and e.conditions is None)
        edges.append((state, edge.dest))
        read = read or spec.reads
        state = edge.dest
    return edges


def stepped_states() -> list[Phase]:
    """The state after each ``conv.step()`` along :func:`happy_path` (a cleanup state is passed within
    the step that ends in the terminal state)."""
    return [dest for _, dest in happy_path() if not SPEC[dest].cleanup]


def refused_url() -> str:
    """The URL of a loopback port nothing listens on (bound, then closed): a connection is refused."""
    sock = bind_socket()
    try:
        return "http://127.0.0.1:%d" % sock.getsockname()[1]
    finally:
        sock.close()


def assert_clean(server: LocalServer) -> None:
    """Every conversation the server created was deleted, exactly once."""
    acct = server.accounting
    assert acct.live == 0, acct.snapshot()
    assert acct.deleted == acct.created
    assert acct.deleted_twice == 0


async def no_task_left(wait: float = 1.0) -> set[asyncio.Task[object]]:
    """The tasks other than the current one still running after up to ``wait`` seconds (finalisers of
    async generators the GC collected may need a few loop iterations); empty when nothing was left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        left = {t for t in asyncio.all_tasks() if not t.done() and t is not asyncio.current_task()}
        if not left or loop.time() >= deadline:
            return left
        await asyncio.sleep(0.01)


def caller_timeout(delay: float) -> AbstractAsyncContextManager[object]:
    """A deadline around the caller's code: ``asyncio.timeout`` (3.11+), or an equivalent on 3.10
    (cancel the current task after ``delay``, raise ``TimeoutError`` if that cancelled it)."""
    if sys.version_info >= (3, 11):
        return asyncio.timeout(delay)
    return _Timeout310(delay)


class _Timeout310:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.fired = False
        self.handle: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> _Timeout310:
        task = asyncio.current_task()
        assert task is not None

        def fire() -> None:
            self.fired = True
            task.cancel()

        self.handle = asyncio.get_running_loop().call_later(self.delay, fire)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.handle is not None:
            self.handle.cancel()
        if self.fired and et is asyncio.CancelledError:
            raise TimeoutError from e


# ------------------------------------------------------------------------------------ the server pool
class _InFlight:
    """ASGI middleware counting the HTTP requests the app is still serving (streams included)."""

    def __init__(self, app: ASGIApp, counter: list[int]) -> None:
        self.app, self.counter = app, counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.counter[0] += 1  # only on the server's loop
        try:
            await self.app(scope, receive, send)
        finally:
            self.counter[0] -= 1


class EmulatorPool:
    """Running emulators by (dialect, config), each held by one test at a time; see the module docstring."""

    IDLE_WAIT = 0.2  # seconds a returned server may take to finish its requests before it is stopped

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str], list[tuple[LocalServer, list[int]]]] = {}
        self._lock = threading.Lock()
        self._retiring: list[threading.Thread] = []
        self.started = 0

    @contextmanager
    def lease(
        self, config: ServerConfig | None = None, faults: FaultPlan | list[Fault] | None = None,
        *, dialect: DialectName = "h2o",
    ) -> Iterator[LocalServer]:
        config = config or ServerConfig()
        key = (dialect, repr(config))  # ServerConfig may hold a dict: not hashable
        with self._lock:
            idle = self._idle.setdefault(key, [])
            entry = idle.pop() if idle else None
        if entry is None:
            server = LocalServer(config, dialect=dialect)
            counter = [0]
            server.app.add_middleware(_InFlight, counter=counter)
            server.start()
            self.started += 1
            entry = (server, counter)
        server, counter = entry
        server.reset(faults if faults is not None else FaultPlan())
        try:
            yield server
        finally:
            self._give_back(key, entry)

    def _give_back(self, key: tuple[str, str], entry: tuple[LocalServer, list[int]]) -> None:
        server, counter = entry
        deadline = time.monotonic() + self.IDLE_WAIT
        while counter[0] and time.monotonic() < deadline:
            time.sleep(0.005)
        if counter[0]:  # a stalled request would answer into the next test: this server is done
            thread = threading.Thread(target=server.stop, name=f"stop {server.url}", daemon=True)
            thread.start()
            self._retiring.append(thread)
            return
        server.reset()
        with self._lock:
            self._idle[key].append(entry)

    def close(self) -> None:
        """Stop every server of the pool (in parallel: each stop waits for uvicorn's shutdown poll)."""
        with self._lock:
            servers = [server for entries in self._idle.values() for server, _ in entries]
            self._idle.clear()
        threads = [threading.Thread(target=s.stop, daemon=True) for s in servers]
        for t in threads:
            t.start()
        for t in [*threads, *self._retiring]:
            t.join(15)
        self._retiring.clear()


POOL = EmulatorPool()
emulator = POOL.lease


# The synchronous SQLite methods a Journal's *_async methods run in worker threads.
JOURNAL_SYNC_METHODS = ("add", "running", "remove", "scan", "entries", "sweepable", "claim", "unclaim", "renew",
                        "release", "close")


def journal_threads(journal: object) -> set[int]:
    """The ids of the threads that run ``journal``'s SQLite I/O from now on (its public synchronous
    methods wrapped on the instance): the event loop's thread among them is I/O on the loop, whatever
    the wall clock of a loaded machine says."""
    seen: set[int] = set()
    for name in JOURNAL_SYNC_METHODS:
        method = getattr(journal, name)

        def wrapped(*args: object, _method: object = method, **kwargs: object) -> object:
            seen.add(threading.get_ident())
            return _method(*args, **kwargs)  # type: ignore[operator]

        setattr(journal, name, wrapped)
    return seen


def cli_chat_and_sweep_through(journal_url: str) -> None:
    """``h2o-fsm chat --journal URL`` records a conversation whose DELETE the server refuses, and
    ``h2o-fsm sweep --journal URL`` deletes it: the CLI takes a journal server's URL as the client does."""
    import io

    from h2o_fsm._journal_lease import open_journal
    from h2o_fsm.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        return main(list(argv), stdout=out, stderr=err, stdin=io.StringIO()), out.getvalue(), err.getvalue()

    async def journalled() -> list[str]:
        journal, _ = open_journal(journal_url)
        assert journal is not None
        try:
            return [entry.conversation_id for entry in (await journal.scan_async()).entries]
        finally:
            await journal.aclose()

    with emulator(ServerConfig(max_tokens=4), [Fault("delete", "status", status=403, count=-1)]) as server:
        code, _, err = run("chat", "Hi", "--base-url", server.url, "--dialect", "h2o", "--journal", journal_url)
        assert code == 1 and "delete failed" in err, err
        assert asyncio.run(journalled()) == sorted(server.accounting.live_ids) != []  # left for a sweep
        server.set_faults([])
        code, out, err = run("sweep", "--journal", journal_url, "--dialect", "h2o")  # its lease was released
        assert (code, err) == (0, "") and out.startswith("swept: deleted=1 "), (out, err)
        assert server.accounting.live == 0 and asyncio.run(journalled()) == []


async def sweep_of_a_journal_that_is_down(journal_url: str, secret: str) -> None:
    """Every way a client sweeps a journal (its own, a URL, a journal object) whose server refuses
    connections raises :class:`H2oJournalError` — the original as ``__cause__`` — and ``secret``, the
    URL's password, is in nothing it carries (message, chain, reprs, the formatted traceback)."""
    import traceback

    from h2o_fsm import H2oError, H2oJournalError
    from h2o_fsm._journal_lease import open_journal

    def texts(exc: BaseException) -> list[str]:
        said = ["".join(traceback.format_exception(exc))]
        seen: BaseException | None = exc
        while seen is not None:
            said += [str(seen), repr(seen), *getattr(seen, "__notes__", ())]
            seen = seen.__cause__ or seen.__context__
        return said

    base = refused_url()  # no request reaches it: the journal is read first
    given, _ = open_journal(journal_url)
    assert given is not None
    try:
        async with H2oClient(base, journal=journal_url, dialect="h2o", background_sweep=False) as own:
            for sweep in (own.sweep(), own.sweep(journal_url), own.sweep(given)):
                try:
                    await sweep
                except H2oJournalError as exc:
                    assert isinstance(exc, H2oError) and isinstance(exc.__cause__, OSError), repr(exc.__cause__)
                    assert exc.journal and exc.journal in str(exc) and "could not be read" in str(exc)
                    assert not [text for text in texts(exc) if secret in text]
                else:
                    raise AssertionError("a sweep of a journal that is down returned")
    finally:
        await given.aclose()
