"""The emulator's app factory: one Starlette app per dialect over shared state, plus the accounting view.

It is an emulator of the protocol (docs/protocol.md), not a language model: answers come from a
deterministic generator seeded by the conversation's history (:func:`generate`).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._dialects import emulator_app
from ._accounting import Accounting, MessageRecord, RequestRecord, TurnRecord
from ._faults import FaultPlan
from ._state import ServerConfig, State, generate

__all__ = [
    "Accounting",
    "MessageRecord",
    "RequestRecord",
    "ServerConfig",
    "TurnRecord",
    "create_app",
    "generate",
    "state_of",
]


def create_app(
    config: ServerConfig | None = None,
    faults: FaultPlan | None = None,
    accounting: Accounting | None = None,
    *,
    dialect: str = "h2o",
) -> Starlette:
    """The Starlette app of ``dialect`` ("h2o": the 2023 protocol; "chat-ui": chat-ui today; the factory
    is the one its registry entry names).

    ``GET /_emulator/accounting`` serves the accounting snapshot (for a server in another process).
    """
    factory = emulator_app(dialect)  # an unknown dialect, or one the emulator does not speak: ValueError
    config = config or ServerConfig()
    acct = accounting or Accounting(config.request_log_size, config.message_log_size)
    st = State(config, faults if faults is not None else FaultPlan(), acct)

    async def accounting_view(request: Request) -> Response:
        return JSONResponse(acct.snapshot())

    extra = [Route("/_emulator/accounting", accounting_view, methods=["GET"])]
    app: Starlette = factory(st, extra)
    app.state.h2o = st
    app.state.dialect = dialect
    return app


def state_of(app: Starlette) -> State:
    """The state an app of :func:`create_app` runs on."""
    st = app.state.h2o
    assert isinstance(st, State)
    return st
