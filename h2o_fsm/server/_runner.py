"""Run the emulator: in a background thread (tests, demo) or in the foreground (``h2o-fsm serve``)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

import uvicorn

from ._app import Accounting, ServerConfig, create_app, state_of
from ._faults import Fault, FaultPlan
from ._state import quiet_expected_errors

__all__ = ["LocalServer", "bind_socket", "serve_forever"]


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket (``port=0``: an ephemeral port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP, and
    # without it small responses written in two parts wait ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn(app: object, **kw: object) -> uvicorn.Server:
    quiet_expected_errors()  # installed when a server is made, not when the package is imported
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
        **kw,  # type: ignore[arg-type]
    )
    return uvicorn.Server(config)


class LocalServer:
    """The bundled emulator on loopback, in a background thread, speaking ``dialect``
    (``"h2o"``: the 2023 protocol, the default; ``"chat-ui"``: chat-ui as it is today).

    ::

        with LocalServer(faults=[Fault("stream", "drop", at_token=3)], dialect="chat-ui") as server:
            ...
            assert server.accounting.live == 0      # nothing leaked

    Works as a sync or async context manager; ``start()``/``stop()`` for fixtures. Between tests or
    hypothesis examples, :meth:`reset` forgets everything; :meth:`forget_sessions` emulates a server
    whose session store was wiped.
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        faults: FaultPlan | list[Fault] | None = None,
        *,
        dialect: str = "h2o",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.config = config or ServerConfig()
        self.dialect: str = dialect
        self.faults = faults if isinstance(faults, FaultPlan) else FaultPlan(faults or [])
        self.accounting = Accounting(self.config.request_log_size, self.config.message_log_size)
        self.app = create_app(self.config, self.faults, self.accounting, dialect=dialect)
        self._host, self._port = host, port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.url = ""

    def __repr__(self) -> str:
        return f"<LocalServer {self.dialect} {self.url or 'stopped'}>"

    def set_faults(self, faults: FaultPlan | list[Fault]) -> FaultPlan:
        """Replace the fault plan of a running server (e.g. one plan per hypothesis example)."""
        plan = faults if isinstance(faults, FaultPlan) else FaultPlan(faults)
        self.faults = plan
        state_of(self.app).faults = plan
        return plan

    def reset(self, faults: FaultPlan | list[Fault] | None = None) -> FaultPlan:
        """Forget conversations, sessions, faults and accounting (e.g. between hypothesis examples);
        running generations are stopped. Installs ``faults`` (default: none) and returns the plan."""
        st = state_of(self.app)
        self._on_loop(st.reset)
        self.accounting.reset()
        return self.set_faults(faults if faults is not None else FaultPlan())

    def forget_sessions(self) -> None:
        """Forget every session, as a server whose session store was wiped (or whose sessions expired):
        old cookies are unknown (a request gets a new cookie; h2o: the welcome gate answers 405 until
        settings are sent again), their conversations answer 404 and stay live, reported by the
        accounting as ``orphaned`` (see ``Accounting.excused_ids``)."""
        self._on_loop(state_of(self.app).forget_sessions)

    def _on_loop(self, fn: Callable[[], None], timeout: float = 5.0) -> None:
        """Run ``fn`` on the server's event loop (where the apps mutate their state), or here if stopped."""
        loop = self._loop
        if loop is None or self._thread is None or not loop.is_running():
            fn()
            return

        async def call() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(call(), loop).result(timeout)

    def start(self, timeout: float = 10.0) -> LocalServer:
        if self._thread is not None:
            raise RuntimeError("server already started")
        sock = bind_socket(self._host, self._port)
        self.url = _url(sock)
        server = self._server = _uvicorn(self.app)
        errors: list[BaseException] = []

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            await server.serve(sockets=[sock])

        def run() -> None:
            try:
                asyncio.run(serve())
            except BaseException as exc:  # report start-up failures to start()
                errors.append(exc)
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=f"h2o-fsm-server {self.url}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if errors or not self._thread.is_alive():
                raise RuntimeError(f"the local server failed to start: {errors[:1]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the local server did not start in time")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout / 2)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout / 2)
        self._server = self._thread = self._loop = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> LocalServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)


def serve_forever(
    host: str = "127.0.0.1",
    port: int = 0,
    config: ServerConfig | None = None,
    faults: FaultPlan | None = None,
    *,
    dialect: str = "h2o",
) -> tuple[str, uvicorn.Server, object]:
    """Prepare a foreground server: returns (url, server, socket); run with ``server.run(sockets=[sock])``."""
    app = create_app(config or ServerConfig(), faults or FaultPlan(), dialect=dialect)  # before binding: may raise
    sock = bind_socket(host, port)
    return _url(sock), _uvicorn(app), sock
