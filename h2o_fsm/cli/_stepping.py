"""``--step``: run a conversation one phase per Enter, showing each step's result.

A step that fails is shown (its status, headers and the start of the error body, scrubbed), and the
conversation waits there — the server's state at the failure is what one debugs: each next Enter runs one
step of its ending (stop, DELETE). ``q``, end of input or Ctrl-C at such a pause still delete it (the
conversation's block ends it); the failure is then the command's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import IO, TextIO

from .._conversation import Conversation
from .._exceptions import H2oError, H2oStatusError
from .._phase import Phase
from .._protocol import Message
from .._records import StepResult
from ._errors import Aborted

__all__ = ["failure_lines", "result_line", "stepped"]

BODY_SHOWN = 200
"""Characters of an error body a failed step shows."""


async def stepped(
    conv: Conversation, prompt: str | list[Message], out: TextIO, err: TextIO, stdin: IO[str], *, until_ready: bool
) -> None:
    """Run the conversation one phase per Enter; ``until_ready`` stops after the answer (interactive)."""
    conv.queue(prompt)
    failure: H2oError | None = None
    while not conv.state.is_terminal:
        trigger = conv.next_trigger()
        err.write(f"[{conv.state.value}] next: {trigger} → {conv.describe_next()}\n")
        err.write("press Enter to run it, q to quit: ")
        err.flush()
        line = await _read_line(stdin)
        if not line or line.strip().lower() in ("q", "quit"):
            err.write("\naborted\n" if not line else "aborted\n")
            if failure is not None:  # leaving the block runs the rest of the ending
                raise failure
            raise Aborted
        try:
            result = await conv.step()
        except H2oError as exc:
            if conv.state.is_terminal or failure is not None:
                raise
            failure = exc
            err.write("".join(f"{text}\n" for text in failure_lines(exc)))
            err.write("  the conversation waits at the failure; the next steps are its ending\n")
            continue
        err.write(result_line(result) + "\n")
        if result.text is not None:
            out.write(result.text + "\n")
            out.flush()
        if until_ready and conv.state is Phase.READY:
            return
    if failure is not None:
        raise failure


async def _read_line(stdin: IO[str]) -> str:
    """One line of ``stdin``, read in a daemon thread: a Ctrl-C at the pause ends the command at once (a
    thread of the loop's executor blocked in ``readline`` would keep ``asyncio.run`` from returning)."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()

    def deliver(line: str) -> None:
        if not answer.done():
            answer.set_result(line)

    def read() -> None:
        try:
            line = stdin.readline()
        except (OSError, ValueError):  # a closed stdin is the end of input
            line = ""
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits for it
            loop.call_soon_threadsafe(deliver, line)

    threading.Thread(target=read, name="h2o-fsm --step input", daemon=True).start()
    return await answer


def _printable(text: str) -> str:
    """The server's words on one line, without control characters (it is untrusted: no terminal escapes)."""
    return "".join(ch if ch.isprintable() else " " for ch in " ".join(text.split()))


def _headers(headers: tuple[tuple[str, str], ...]) -> str:
    return f" [{', '.join(f'{n}: {_printable(v)}' for n, v in headers)}]" if headers else ""


def result_line(result: StepResult) -> str:
    """The line a step's result prints: its state, status, selected headers, time."""
    status = f" HTTP {result.status}" if result.status is not None else ""
    skipped = " (skipped)" if result.skipped else ""
    return f"  → {result.state.value}{status}{skipped} in {result.elapsed_ms:.1f} ms{_headers(result.headers)}"


def failure_lines(exc: H2oError) -> list[str]:
    """What a failed step prints: the error, and for an error answer its headers and the start of its body
    (already scrubbed of our secrets and cookies; at most ``BODY_SHOWN`` characters)."""
    phase = exc.phase.value if exc.phase is not None else "step"
    lines = [f"  ✗ {phase} failed: {type(exc).__name__}: {_printable(exc.message)}"]
    if isinstance(exc, H2oStatusError):
        lines[0] += _headers(exc.headers)
        body = _printable(exc.body)
        if body:
            lines.append(f"    body: {body[:BODY_SHOWN]}" + ("…" if len(body) > BODY_SHOWN else ""))
    return lines
