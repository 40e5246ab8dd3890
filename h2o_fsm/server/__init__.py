"""The bundled chat-ui compatible server (a protocol emulator; needs the ``server`` extra).

``LocalServer`` runs it on loopback in a background thread; ``create_app`` gives the Starlette app;
``Fault``/``FaultPlan`` inject failures; ``Accounting`` counts what was created, deleted and leaked.
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover
    raise ImportError("h2o_fsm.server needs the 'server' extra: pip install 'h2o-fsm[server]'") from exc

from ._app import Accounting, RequestRecord, ServerConfig, create_app, generate
from ._faults import PHASES, Fault, FaultKind, FaultPhase, FaultPlan
from ._runner import LocalServer, bind_socket

__all__ = [
    "PHASES",
    "Accounting",
    "Fault",
    "FaultKind",
    "FaultPhase",
    "FaultPlan",
    "LocalServer",
    "RequestRecord",
    "ServerConfig",
    "bind_socket",
    "create_app",
    "generate",
]
