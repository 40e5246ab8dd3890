"""Benchmark of the chat-ui JSON-lines parser against a bare per-line ``json.loads`` loop (issue 11).

    python benchmarks/parser_chatui.py [--tokens N] [--rounds R]

The stream is what chat-ui writes: ``started``, NUL-padded ``stream`` tokens (16 characters, the
NULs JSON-escaped as ``\\u0000``), a ``keepAlive`` every 20 tokens, a ``title``, the ``finalAnswer``
with the whole text, 4096 spaces, ``finished``; fed in 4 KiB chunks. Variants run in alternating
rounds in one process; medians are compared. Target: ours (orjson when installed) >= 1.0x the bare
``json.loads`` loop.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import time
from collections.abc import Callable

from h2o_fsm._dialects.chatui.stream import JsonLinesParser

WORDS = [" Hello", ",", " how", " can", " I", " help", " you", " today", "?", " The", " answer", " is", " 42", "."]


def realistic_stream(tokens: int) -> tuple[bytes, int]:
    """A chat-ui answer body of ``tokens`` tokens, and how many answer tokens it holds."""
    lines = [b'{"type":"status","status":"started"}', b'{"type":"routerMetadata","route":"casual","model":"m"}']
    text = []
    for i in range(tokens):
        word = WORDS[i % len(WORDS)]
        text.append(word)
        lines.append(json.dumps({"type": "stream", "token": word + "\x00" * (16 - len(word))}).encode())
        if i % 20 == 19:
            lines.append(b'{"type":"status","status":"keepAlive"}')
    lines.append(b'{"type":"title","title":"Greeting"}')
    lines.append(json.dumps({"type": "finalAnswer", "text": "".join(text), "interrupted": False}).encode())
    body = b"\n".join(lines) + b"\n" + b" " * 4096 + b'{"type":"status","status":"finished"}\n'
    return body, tokens


def measure(tokens: int = 20_000, rounds: int = 7, repeats: int = 5) -> tuple[dict[str, float], int, int]:
    """Tokens/s of each variant on the same realistic stream (medians of alternating repeats), the
    number of tokens and of bytes. The one measurement both this script and ``run.py`` print."""
    body, n_tokens = realistic_stream(tokens)
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)]

    def ours(loads: Callable[[bytes], object] | None = None) -> int:
        p = JsonLinesParser(loads=loads)
        n = 0
        for c in chunks:
            n += len(p.feed(c))
        n += len(p.close())
        return n - 1  # the FinalAnswer

    def bare_json() -> int:
        n = 0
        for ln in body.split(b"\n"):
            if ln:
                json.loads(ln)
                n += 1
        return n

    variants: dict[str, Callable[[], int]] = {
        OURS: ours,
        OURS_STDLIB: lambda: ours(json.loads),
        BARE: bare_json,
    }
    try:
        import orjson

        def bare_orjson() -> int:
            n = 0
            for ln in body.split(b"\n"):
                if ln:
                    orjson.loads(ln)
                    n += 1
            return n

        variants["bare loop: orjson.loads per line"] = bare_orjson
    except ImportError:  # pragma: no cover
        pass

    assert ours() == n_tokens, "the parser must find every token"
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times = []
            for _ in range(rounds):
                gc.collect()
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            samples[name].append(n_tokens / statistics.median(times))
    return {k: statistics.median(v) for k, v in samples.items()}, n_tokens, len(body)


OURS = "ours (JsonLinesParser, default decoder)"
OURS_STDLIB = "ours with loads=json.loads (no fast extra)"
BARE = "bare loop: json.loads per line"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=5, help="alternating repeats; the median of their medians")
    args = ap.parse_args()
    rates, n_tokens, n_bytes = measure(args.tokens, args.rounds, args.repeats)
    base = rates[BARE]
    print(f"# chat-ui stream parsing — Python {platform.python_version()} on {platform.machine()}; "
          f"{n_tokens} tokens, {n_bytes:,} bytes in 4 KiB chunks; median of {args.repeats}×{args.rounds} rounds")
    print(f"{'variant':46} {'tokens/s':>12} {'vs bare json.loads':>19}")
    for name, rate in rates.items():
        print(f"{name:46} {rate:12,.0f} {rate / base:18.2f}×")
    print(f"ours vs a bare per-line json.loads loop: {rates[OURS] / base:.2f}× (target >= 1.0×)")


if __name__ == "__main__":
    main()
