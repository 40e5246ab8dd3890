"""``--json``: one JSON object per line on stdout, for programs reading the command's output.

``chat``: ``{"type": "chunk", "text": …}`` per chunk, then ``{"type": "answer", …}`` (the whole text
and its metadata), or ``{"type": "error", "phase", "status", "conversation_id", "error", "message"}``,
or ``{"type": "interrupted", …}``. Listing commands: one object per item, then a summary.
"""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from .._conversation import Conversation
from .._exceptions import H2oError

__all__ = ["add_json_option", "answer_object", "emit", "error_object"]


def add_json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per line on stdout (for programs)")


def emit(out: TextIO, obj: dict[str, object]) -> None:
    out.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    out.flush()


def answer_object(conv: Conversation, text: str, dialect: str, elapsed_ms: float) -> dict[str, object]:
    final = conv.final
    return {
        "type": "answer",
        "text": text,
        "conversation_id": conv.conversation_id,
        "model": conv.model,
        "dialect": dialect,
        "elapsed_ms": round(elapsed_ms, 3),
        "transitions": len(conv.history),
        "final": None if final is None else {
            "generated_text": final.generated_text,
            "details": dict(final.details) if final.details is not None else None,
            "interrupted": final.interrupted,
            "reasoning": final.reasoning,
            "title": final.title,
        },
    }


def error_object(exc: H2oError, line: str) -> dict[str, object]:
    """``line``: the one-line message the command prints on stderr (already scrubbed)."""
    return {
        "type": "error",
        "phase": exc.phase.value if exc.phase is not None else None,
        "status": exc.status,
        "conversation_id": exc.conversation_id,
        "error": type(exc).__name__,
        "message": line.removeprefix("h2o-fsm: "),
    }
