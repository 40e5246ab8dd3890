"""``--step``: run a conversation one phase per Enter, showing each step's result."""

from __future__ import annotations

import asyncio
from typing import IO, TextIO

from .._conversation import Conversation
from .._phase import Phase
from .._protocol import Message
from ._errors import Aborted

__all__ = ["stepped"]


async def stepped(
    conv: Conversation, prompt: str | list[Message], out: TextIO, err: TextIO, stdin: IO[str], *, until_ready: bool
) -> None:
    """Run the conversation one phase per Enter; ``until_ready`` stops after the answer (interactive)."""
    conv.queue(prompt)
    while not conv.state.is_terminal:
        trigger = conv.next_trigger()
        err.write(f"[{conv.state.value}] next: {trigger} → {conv.describe_next()}\n")
        err.write("press Enter to run it, q to quit: ")
        err.flush()
        line = await asyncio.to_thread(stdin.readline)
        if not line or line.strip().lower() in ("q", "quit"):
            err.write("\naborted\n" if not line else "aborted\n")
            raise Aborted
        result = await conv.step()
        status = f" HTTP {result.status}" if result.status is not None else ""
        skipped = " (skipped)" if result.skipped else ""
        err.write(f"  → {result.state.value}{status}{skipped} in {result.elapsed_ms:.1f} ms\n")
        if result.text is not None:
            out.write(result.text + "\n")
            out.flush()
        if until_ready and conv.state is Phase.READY:
            return
