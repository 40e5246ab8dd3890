"""``h2o-fsm chat`` with no prompt on a terminal: a conversation of several turns, ``/new``, ``/exit``, Ctrl-C.

The prompt is read in the main thread while the event loop is idle (so ``readline`` editing, history and
Ctrl-C work as in any terminal program); each turn then runs on the one event loop that owns the client.
During a turn Ctrl-C cancels that turn only: the engine deletes the conversation and a fresh one starts.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import IO, TextIO

from .._client import H2oClient
from .._conversation import Conversation
from .._exceptions import H2oError
from ._errors import EXIT_FAILED, EXIT_INTERRUPTED, error_line
from ._listing import note_offered_models
from ._setup import ChatSetup, messages
from ._signals import Interrupted, Signals, terminate_raises
from ._stepping import stepped

__all__ = ["Interactive"]

PROMPT = "you> "
HELP = "type a message; /new starts a fresh conversation, /exit or Ctrl-D ends, Ctrl-C stops an answer"


def _enable_readline() -> None:
    """Line editing and in-session history where ``readline`` exists (prompts are not saved to disk)."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401


class Interactive:
    """The conversation loop; :meth:`run` returns the exit code."""

    def __init__(self, setup: ChatSetup, out: TextIO, err: TextIO, stdin: IO[str], *, standard_io: bool) -> None:
        self.setup, self.out, self.err, self.stdin = setup, out, err, stdin
        self.standard_io = standard_io  # the process's own stdin/stdout: input() with readline
        self.signals = Signals(asyncio.new_event_loop(), setup.stopping)
        self.client: H2oClient | None = None
        self.conv: Conversation | None = None
        self.turns = 0  # turns sent in the current conversation
        self.failed = False

    def _say(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    def _read(self) -> str:
        """One line from the user; ``EOFError`` at Ctrl-D, ``KeyboardInterrupt`` at Ctrl-C."""
        if self.standard_io:
            return input(PROMPT)
        self.out.write(PROMPT)
        self.out.flush()
        line = self.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    # -- the conversation ------------------------------------------------------------------------------
    async def _open(self) -> None:
        self.client = self.setup.client()
        await self.client.detect_dialect()  # dialect="auto": once, before the first conversation
        self.setup.check_parameters(self.client)  # a --param the dialect does not know: before the banner

    async def _end(self) -> None:
        conv, self.conv = self.conv, None
        self.turns = 0
        if conv is not None:
            await conv.aclose()

    def _fresh(self) -> Conversation:
        assert self.client is not None
        if self.conv is None:
            self.conv = self.setup.conversation(self.client)
            self.turns = 0
        return self.conv

    async def _turn(self, text: str) -> None:
        conv = self._fresh()
        prompt = messages(self.setup.args.system, text) if self.turns == 0 else text
        self.turns += 1
        status = self.setup.status
        status.enabled = status.tty and not self.setup.args.step
        try:
            if self.setup.args.step:
                await stepped(conv, prompt, self.out, self.err, self.stdin, until_ready=True)
                return
            async for chunk in conv.stream(prompt):
                if status.enabled:  # from here the answer owns the line: no more status
                    status.clear()
                    status.enabled = False
                self.out.write(chunk)
                self.out.flush()
        finally:
            status.enabled = False
            status.clear()
            if not self.setup.args.step:
                self.out.write("\n")
                self.out.flush()

    async def _close_all(self) -> None:
        try:
            await self._end()
        finally:
            if self.client is not None:
                await self.client.aclose()

    def run(self) -> int:
        _enable_readline()
        code, abandon = 0, False
        run = self.signals.run
        try:
            run(self._open())
            model = self.setup.args.model or "the server's default model"
            self._say(f"h2o-fsm: chatting with {model} — {HELP}")
            code = self._loop()
        except Interrupted as stop:
            code, abandon = stop.code, stop.gave_up
        finally:
            if not abandon:
                try:
                    run(self._close_all(), cleanup=True)
                except Interrupted as stop:
                    code, abandon = stop.code, True
            self.signals.close(abandon=abandon)
        if code >= EXIT_INTERRUPTED:
            self._say(self.setup.interrupted_line())
        return code if code else (EXIT_FAILED if self.failed else 0)

    def _loop(self) -> int:
        while True:
            try:
                with terminate_raises():  # at the prompt too, a SIGTERM ends the conversation first
                    line = self._read()
            except EOFError:
                self.out.write("\n")
                self.out.flush()
                return 0
            except KeyboardInterrupt:
                self.out.write("\n")
                return EXIT_INTERRUPTED
            except Interrupted as stop:
                self.out.write("\n")
                return stop.code
            text = line.strip()
            if not text:
                continue
            if text in ("/exit", "/quit"):
                return 0
            if text == "/new":
                self.signals.run(self._end(), cleanup=True)
                self._say("(a new conversation: the previous one was deleted)")
                continue
            if text in ("/help", "/?"):
                self._say(HELP)
                continue
            try:
                self.signals.run(self._turn(line))
            except Interrupted as stop:
                if stop.gave_up:
                    raise
                self.signals.run(self._end(), cleanup=True)  # a Ctrl-C here stops waiting: run() says what is left
                self._say("(answer stopped; that conversation was deleted, a new one starts)")
            except H2oError as exc:
                self.failed = True
                if self.client is not None:  # a refused model: the advice lists the server's
                    self.signals.run(note_offered_models(self.client, exc, self.setup.args.model))
                self._say(error_line(exc, self.setup.args.base_url, self.setup.args.dialect))
                self.signals.run(self._end(), cleanup=True)
                self._say("(a new conversation starts)")
