"""``h2o-fsm models`` and ``h2o-fsm conversations``: what a chat-ui server offers and what the session
holds, with a deliberate ``--delete-all --yes`` for a session that hit the usage limit."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any, TextIO

from .._client import H2oClient
from ._errors import UsageError

__all__ = ["add_listing_parsers", "run_conversations", "run_models"]

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


def _client(args: argparse.Namespace) -> H2oClient:
    from ._parser import cookies_from

    return H2oClient(args.base_url, dialect=args.dialect, cookies=cookies_from(args.cookie) or None)


def run_models(args: argparse.Namespace, out: TextIO) -> int:
    async def run() -> None:
        async with _client(args) as client:
            for i, m in enumerate(await client.models()):
                flags = ",".join(f for f, on in (("multimodal", m.multimodal), ("tools", m.tools),
                                                  ("reasoning", m.reasoning)) if on)
                default = " (default)" if i == 0 else ""
                out.write(f"{m.id}{default}\t{m.display_name}\t{flags or '-'}\n")

    asyncio.run(run())
    return 0


def run_conversations(args: argparse.Namespace, out: TextIO) -> int:
    if args.delete_all and not args.yes:
        raise UsageError("--delete-all deletes every conversation of the session: add --yes to confirm")

    async def run() -> None:
        async with _client(args) as client:
            if args.delete_all:
                count = await client.delete_all_conversations()
                out.write(f"deleted: {'all' if count is None else count}\n")
                return
            for c in await client.list_conversations():
                out.write(f"{c.id}\t{c.updated_at or '-'}\t{c.model or '-'}\t{' '.join(c.title.split()) or '-'}\n")

    asyncio.run(run())
    return 0
