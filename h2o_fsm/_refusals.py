"""Error answers that mean something other than their status: chat-ui's usage limit (a 429 that no retry
can help) and the answer a server of the other dialect gives. The one place an error status becomes
:class:`H2oUsageLimitError` or :class:`H2oDialectError` instead of a plain :class:`H2oStatusError`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._dialects import suggested, wrong_dialect_advice
from ._dialects.chatui.catalog import is_usage_limit
from ._exceptions import H2oDialectError, H2oStatusError, H2oUsageLimitError

if TYPE_CHECKING:
    from ._dialects import Dialect
    from ._phase import Phase

__all__ = ["USAGE_LIMIT_ADVICE", "status_error"]

USAGE_LIMIT_ADVICE = (
    "the server keeps too many conversations of this session: retrying cannot help; delete old ones "
    "(a sweep of the journal, or `h2o-fsm conversations --delete-all --yes`)"
)


def status_error(
    dialect: Dialect | None,
    status: int,
    detail: str,
    *,
    phase: Phase,
    conversation_id: str | None,
    body: str,
    retry_after: float | None,
) -> H2oStatusError:
    """The error for an answer of ``status`` to ``phase``'s request; ``detail`` is what happened without the
    status (``HTTP <status>`` leads the message); ``body`` is the scrubbed snippet."""
    def make(cls: type[H2oStatusError], text: str) -> H2oStatusError:
        return cls(f"HTTP {status} {text}", detail=text, phase=phase, status=status,
                   conversation_id=conversation_id, body=body, retry_after=retry_after)

    if is_usage_limit(status, body):
        return make(H2oUsageLimitError, f"{detail} — {USAGE_LIMIT_ADVICE}")
    other = None if dialect is None else suggested(phase, status, dialect.name)  # another dialect's sign
    if other is not None:
        err = make(H2oDialectError, f"{detail} — {wrong_dialect_advice(other)}")
        assert isinstance(err, H2oDialectError)
        err.suggested_dialect = other
        return err
    return make(H2oStatusError, detail)
