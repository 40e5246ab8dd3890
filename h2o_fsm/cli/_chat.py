"""``h2o-fsm chat``: the shared set-up (files, client options, status line), one-shot and stdin prompts, ``--step``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
from pathlib import Path
from typing import IO, TextIO

from .._client import H2oClient
from .._config import Timeouts
from .._conversation import Conversation
from .._journal import Journal
from .._phase import Phase
from .._protocol import Message, merge_parameters, validate_messages
from .._records import TransitionRecord
from .._table import SPEC, STATES, destination
from ._errors import Aborted, UsageError, os_error_text
from ._parser import cookies_from

__all__ = ["ChatSetup", "StatusLine", "messages", "open_journal", "run_chat", "stepped"]


class StatusLine:
    """A light live status line on stderr (only when stderr is a terminal)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.enabled = self.tty
        self.shown = False

    def show(self, text: str) -> None:
        if self.enabled:
            self.stream.write(f"\r\x1b[2K[{text}]")
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self.shown = False


def _writable_file(path: str, option: str) -> Path:
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{option} {path}: is a folder; give a file name")
    if not target.parent.is_dir():
        raise UsageError(f"{option} {path}: the folder {target.parent} does not exist")
    return target


def open_journal(path: str, *, must_exist: bool = False) -> Journal:
    """The journal at ``path``, or a :class:`UsageError` saying in one line why not."""
    target = Path(path)
    if must_exist and not target.exists():
        raise UsageError(f"--journal {path}: no such journal file")
    _writable_file(path, "--journal")
    try:
        return Journal(target)
    except sqlite3.DatabaseError:
        raise UsageError(f"--journal {path}: not an h2o-fsm journal (not a SQLite database)") from None
    except (OSError, sqlite3.Error) as exc:
        text = os_error_text(exc) if isinstance(exc, OSError) else str(exc)
        raise UsageError(f"--journal {path}: {text}") from None


class ChatSetup:
    """Everything ``chat`` opens before talking to the server, closed by :meth:`close`."""

    def __init__(self, args: argparse.Namespace, err: TextIO) -> None:
        self.args = args
        self.status = StatusLine(err)
        self.cookies = cookies_from(args.cookie)
        self.trace: IO[str] | None = None
        self.journal: Journal | None = None
        try:
            if args.trace:
                try:
                    self.trace = _writable_file(args.trace, "--trace").open("w", encoding="utf-8")
                except OSError as exc:
                    raise UsageError(f"--trace {args.trace}: {os_error_text(exc)}") from None
            if args.journal:
                self.journal = open_journal(args.journal)
        except BaseException:
            self.close()
            raise

    def observe(self, record: TransitionRecord) -> None:
        if self.trace is not None:
            self.trace.write(json.dumps(record.as_dict()) + "\n")
            self.trace.flush()
        if not record.dest.is_terminal:
            # the record is of a step that is over: show the one running now (the table says which)
            spec = SPEC[record.dest]
            running = destination(record.dest, spec.next) if spec.next and not (spec.reads or spec.idle) else None
            self.status.show(running or record.dest)

    def client(self) -> H2oClient:
        """The client of this command's options (cookies as given, never printed)."""
        args = self.args
        timeouts = Timeouts(total=args.timeout) if args.timeout else Timeouts()
        return H2oClient(
            args.base_url,
            model=args.model,
            on_transition=self.observe,
            timeouts=timeouts,
            journal=self.journal,
            dialect=args.dialect,
            cookies=dict(self.cookies) or None,
        )

    @property
    def parameters(self) -> dict[str, object]:
        return dict(self.args.param or [])

    def close(self) -> None:
        self.status.clear()
        if self.trace is not None:
            self.trace.close()
            self.trace = None
        if self.journal is not None:
            self.journal.close()
            self.journal = None


def messages(system: str | None, prompt: str) -> list[Message]:
    msgs: list[Message] = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": prompt})
    return msgs


def prompt_from(args: argparse.Namespace, stdin: IO[str]) -> str:
    """The one-shot prompt: the argument, or all of stdin for ``-`` / a pipe."""
    if args.prompt is not None and args.prompt != "-":
        return str(args.prompt)
    if args.step:
        raise UsageError("--step reads Enter from stdin: give the prompt as an argument")
    text = stdin.read().rstrip("\r\n")
    if not text.strip():
        raise UsageError("no prompt: stdin was empty (give PROMPT, or pipe the prompt in)")
    return text


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


async def _one_shot(setup: ChatSetup, prompt: str, out: TextIO, err: TextIO, stdin: IO[str]) -> int:
    status = setup.status
    # bad input refused before any request (dialect="auto" detects the server first)
    validate_messages(messages(setup.args.system, prompt))
    merge_parameters(setup.parameters)
    async with setup.client() as client:
        conv = client.conversation(parameters=setup.parameters)
        async with conv:
            if setup.args.step:
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
        if not setup.args.step:
            out.write("\n")
            out.flush()
    return 0


def run_chat(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: IO[str], *, standard_io: bool) -> int:
    """``chat``: interactive on a terminal with no prompt, otherwise one answer."""
    interactive = args.prompt is None and stdin.isatty()
    prompt = None if interactive else prompt_from(args, stdin)
    setup = ChatSetup(args, err)
    try:
        if prompt is None:
            from ._interactive import Interactive

            return Interactive(setup, out, err, stdin, standard_io=standard_io).run()
        return asyncio.run(_one_shot(setup, prompt, out, err, stdin))
    finally:
        setup.close()
