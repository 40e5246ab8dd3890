"""h2o-fsm: an explicit state-machine conversation engine for the H2O (HuggingChat chat-ui) chat API.

Public API:

* :class:`H2o` — the deprecated provider's API (``create_async_generator``, ``create_async``,
  ``create_completion``), compatible with existing callers.
* :class:`H2oClient` and :class:`Conversation` — the native API for services: one connection pool,
  many concurrent multi-turn conversations, inspectable state and history, step-by-step driving.
* :class:`Phase` — the machine's states; :data:`TRANSITIONS` — its table.
* :class:`H2oError` and its subclasses — see ``h2o_fsm._exceptions`` for the tree.
"""

from __future__ import annotations

from ._client import ClientState, H2oClient
from ._config import Limits, Timeouts
from ._conversation import Conversation
from ._dialects import DialectName
from ._events import FinalAnswer
from ._exceptions import (
    H2oCleanupError,
    H2oDialectError,
    H2oError,
    H2oJournalError,
    H2oLimitError,
    H2oProtocolError,
    H2oStateError,
    H2oStatusError,
    H2oTimeoutError,
    H2oTransportError,
    H2oUpstreamError,
    H2oUsageLimitError,
)
from ._journal import Journal, JournalEntry, JournalScan
from ._journal_base import JournalBackend
from ._journal_postgres import PostgresJournal
from ._journal_redis import RedisJournal
from ._listing_types import ConversationSummary, ModelInfo
from ._phase import Phase
from ._protocol import DEFAULT_BASE_URL, DEFAULT_MODEL, DEFAULT_PARAMETERS, Message, Messages
from ._provider import H2o
from ._records import StepResult, TransitionRecord
from ._retry import Retries
from ._runtime import TransitionObserver
from ._sweep import SweepReport
from ._sync import H2oSyncClient, SyncConversation
from ._table import STATES, TRANSITIONS, Edge, StateSpec
from ._transport import fast_transport
from ._version import VERSION

Final = FinalAnswer  # the name of 0.1.0

__version__ = VERSION

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "DEFAULT_PARAMETERS",
    "STATES",
    "TRANSITIONS",
    "ClientState",
    "Conversation",
    "ConversationSummary",
    "DialectName",
    "Edge",
    "Final",
    "FinalAnswer",
    "H2o",
    "H2oCleanupError",
    "H2oClient",
    "H2oDialectError",
    "H2oError",
    "H2oJournalError",
    "H2oLimitError",
    "H2oProtocolError",
    "H2oStateError",
    "H2oStatusError",
    "H2oSyncClient",
    "H2oTimeoutError",
    "H2oTransportError",
    "H2oUpstreamError",
    "H2oUsageLimitError",
    "Journal",
    "JournalBackend",
    "JournalEntry",
    "JournalScan",
    "Limits",
    "Message",
    "Messages",
    "ModelInfo",
    "Phase",
    "PostgresJournal",
    "RedisJournal",
    "Retries",
    "StateSpec",
    "StepResult",
    "SweepReport",
    "SyncConversation",
    "Timeouts",
    "TransitionObserver",
    "TransitionRecord",
    "__version__",
    "fast_transport",
]
