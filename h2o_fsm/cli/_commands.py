"""``h2o-fsm serve``, ``demo``, ``diagram`` and ``sweep``."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
from typing import Any, TextIO

from .._client import H2oClient
from .._diagram import render
from .._dialects import DEFAULT_DIALECT, get_dialect
from .._exceptions import H2oJournalError
from .._journal_base import JournalBackend
from .._log import redact
from .._phase import Phase
from .._protocol import normalize_base_url
from .._records import TransitionRecord
from .._sweep import JOURNAL_DOWN, SweepReport
from .._tail import TRIGGER as TAIL
from ._chat import open_journal
from ._errors import EXIT_FAILED, EXIT_INTERRUPTED, SERVER_EXTRA, UsageError, os_error_text
from ._jsonout import emit
from ._parser import cookies_from

__all__ = ["run_demo", "run_diagram", "run_serve", "run_sweep"]


def _server_extra(command: str) -> None:
    """Fail in one line with the exact install command when the ``server`` extra is missing."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UsageError(f"{command} needs the server extra: {SERVER_EXTRA}") from None


def run_serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    _server_extra("serve")
    from ..server import FaultPlan, ServerConfig
    from ..server._runner import serve_forever

    faults = FaultPlan()
    if args.faults:
        try:
            faults = FaultPlan.from_file(args.faults)
        except OSError as exc:
            raise UsageError(f"--faults {args.faults}: {os_error_text(exc)}") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise UsageError(f"--faults {args.faults}: not a fault plan: {exc}") from None
    config = ServerConfig(
        token_delay=args.token_delay, max_tokens=args.max_tokens, keep_request_log=not args.no_request_log
    )
    try:
        url, server, sock = serve_forever(args.host, args.port, config, faults, dialect=args.dialect)
    except OverflowError:
        raise UsageError(f"--port {args.port}: not a port number") from None
    except OSError as exc:
        where = f"{args.host}:{args.port}"
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"cannot listen on {where}: the port is already in use (try another --port)") from None
        raise UsageError(f"cannot listen on {where}: {os_error_text(exc)}") from None
    out.write(url + "\n")
    out.flush()

    # once Ctrl-C asked the server to stop, the streams it cuts are expected: no tracebacks about them
    def quiet_when_stopping(record: logging.LogRecord) -> bool:
        return not server.should_exit

    logger = logging.getLogger("uvicorn.error")
    logger.addFilter(quiet_when_stopping)
    try:
        server.run(sockets=[sock])  # type: ignore[list-item]
    except KeyboardInterrupt:
        pass
    finally:
        logger.removeFilter(quiet_when_stopping)
    if server.should_exit:
        err.write("h2o-fsm: server stopped\n")
        return EXIT_INTERRUPTED
    return 0


def run_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    _server_extra("demo")
    from ..server import LocalServer, ServerConfig

    records: list[TransitionRecord] = []
    with LocalServer(ServerConfig(token_delay=args.token_delay), dialect=args.dialect) as server:
        speaks = get_dialect(args.dialect)  # the default is h2o's: the banner says which
        out.write(f"bundled {speaks.name} emulator ({speaks.summary}) listening on {server.url}\n\nphases:\n")

        def observe(record: TransitionRecord) -> None:
            # each row: the step the time was spent on (a record's time is its request's, made on entering
            # ``dest``; but leaving ``stream`` measures the reading of the answer, and the tail record the rest
            # of the stream: both belong to stream)
            records.append(record)
            if record.trigger == TAIL:  # the rest of the stream, read after the answer: stream's too
                label, note = Phase.STREAM.value, "the stream's tail"
            elif record.source is Phase.STREAM and not record.dest.is_terminal:
                label, note = Phase.STREAM.value, "reading the answer"
            elif record.dest is Phase.STREAM:
                label, note = Phase.STREAM.value, "opening the answer"
            else:
                label, note = record.dest.value, ""
            status = f"HTTP {record.status}" if record.status is not None else ""
            skipped = "(skipped)" if record.skipped else ""
            said = "  ".join(x for x in (status, skipped, note) if x)
            out.write(f"  {label:<9} {record.duration_ms:8.1f} ms  {said}".rstrip() + "\n")
            out.flush()

        async def run() -> str:
            client = H2oClient(server.url, on_transition=observe, dialect=args.dialect)
            async with client, client.conversation() as conv:
                return await conv.ask([{"role": "user", "content": args.prompt}])

        answer = asyncio.run(run())
        out.write(f"\nanswer: {answer}\n\ntransitions taken:\n")
        for record in records:
            out.write(f"  {record.source.value:>8} -> {record.dest.value:<8} : {record.trigger}\n")
        acct = server.accounting.snapshot()
        out.write(
            f"\nserver: created={acct['created']} deleted={acct['deleted']} live={acct['live']} "
            f"requests={acct['requests']}\n"
        )
        if acct["live"] != 0 or acct["created"] != 1:
            out.write("demo FAILED: the conversation was not cleaned up\n")
            return EXIT_FAILED
        out.write("demo OK\n")
    flag = f" --dialect {args.dialect}" if args.dialect != DEFAULT_DIALECT else ""
    err.write(f"try it yourself: `h2o-fsm serve{flag}` prints a URL; then `h2o-fsm chat{flag} --base-url URL`\n")
    return 0


def run_diagram(args: argparse.Namespace, out: TextIO) -> int:
    highlight = Phase(args.highlight) if args.highlight else None
    out.write(render(args.format, highlight=highlight))
    return 0


async def _sweep_each(
    urls: list[str], journal: JournalBackend, options: dict[str, Any], *, include_live_processes: bool
) -> SweepReport:
    total = SweepReport()
    for url in urls:
        async with H2oClient(url, background_sweep=False, **options) as client:
            report = await client.sweep(journal, include_live_processes=include_live_processes)
        total.add(report)
    return total


async def _sweep_all(
    journal: JournalBackend, base_url: str | None, options: dict[str, Any], *, include_live_processes: bool
) -> tuple[SweepReport, list[str]]:
    try:
        scan = await journal.scan_async()
        recorded = sorted({entry.base_url for entry in scan.entries})
        if base_url:
            wanted = normalize_base_url(base_url)
            targets = [url for url in recorded if url == wanted]
            skipped = [url for url in recorded if url != wanted]
        else:
            targets, skipped = recorded, []
        total = await _sweep_each(targets, journal, options, include_live_processes=include_live_processes)
        total.bad_rows = len(scan.bad_rows)  # the journal's, whatever their URL (each sweep saw only its own)
    finally:
        await journal.aclose()
    return total, skipped


def _sweep_counts(report: SweepReport) -> dict[str, int]:
    """What ``sweep`` prints, in its order. ``skipped_leased``: entries left because a lease holds (their
    owner's, or another sweeper's claim); ``bad_rows``: rows of the journal that could not be read."""
    return {"deleted": report.deleted, "already_gone": report.already_gone, "failed": report.failed,
            "skipped_leased": report.skipped, "stopped": report.stopped, "bad_rows": report.bad_rows}


def run_sweep(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Sweep each journal entry at the URL recorded with it (or only those of ``--base-url``)."""
    options: dict[str, Any] = {"dialect": args.dialect}
    cookies = cookies_from(args.cookie)
    if cookies:
        options["cookies"] = cookies
    journal = open_journal(args.journal, must_exist=True)
    try:
        total, skipped = asyncio.run(_sweep_all(journal, args.base_url, options, include_live_processes=args.all))
    except JOURNAL_DOWN as exc:  # a journal that cannot be read (Redis down, say): nothing swept
        err.write(f"h2o-fsm: --journal: {redact(str(exc))}\n")
        return EXIT_FAILED
    except H2oJournalError as exc:  # the same, met by a client's sweep
        err.write(f"h2o-fsm: --journal: {exc.detail}\n")
        return EXIT_FAILED
    counts = _sweep_counts(total)
    if args.json:
        emit(out, {"type": "sweep", **counts, "skipped_live_process": total.skipped})  # the old key: deprecated
    else:
        out.write("swept: " + " ".join(f"{key}={value}" for key, value in counts.items()) + "\n")
    if skipped:
        err.write(
            f"h2o-fsm: left the entries of other deployments: {', '.join(redact(u) for u in skipped)} "
            "(run without --base-url to sweep each at its own URL)\n"
        )
    return 0 if total.failed == 0 else EXIT_FAILED
