"""``h2o-fsm models`` and ``h2o-fsm conversations``: what a chat-ui server offers and what the session
holds, with a deliberate ``--delete-all --yes`` for a session that hit the usage limit. ``--json``: one
object per model or conversation (``{"type": "model", ...}``, ``{"type": "conversation", ...}``), then a
summary (``{"type": "models", "count": n}``...); an error is an ``error`` object (the line stays on stderr).
Without it, ``conversations`` ends with ``conversations: N`` (as ``deleted: N``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TextIO

from .._client import H2oClient
from .._dialects import AUTO, with_catalog
from .._exceptions import H2oError, H2oStateError
from ._errors import UsageError, about_the_model, error_line, maybe_the_model, offer_models
from ._jsonout import emit, error_object

__all__ = ["add_listing_parsers", "note_offered_models", "run_conversations", "run_models"]

Option = Callable[[argparse.ArgumentParser], None]


def add_listing_parsers(sub: Any, env_url: str | None, options: tuple[Option, ...], fmt: dict[str, Any]) -> None:
    """The two subcommands; ``options`` add the shared ``--dialect``/``--cookie`` options."""
    models = sub.add_parser("models", help="list the server's models (chat-ui), the default first", **fmt)
    conversations = sub.add_parser(
        "conversations", help="list the session's conversations (chat-ui); --delete-all --yes deletes them", **fmt)
    for p in (models, conversations):
        p.add_argument("--base-url", default=env_url, help="deployment URL (env H2O_FSM_BASE_URL)")
        p.add_argument("--debug", action="store_true", help="show tracebacks")
        for add in options:
            add(p)
    conversations.add_argument("--delete-all", action="store_true",
                               help="delete every conversation of the session (needs --yes)")
    conversations.add_argument("--yes", action="store_true", help="confirm --delete-all")


async def note_offered_models(client: H2oClient, exc: H2oError, model: str | None) -> None:
    """A refused model's advice names the server's models where it lists them (chat-ui's ``GET
    /api/v2/models``; the 2023 server lists none): one bounded look-up, best effort, after a failure that
    names the model or may be about it (then only if ``model``, the one asked for, is not in the list)."""
    if not maybe_the_model(exc) or (model is None and not about_the_model(exc)):
        return
    try:
        models = await asyncio.wait_for(client.models(), timeout=5.0)
    except (H2oError, asyncio.TimeoutError):
        return
    ids = [m.id for m in models]
    if about_the_model(exc) or model not in ids:
        offer_models(exc, ids)


def _client(args: argparse.Namespace) -> H2oClient:
    from ._parser import cookies_from

    return H2oClient(args.base_url, dialect=args.dialect, cookies=cookies_from(args.cookie) or None)


@contextlib.contextmanager
def _listed(client: H2oClient, args: argparse.Namespace, out: TextIO) -> Iterator[None]:
    """A dialect without these lists (the 2023 one) refuses before any request: a usage mistake (exit 2;
    with ``--json`` an error object on stdout too)."""
    try:
        yield
    except H2oStateError as exc:
        if client.dialect in with_catalog():
            raise
        said = f"this server speaks {client.dialect}" if args.dialect == AUTO else f"--dialect {args.dialect} was given"
        line = f"{exc.detail}; {said}"
        if args.json:
            emit(out, error_object(exc, line))
        raise UsageError(line) from None


def _run(args: argparse.Namespace, out: TextIO, run: Coroutine[Any, Any, None]) -> int:
    try:
        asyncio.run(run)
    except H2oError as exc:
        if args.json:  # on stdout too, for the program reading it; main() prints the line on stderr
            emit(out, error_object(exc, error_line(exc, args.base_url or "", args.dialect, debug=args.debug)))
        raise
    return 0


def run_models(args: argparse.Namespace, out: TextIO) -> int:
    async def run() -> None:
        async with _client(args) as client:
            with _listed(client, args, out):
                models = await client.models()
            for i, m in enumerate(models):
                if args.json:
                    emit(out, {"type": "model", **dataclasses.asdict(m), "default": i == 0})
                    continue
                flags = ",".join(f for f, on in (("multimodal", m.multimodal), ("tools", m.tools),
                                                  ("reasoning", m.reasoning)) if on)
                default = " (default)" if i == 0 else ""
                out.write(f"{m.id}{default}\t{m.display_name}\t{flags or '-'}\n")
            if args.json:
                emit(out, {"type": "models", "count": len(models)})

    return _run(args, out, run())


def run_conversations(args: argparse.Namespace, out: TextIO) -> int:
    if args.delete_all and not args.yes:
        raise UsageError("--delete-all deletes every conversation of the session: add --yes to confirm")

    async def run() -> None:
        async with _client(args) as client:
            if args.delete_all:
                with _listed(client, args, out):
                    count = await client.delete_all_conversations()
                if args.json:
                    emit(out, {"type": "deleted_all", "count": count})  # null: the server did not say
                else:
                    out.write(f"deleted: {'all' if count is None else count}\n")
                return
            with _listed(client, args, out):
                found = await client.list_conversations()
            for c in found:
                if args.json:
                    emit(out, {"type": "conversation", **dataclasses.asdict(c)})
                else:
                    out.write(f"{c.id}\t{c.updated_at or '-'}\t{c.model or '-'}\t{' '.join(c.title.split()) or '-'}\n")
            if args.json:
                emit(out, {"type": "conversations", "count": len(found)})
            else:  # the count last, as --delete-all's "deleted: N" (a session holding none says so)
                out.write(f"conversations: {len(found)}\n")

    return _run(args, out, run())
