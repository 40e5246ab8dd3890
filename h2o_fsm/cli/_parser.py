"""The command line of ``h2o-fsm``: every option with its help and shown default, and the value checks."""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import Any, NoReturn

from .. import __version__
from .._dialects import AUTO, DEFAULT_DIALECT, get_dialect, names
from .._log import redact
from .._phase import Phase
from ._errors import UsageError
from ._jsonout import add_json_option
from ._listing import add_listing_parsers

__all__ = ["DIALECTS", "check_base_url", "cookies_from", "parser"]

DIALECTS = names()  # the registry's: the CLI speaks every dialect registered when it starts


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (``h2o-fsm: …``, exit 2) instead of usage plus error; and it
    remembers the actions and subcommands it was given (what ``completion`` reads: argparse itself
    has no public way to walk a parser)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.recorded: list[argparse.Action] = []
        self.subcommands: dict[str, _Parser] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.recorded.append(action)
        return action

    def add_subparsers(self, **kwargs: Any) -> Any:
        action = super().add_subparsers(**kwargs)
        self.subcommands = action.choices  # (filled in as subparsers are added)
        return action

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: …)`` only where there is a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS or not action.help:
            return action.help
        return super()._get_help_string(action)


_FMT: dict[str, Any] = {"formatter_class": _Formatter}


def _param(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value: object = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def _cookie(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        # never echo the text: it may be a secret
        raise argparse.ArgumentTypeError("expected NAME=VALUE")
    return name.strip(), value.strip()


def cookies_from(given: list[tuple[str, str]] | None) -> dict[str, str]:
    """``--cookie`` values, else ``H2O_FSM_COOKIES`` (``a=1; b=2``). Raises :class:`UsageError`."""
    if given:
        return dict(given)
    env = os.environ.get("H2O_FSM_COOKIES", "")
    cookies: dict[str, str] = {}
    for part in env.split(";"):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise UsageError("H2O_FSM_COOKIES must look like 'name=value; other=value'")
        cookies[name.strip()] = value.strip()
    return cookies


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0: any free port), got {value}")
    return value


def _dialect_option(p: argparse.ArgumentParser, *, server: bool = False) -> None:
    choices = DIALECTS if server else (AUTO, *DIALECTS)  # an emulator speaks one; a client may detect it
    env = os.environ.get("H2O_FSM_DIALECT") or (DEFAULT_DIALECT if server else AUTO)
    if server and env == AUTO:  # detected once per client (H2oClient.detect_dialect); serve and demo: one
        env = DEFAULT_DIALECT
    spoken = " or ".join(get_dialect(name).summary for name in DIALECTS)
    detect = "" if server else ", or auto: detected from GET /api/v2/models"
    p.add_argument("--dialect", choices=choices, default=env,
                   help=f"protocol dialect: {spoken}{detect} (env H2O_FSM_DIALECT)")


def _cookie_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cookie", action="append", type=_cookie, metavar="NAME=VALUE",
                   help="a session cookie to send, repeatable (env H2O_FSM_COOKIES='a=1; b=2'); never printed")


def check_base_url(args: argparse.Namespace) -> None:
    """``--base-url`` (or ``H2O_FSM_BASE_URL``) given where a command needs one, and with its scheme."""
    if not hasattr(args, "base_url"):
        return
    url = args.base_url
    if url is None:
        if args.command != "sweep":  # (sweep: no URL means each entry at its own)
            raise UsageError("no server: give --base-url URL or set H2O_FSM_BASE_URL "
                             "(`h2o-fsm serve` runs a local one)")
        return
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url):
        raise UsageError(f"--base-url {redact(url)}: must start with http:// or https:// — "
                         f"did you mean http://{redact(url)}?")


def parser() -> _Parser:
    """The whole command line."""
    env_url = os.environ.get("H2O_FSM_BASE_URL") or None  # none given: refused (the 2023 host is gone)
    p = _Parser(prog="h2o-fsm", description="State-machine client for the H2O chat-ui API.", **_FMT)
    p.add_argument("--version", action="version", version=f"h2o-fsm {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    chat = sub.add_parser(
        "chat", help="chat: one prompt, a prompt from stdin, or (no prompt, on a terminal) a conversation",
        description="With PROMPT: one answer streamed to stdout. With '-' or piped input and no PROMPT: the "
        "prompt is read from stdin. With no PROMPT on a terminal: an interactive conversation "
        "(/new starts a fresh one, /exit or Ctrl-D ends it, Ctrl-C stops an answer).", **_FMT)
    chat.add_argument("prompt", nargs="?", help="the prompt; '-' reads it from stdin")
    chat.add_argument("--base-url", default=env_url, help="deployment URL (env H2O_FSM_BASE_URL)")
    chat.add_argument("--model", help="model of the conversation (default: the dialect's; chat-ui: the server's)")
    chat.add_argument("--system", help="a system message before the (first) prompt")
    chat.add_argument("--param", action="append", type=_param, metavar="KEY=VALUE",
                      help="generation parameter, repeatable (VALUE parsed as JSON when it is JSON)")
    chat.add_argument("--timeout", type=_positive, metavar="SECONDS",
                      help="overall deadline of each answer, > 0 (default: none)")
    chat.add_argument("--step", action="store_true", help="pause before each phase (Enter runs it, q quits)")
    chat.add_argument("--trace", metavar="FILE", help="write every transition as a JSON line to FILE")
    chat.add_argument("--journal", metavar="FILE|URL",
                      help="record live conversations for `h2o-fsm sweep`: a file (SQLite), or a redis://host:port/db"
                           " or postgresql://user@host/db URL")
    chat.add_argument("--debug", action="store_true", help="show tracebacks")
    add_json_option(chat)
    _dialect_option(chat)
    _cookie_option(chat)

    serve = sub.add_parser("serve", help="run the bundled emulator of a dialect (prints its URL first)", **_FMT)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=_port, default=0, help="port to listen on (0: any free port)")
    serve.add_argument("--faults", metavar="FILE", help="fault plan to apply (.json or .toml)")
    serve.add_argument("--token-delay", type=_non_negative, default=0.0, metavar="SECONDS",
                       help="pause between streamed tokens")
    serve.add_argument("--max-tokens", type=_count, default=32, metavar="N", help="longest answer, in tokens")
    serve.add_argument("--no-request-log", action="store_true", help="don't keep the request log (load tests)")
    _dialect_option(serve, server=True)

    demo = sub.add_parser("demo", help="start the emulator and run one real conversation against it", **_FMT)
    demo.add_argument("--prompt", default="Hello, how are you?", help="what to ask")
    demo.add_argument("--token-delay", type=_non_negative, default=0.01, metavar="SECONDS",
                      help="pause between streamed tokens")
    _dialect_option(demo, server=True)

    diagram = sub.add_parser("diagram", help="print the state machine", **_FMT)
    diagram.add_argument("--format", choices=("mermaid", "dot"), default="mermaid", help="output format")
    diagram.add_argument("--highlight", choices=[ph.value for ph in Phase], help="mark one state")

    sweep = sub.add_parser("sweep", help="delete conversations a dead process left in a journal", **_FMT)
    sweep.add_argument("--base-url",
                       help="sweep only this deployment's entries (default: each entry at the URL recorded with it)")
    sweep.add_argument("--journal", metavar="FILE|URL", required=True,
                       help="the journal: a file written by `chat --journal`, or a redis://host:port/db or"
                            " postgresql://user@host/db URL")
    sweep.add_argument("--all", action="store_true", help="also entries whose owner's lease still holds")
    sweep.add_argument("--debug", action="store_true", help="show tracebacks")
    add_json_option(sweep)
    _dialect_option(sweep)
    _cookie_option(sweep)
    add_listing_parsers(sub, env_url, (_dialect_option, _cookie_option, add_json_option), _FMT)

    completion = sub.add_parser("completion", help="print a shell completion script (bash, zsh or fish)",
                                description="eval \"$(h2o-fsm completion bash)\" in ~/.bashrc (zsh: the same in "
                                "~/.zshrc); fish: h2o-fsm completion fish > ~/.config/fish/completions/h2o-fsm.fish",
                                **_FMT)
    completion.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell")
    for command in p.subcommands.values():  # `h2o-fsm chat --version` works too, as people try it
        command.add_argument("--version", action="version", version=f"h2o-fsm {__version__}")
    return p
