"""What every ``chat`` opens before talking to the server (files, client options, the status line),
and what it knows at the end about the conversations it made."""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from pathlib import Path
from typing import IO, TextIO

from .._catalog import check_parameters
from .._client import H2oClient
from .._config import Timeouts
from .._conversation import Conversation
from .._dialects import get_dialect
from .._journal import Journal
from .._journal_base import JournalBackend
from .._journal_lease import open_journal as open_backend
from .._log import redact
from .._phase import Phase
from .._protocol import Message
from .._records import TransitionRecord
from .._table import SPEC, destination
from ._errors import UsageError, os_error_text
from ._parser import cookies_from

__all__ = ["ChatSetup", "StatusLine", "is_journal_url", "messages", "open_journal"]


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


def is_journal_url(spec: str) -> bool:
    """``--journal`` names a journal server (``redis://``, ``postgresql://``…), not a file."""
    return "://" in spec


def open_journal(spec: str, *, must_exist: bool = False) -> JournalBackend:
    """The journal ``--journal`` names, as ``H2oClient(journal=...)`` takes it: a file path (SQLite) or a
    ``redis://`` / ``rediss://`` / ``postgresql://`` URL; else a :class:`UsageError` saying in one line
    why not. Opening a URL connects to nothing yet (the first call does)."""
    if not is_journal_url(spec):
        return _open_file(spec, must_exist=must_exist)
    try:
        journal, _ = open_backend(spec)
    except (ValueError, ImportError) as exc:
        raise UsageError(f"--journal {redact(spec)}: {exc}") from None
    assert journal is not None
    return journal


def _open_file(path: str, *, must_exist: bool) -> Journal:
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
        self.args, self.err = args, err
        self.status = StatusLine(err)
        self.status.enabled = self.status.tty and not args.step  # --step shows each result on its own line
        self.conversations: list[Conversation] = []  # every one this command made, to say what is left
        self.cookies = cookies_from(args.cookie)
        self.trace: IO[str] | None = None
        self.journal: Journal | None = None
        try:
            if args.trace:
                try:
                    self.trace = _writable_file(args.trace, "--trace").open("w", encoding="utf-8")
                except OSError as exc:
                    raise UsageError(f"--trace {args.trace}: {os_error_text(exc)}") from None
            if args.journal and not is_journal_url(args.journal):
                self.journal = _open_file(args.journal, must_exist=False)
            elif args.journal:  # a journal server: checked now; the client opens its own, closed with it
                open_journal(args.journal)
        except BaseException:
            self.close()
            raise

    def observe(self, record: TransitionRecord) -> None:
        if self.trace is not None:
            # when the transition ended: wall clock (Unix seconds) and the monotonic clock
            times = {"time": round(time.time(), 6), "monotonic": round(time.monotonic(), 6)}
            self.trace.write(json.dumps({**times, **record.as_dict()}) + "\n")
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
            journal=self.journal or self.args.journal or None,
            dialect=args.dialect,
            cookies=dict(self.cookies) or None,
        )

    @property
    def parameters(self) -> dict[str, object]:
        return dict(self.args.param or [])

    def check_parameters(self, client: H2oClient) -> None:
        """A ``--param`` name the dialect of ``client`` (detected) does not know: refused as the API refuses
        an unknown keyword argument (``TypeError``: exit 2)."""
        check_parameters(get_dialect(client.dialect), self.parameters, "--param")

    def conversation(self, client: H2oClient) -> Conversation:
        """A new conversation of ``client`` with this command's parameters (remembered)."""
        self.check_parameters(client)
        conv = client.conversation(parameters=self.parameters)
        self.conversations.append(conv)
        return conv

    def stopping(self) -> None:
        """Said at once on the first Ctrl-C / SIGTERM (the deleting may take up to the cleanup budget)."""
        self.status.clear()
        self.err.write("\nh2o-fsm: stopping — deleting the conversation… (Ctrl-C again to stop waiting)\n")
        self.err.flush()

    def left_behind(self) -> str:
        """What may be left on the server, as far as this command can know ('' when nothing)."""
        ids, unnamed = [], False
        for conv in self.conversations:
            if conv.state.is_terminal and conv.cleanup_error is None:
                continue
            cid = conv.conversation_id
            if cid is not None:
                ids.append(cid)
            elif conv.state is Phase.CREATE:
                unnamed = True  # a create in flight: the server may have made one we cannot name
        said = []
        if ids:
            where = redact(self.args.base_url or "")
            if self.args.journal:
                # this process's lease still holds it until it expires (30 s): --all does not wait for that
                fix = f"`h2o-fsm sweep --journal {redact(self.args.journal)} --all` removes it"
            else:
                fix = "delete it in the web UI (with --journal FILE, `h2o-fsm sweep --journal FILE` would)"
            said.append(f"conversation {', '.join(ids)} may be left on {where} — {fix}")
        if unnamed:
            said.append("the server may have made a conversation whose id never arrived — check its web UI")
        return "; ".join(said)

    def interrupted_line(self) -> str:
        """The last line after a Ctrl-C / SIGTERM: what was deleted, or honestly what may be left."""
        left = self.left_behind()
        if left:
            return f"h2o-fsm: interrupted before the cleanup finished: {left}"
        if any(conv.conversation_id is not None for conv in self.conversations):
            return "h2o-fsm: interrupted; the conversation was deleted"
        return "h2o-fsm: interrupted; nothing was left on the server"

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


