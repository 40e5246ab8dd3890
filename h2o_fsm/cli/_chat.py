"""``h2o-fsm chat``: one-shot and stdin prompts (with ``--step``); the interactive mode is ``_interactive``."""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from typing import IO, TextIO

from .._client import H2oClient
from .._config import Limits
from .._conversation import Conversation
from .._exceptions import H2oError
from .._protocol import Message, merge_parameters, validate_messages
from .._table import STATES, destination
from ._errors import UsageError, error_line
from ._interactive import Interactive
from ._jsonout import answer_object, emit, error_object
from ._listing import note_offered_models
from ._setup import ChatSetup, StatusLine, messages, open_journal
from ._signals import Interrupted, Signals
from ._stepping import stepped

__all__ = ["ChatSetup", "StatusLine", "messages", "one_shot", "open_journal", "prompt_from", "run_chat", "stepped"]


def prompt_from(args: argparse.Namespace, stdin: IO[str]) -> str:
    """The one-shot prompt: the argument, or all of stdin for ``-`` / a pipe."""
    if args.prompt is not None and args.prompt != "-":
        return str(args.prompt)
    if args.step:
        raise UsageError("--step reads Enter from stdin: give the prompt as an argument")
    limit = Limits().max_prompt_bytes
    text = stdin.read(limit + 1)  # bounded: 200 MB piped in is refused, not held in memory
    if len(text) > limit:
        raise UsageError(f"the prompt from stdin is over {limit} bytes (Limits.max_prompt_bytes)")
    text = text.rstrip("\r\n")
    if not text.strip():
        raise UsageError("no prompt: stdin was empty (give PROMPT, or pipe the prompt in)")
    return text


async def _one_shot_turn(setup: ChatSetup, prompt: str, out: TextIO, err: TextIO, stdin: IO[str]) -> int:
    # bad input refused before any request (dialect="auto" detects the server first)
    validate_messages(messages(setup.args.system, prompt))
    merge_parameters(setup.parameters)
    async with setup.client() as client:
        try:
            return await _turn(setup, client, prompt, out, err, stdin=stdin)
        except H2oError as exc:
            await note_offered_models(client, exc, setup.args.model)  # a refused model: the advice lists the server's
            raise


async def _turn(setup: ChatSetup, client: H2oClient, prompt: str, out: TextIO, err: TextIO, *, stdin: IO[str]) -> int:
    status = setup.status
    conv = setup.conversation(client)
    async with conv:
        if setup.args.json:
            await _json_turn(conv, messages(setup.args.system, prompt), out, client.dialect)
        elif setup.args.step:
            await stepped(conv, messages(setup.args.system, prompt), out, err, stdin, until_ready=False)
        else:
            first = True
            first_step = destination(STATES[0].phase, STATES[0].next or "", lambda _: False)  # not created yet
            status.show(first_step or STATES[0].phase)
            try:
                async for chunk in conv.stream(messages(setup.args.system, prompt)):
                    if first:  # from here the answer owns the line: no more status
                        status.clear()
                        status.enabled = False
                        first = False
                    out.write(chunk)
                    out.flush()
            except BaseException:
                if not first:  # a cut answer: the error that follows starts on a line of its own
                    out.write("\n")
                    out.flush()
                raise
    status.clear()
    if not (setup.args.step or setup.args.json):
        out.write("\n")
        out.flush()
    return 0


async def _json_turn(conv: Conversation, prompt: list[Message], out: TextIO, dialect: str) -> None:
    t0 = time.perf_counter()
    parts = []
    async for chunk in conv.stream(prompt):
        parts.append(chunk)
        emit(out, {"type": "chunk", "text": chunk})
    emit(out, answer_object(conv, "".join(parts), dialect, (time.perf_counter() - t0) * 1000.0))


def one_shot(setup: ChatSetup, prompt: str, out: TextIO, err: TextIO, stdin: IO[str]) -> int:
    """One answer on a loop of its own; Ctrl-C / SIGTERM stop it and delete (see ``_signals``)."""
    signals = Signals(asyncio.new_event_loop(), setup.stopping)
    abandon = False
    args = setup.args
    try:
        return signals.run(_one_shot_turn(setup, prompt, out, err, stdin))
    except H2oError as exc:
        if args.json:  # on stdout too, for the program reading it; main() prints the line on stderr
            emit(out, error_object(exc, error_line(exc, args.base_url or "", args.dialect, debug=args.debug)))
        raise
    except Interrupted as stop:
        abandon = stop.gave_up
        setup.status.clear()
        line = setup.interrupted_line()
        if args.json:
            emit(out, {"type": "interrupted", "signal": signal.Signals(stop.signum).name,
                       "left": setup.left_behind() or None, "message": line.removeprefix("h2o-fsm: ")})
        err.write(line + "\n")
        err.flush()
        return stop.code
    finally:
        signals.close(abandon=abandon)


def run_chat(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: IO[str], *, standard_io: bool) -> int:
    """``chat``: interactive on a terminal with no prompt, otherwise one answer."""
    interactive = args.prompt is None and stdin.isatty() and not args.json
    prompt = None if interactive else prompt_from(args, stdin)
    setup = ChatSetup(args, err)
    try:
        if prompt is None:
            return Interactive(setup, out, err, stdin, standard_io=standard_io).run()
        return one_shot(setup, prompt, out, err, stdin)
    finally:
        setup.close()
