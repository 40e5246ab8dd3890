"""The ``h2o-fsm`` command: chat, serve, demo, diagram, sweep.

Exit codes: 0 success; 1 the conversation failed (one line on stderr: phase, status, what to do);
2 bad usage or input; 3 aborted by the user in ``--step`` mode; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import traceback
from collections.abc import Sequence
from typing import IO, TextIO

from . import __version__
from ._client import H2oClient
from ._config import Timeouts
from ._conversation import Conversation
from ._diagram import render
from ._exceptions import H2oError, H2oStatusError, H2oTimeoutError, H2oTransportError
from ._journal import Journal
from ._log import redact
from ._phase import Phase
from ._protocol import DEFAULT_BASE_URL, DEFAULT_MODEL, Message
from ._records import TransitionRecord

__all__ = ["main"]

EXIT_FAILED, EXIT_USAGE, EXIT_ABORTED, EXIT_INTERRUPTED = 1, 2, 3, 130


class _Aborted(Exception):
    """The user quit at a ``--step`` pause."""


def _param(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value: object = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def _hint(exc: H2oError, base_url: str) -> str:
    if isinstance(exc, H2oTimeoutError):
        return "the server is slow or stalled; raise --timeout or try again later"
    if isinstance(exc, H2oTransportError):
        return f"is the server running and reachable at {redact(base_url)}? (set --base-url or H2O_FSM_BASE_URL)"
    if isinstance(exc, H2oStatusError):
        if exc.status == 429:
            wait = f" after {exc.retry_after:g}s" if exc.retry_after is not None else " later"
            return f"rate limited; try again{wait}"
        if exc.status in (400, 422):
            return "the server refused the request; check --model and --param values"
        if exc.status is not None and exc.status >= 500:
            return "the server failed; try again later"
    return "run again with --debug for details"


def _error_line(exc: H2oError, base_url: str) -> str:
    phase = exc.phase.value if exc.phase else "?"
    status = f" (HTTP {exc.status})" if exc.status is not None else ""
    cleanup = " — and deleting the conversation failed too" if exc.cleanup_error is not None else ""
    return f"h2o-fsm: {phase} failed{status}: {exc.message}{cleanup} — {_hint(exc, base_url)}"


class _StatusLine:
    """A light live status line on stderr (only when stderr is a terminal)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.shown = False

    def show(self, text: str) -> None:
        if self.enabled:
            self.stream.write(f"\r\x1b[2K[{text}]")
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        if self.enabled and self.shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self.shown = False


def _messages(args: argparse.Namespace) -> list[Message]:
    msgs: list[Message] = []
    if args.system:
        msgs.append({"role": "system", "content": args.system})
    msgs.append({"role": "user", "content": args.prompt})
    return msgs


async def _chat(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: IO[str]) -> int:
    status = _StatusLine(err)
    trace_file = open(args.trace, "w", encoding="utf-8") if args.trace else None  # noqa: SIM115, ASYNC230
    journal = Journal(args.journal) if args.journal else None

    def observe(record: TransitionRecord) -> None:
        if trace_file is not None:
            trace_file.write(json.dumps(record.as_dict()) + "\n")
            trace_file.flush()
        if not record.dest.is_terminal:
            status.show(record.dest.value)

    params = dict(args.param or [])
    timeouts = Timeouts(total=args.timeout) if args.timeout else Timeouts()
    try:
        async with H2oClient(
            args.base_url, model=args.model, on_transition=observe, timeouts=timeouts, journal=journal
        ) as client:
            conv = client.conversation(parameters=params)
            prompt = _messages(args)
            async with conv:
                if args.step:
                    await _stepped(conv, prompt, out, err, stdin)
                else:
                    first = True
                    async for chunk in conv.stream(prompt):
                        if first:  # from here the answer owns the line: no more status
                            status.clear()
                            status.enabled = False
                            first = False
                        out.write(chunk)
                        out.flush()
            status.clear()
            out.write("\n")
            out.flush()
    finally:
        status.clear()
        if trace_file is not None:
            trace_file.close()
        if journal is not None:
            journal.close()
    return 0


async def _stepped(conv: Conversation, prompt: list[Message], out: TextIO, err: TextIO, stdin: IO[str]) -> None:
    conv.queue(prompt)
    while not conv.state.is_terminal:
        trigger = conv.next_trigger()
        err.write(f"[{conv.state.value}] next: {trigger} → {conv.describe_next()}\n")
        err.write("press Enter to run it, q to quit: ")
        err.flush()
        line = await asyncio.to_thread(stdin.readline)
        if not line or line.strip().lower() in ("q", "quit"):
            err.write("\naborted\n" if not line else "aborted\n")
            raise _Aborted
        result = await conv.step()
        status = f" HTTP {result.status}" if result.status is not None else ""
        skipped = " (skipped)" if result.skipped else ""
        err.write(f"  → {result.state.value}{status}{skipped} in {result.elapsed_ms:.1f} ms\n")
        if result.text is not None:
            out.write(result.text + "\n")
            out.flush()


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    try:
        from .server import LocalServer, ServerConfig
    except ImportError:
        out.write("h2o-fsm demo needs the server extra: pip install 'h2o-fsm[server]'\n")
        return EXIT_USAGE

    with LocalServer(ServerConfig(token_delay=args.token_delay)) as server:
        out.write(f"bundled chat-ui emulator listening on {server.url}\n")

        def observe(record: TransitionRecord) -> None:
            status = f" HTTP {record.status}" if record.status is not None else ""
            skipped = " (skipped)" if record.skipped else ""
            out.write(
                f"  {record.source.value:>8} → {record.dest.value:<8} [{record.trigger}]{status}{skipped}"
                f" {record.duration_ms:.1f} ms\n"
            )
            out.flush()

        async def run() -> str:
            async with H2oClient(server.url, on_transition=observe) as client, client.conversation() as conv:
                return await conv.ask([{"role": "user", "content": args.prompt}])

        answer = asyncio.run(run())
        acct = server.accounting.snapshot()
        out.write(f"answer: {answer}\n")
        out.write(
            f"server: created={acct['created']} deleted={acct['deleted']} live={acct['live']} "
            f"requests={acct['requests']}\n"
        )
        if acct["live"] != 0 or acct["created"] != 1:
            out.write("demo FAILED: the conversation was not cleaned up\n")
            return EXIT_FAILED
        out.write("demo OK\n")
        return 0


def _serve(args: argparse.Namespace, out: TextIO) -> int:
    from .server import FaultPlan, ServerConfig
    from .server._runner import serve_forever

    faults = FaultPlan.from_file(args.faults) if args.faults else FaultPlan()
    config = ServerConfig(
        token_delay=args.token_delay, max_tokens=args.max_tokens, keep_request_log=not args.no_request_log
    )
    url, server, sock = serve_forever(args.host, args.port, config, faults)
    out.write(url + "\n")
    out.flush()
    server.run(sockets=[sock])  # type: ignore[list-item]
    return 0


async def _sweep(args: argparse.Namespace, out: TextIO) -> int:

    journal = Journal(args.journal)
    try:
        async with H2oClient(args.base_url) as client:
            report = await client.sweep(journal, include_live_processes=args.all)
    finally:
        journal.close()
    out.write(
        f"swept: deleted={report.deleted} already_gone={report.already_gone} failed={report.failed} "
        f"skipped_live_process={report.skipped}\n"
    )
    return 0 if report.failed == 0 else EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    env_url = os.environ.get("H2O_FSM_BASE_URL") or DEFAULT_BASE_URL
    p = argparse.ArgumentParser(prog="h2o-fsm", description="State-machine client for the H2O chat-ui API.")
    p.add_argument("--version", action="version", version=f"h2o-fsm {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    chat = sub.add_parser("chat", help="one conversation: stream the answer to stdout")
    chat.add_argument("prompt")
    chat.add_argument("--base-url", default=env_url, help="deployment URL (env H2O_FSM_BASE_URL)")
    chat.add_argument("--model", default=DEFAULT_MODEL)
    chat.add_argument("--system", help="a system message before the prompt")
    chat.add_argument(
        "--param",
        action="append",
        type=_param,
        metavar="KEY=VALUE",
        help="generation parameter (VALUE parsed as JSON when it is JSON)",
    )
    chat.add_argument("--timeout", type=float, help="overall deadline in seconds")
    chat.add_argument("--step", action="store_true", help="pause before each phase (Enter runs it, q quits)")
    chat.add_argument("--trace", metavar="FILE", help="write every transition as a JSON line to FILE")
    chat.add_argument("--journal", metavar="FILE", help="record live conversations for `h2o-fsm sweep`")
    chat.add_argument("--debug", action="store_true", help="show tracebacks")

    serve = sub.add_parser("serve", help="run the bundled chat-ui emulator (prints its URL first)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--faults", metavar="FILE", help="fault plan (.json or .toml)")
    serve.add_argument("--token-delay", type=float, default=0.0)
    serve.add_argument("--max-tokens", type=int, default=32)
    serve.add_argument("--no-request-log", action="store_true", help="don't keep the request log (load tests)")

    demo = sub.add_parser("demo", help="start the emulator and run one real conversation against it")
    demo.add_argument("--prompt", default="Hello, how are you?")
    demo.add_argument("--token-delay", type=float, default=0.01)

    diagram = sub.add_parser("diagram", help="print the state machine")
    diagram.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    diagram.add_argument("--highlight", choices=[p.value for p in Phase], help="mark one state")

    sweep = sub.add_parser("sweep", help="delete conversations a dead process left in a journal")
    sweep.add_argument("--base-url", default=env_url)
    sweep.add_argument("--journal", metavar="FILE", required=True)
    sweep.add_argument("--all", action="store_true", help="also entries of processes still running")
    return p


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: IO[str] | None = None,
) -> int:
    out, err, inp = stdout or sys.stdout, stderr or sys.stderr, stdin or sys.stdin
    args = _parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        if args.command == "chat":
            return asyncio.run(_chat(args, out, err, inp))
        if args.command == "serve":
            return _serve(args, out)
        if args.command == "demo":
            return _demo(args, out)
        if args.command == "diagram":
            highlight = Phase(args.highlight) if args.highlight else None
            out.write(render(args.format, highlight=highlight))
            return 0
        if args.command == "sweep":
            return asyncio.run(_sweep(args, out))
    except H2oError as exc:
        if debug:
            traceback.print_exc(file=err)
        err.write(_error_line(exc, getattr(args, "base_url", "")) + "\n")
        return EXIT_FAILED
    except _Aborted:
        err.write("h2o-fsm: aborted at a --step pause; whatever was created has been deleted\n")
        return EXIT_ABORTED
    except (ValueError, TypeError) as exc:
        if debug:
            traceback.print_exc(file=err)
        err.write(f"h2o-fsm: invalid input: {redact(str(exc))}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.write("h2o-fsm: interrupted; whatever was created has been deleted\n")
        return EXIT_INTERRUPTED
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
