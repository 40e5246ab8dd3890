"""The ``h2o-fsm`` command: chat (one-shot, stdin, interactive), serve, demo, diagram, sweep, models,
conversations.

Exit codes: 0 success; 1 the conversation failed (one line on stderr: phase, status, what to do);
2 bad usage or input (one line on stderr); 3 aborted by the user in ``--step`` mode; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from typing import IO, TextIO

from .._dialects import AUTO
from .._exceptions import H2oError
from .._log import redact
from ._errors import EXIT_ABORTED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, Aborted, UsageError, error_line
from ._parser import DIALECTS, check_base_url, parser

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader went away

__all__ = ["main"]


def _dispatch(args: argparse.Namespace, out: TextIO, err: TextIO, inp: IO[str], *, standard_io: bool) -> int:
    command = args.command
    if command == "chat":
        from ._chat import run_chat

        return run_chat(args, out, err, inp, standard_io=standard_io)
    if command == "completion":
        from ._completion import script

        out.write(script(args.shell, parser()))
        return 0
    from ._commands import run_demo, run_diagram, run_serve, run_sweep
    from ._listing import run_conversations, run_models

    if command == "serve":
        return run_serve(args, out, err)
    if command == "demo":
        return run_demo(args, out, err)
    if command == "diagram":
        return run_diagram(args, out)
    if command in ("models", "conversations"):
        return run_models(args, out) if command == "models" else run_conversations(args, out)
    return run_sweep(args, out, err)


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: IO[str] | None = None,
) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    out, err, inp = stdout or sys.stdout, stderr or sys.stderr, stdin or sys.stdin
    standard_io = inp is sys.stdin and out is sys.stdout
    debug = False
    base_url = ""
    try:
        args = parser().parse_args(argv)
        if getattr(args, "dialect", AUTO) not in (AUTO, *DIALECTS):  # from H2O_FSM_DIALECT, not checked by argparse
            raise UsageError(f"H2O_FSM_DIALECT must be one of {', '.join((AUTO, *DIALECTS))}")
        debug = bool(getattr(args, "debug", False))
        base_url = getattr(args, "base_url", None) or ""
        check_base_url(args)
        return _dispatch(args, out, err, inp, standard_io=standard_io)
    except UsageError as exc:
        err.write(f"h2o-fsm: {redact(str(exc))}\n")
        return EXIT_USAGE
    except H2oError as exc:
        if debug:
            traceback.print_exc(file=err)
        err.write(error_line(exc, base_url, getattr(args, "dialect", None), debug=debug) + "\n")
        return EXIT_FAILED
    except Aborted:
        err.write("h2o-fsm: aborted at a --step pause; whatever was created has been deleted\n")
        return EXIT_ABORTED
    except (ValueError, TypeError) as exc:
        if debug:
            traceback.print_exc(file=err)
        err.write(f"h2o-fsm: invalid input: {redact(' '.join(str(exc).split()))}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.write("h2o-fsm: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # our reader went away (`| head -1`); what we ran has ended (and deleted) already
        if standard_io:  # as Python's docs advise: no second BrokenPipeError when stdout is flushed at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return EXIT_BROKEN_PIPE
