"""Time to answer (issue 20): wall time until the caller has the whole answer, and until the DELETE is
done, against a server that works after the answer (``answer_tail``: it ends the stream that much
later, as chat-ui persists the run) and answers DELETE slowly (a ``delete`` stall fault).

    python benchmarks/time_to_answer.py [--runs 15] [--tail 0.5] [--delete 0.3] [--dialect h2o|chat-ui|both]

The emulator runs in another process (this script with ``--serve``). Per dialect, in alternating order
within one run: a hand-written httpx client that returns at the final answer (it closes the stream
there and deletes in a background task), ``H2oClient.ask`` (returns at the answer; the tail and the
DELETE follow in the client's task) and, for reference, the way that waits for everything (the seed's
``H2o.create_async`` in the 2023 dialect, ``async with client.conversation()`` in chat-ui). Medians;
the ratio compares figures of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx

from h2o_fsm import H2o, H2oClient, TransitionRecord
from h2o_fsm._dialects.h2o import create_body, send_body, settings_form
from h2o_fsm._protocol import DEFAULT_MODEL, merge_parameters

MSGS = [{"role": "user", "content": "Hello"}]
Timed = Callable[[], Awaitable[tuple[float, float]]]  # -> (seconds to the answer, seconds to the DELETE)


def serve(dialect: str, tail: float, delete: float) -> None:
    from h2o_fsm.server import Fault, LocalServer, ServerConfig

    config = ServerConfig(max_tokens=16, answer_tail=tail, keep_request_log=False)
    with LocalServer(config, faults=[Fault("delete", "stall", seconds=delete, count=-1)], dialect=dialect) as server:  # type: ignore[arg-type]
        print(server.url, flush=True)
        sys.stdin.read()  # until the benchmark closes our stdin


def start_server(dialect: str, tail: float, delete: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", dialect, "--tail", str(tail), "--delete", str(delete)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


# ---------------------------------------------------------------- the hand-written baselines
async def _background_delete(client: httpx.AsyncClient, url: str, cid: str, t0: float) -> float:
    await client.delete(f"{url}/conversation/{cid}")
    return time.perf_counter() - t0


async def hand_h2o(client: httpx.AsyncClient, url: str) -> tuple[float, float]:
    """The 2023 protocol by hand: create, send, read TGI events until the final one, return; DELETE after."""
    t0 = time.perf_counter()
    cid = (await client.post(url + "/conversation", json=create_body(DEFAULT_MODEL))).json()["conversationId"]
    out = []
    async with client.stream("POST", f"{url}/conversation/{cid}", json=send_body("Hello", merge_parameters())) as resp:
        async for line in resp.aiter_lines():
            if line.startswith("data:"):
                ev = json.loads(line[5:])
                if not ev["token"]["special"]:
                    out.append(ev["token"]["text"])
                if ev.get("generated_text") is not None:
                    break
    answered = time.perf_counter() - t0
    assert out
    deleted = await asyncio.create_task(_background_delete(client, url, cid, t0))  # (waited for here only to time it)
    return answered, deleted


async def hand_chatui(client: httpx.AsyncClient, url: str) -> tuple[float, float]:
    """Today's chat-ui by hand: create, multipart send, JSON lines until ``finalAnswer``, return; DELETE after."""
    t0 = time.perf_counter()
    answer = (await client.post(url + "/conversation", json={"model": DEFAULT_MODEL})).json()
    cid = answer["conversationId"]
    root = json.loads(answer["conversation"])["json"]["rootMessageId"]
    data = json.dumps({"inputs": "Hello", "id": root, "is_retry": False, "generationId": str(uuid.uuid4())})
    out = []
    async with client.stream("POST", f"{url}/conversation/{cid}", files={"data": (None, data)},
                             headers={"Origin": url}) as resp:
        async for raw in resp.aiter_lines():
            line = raw.strip()
            if line:
                ev = json.loads(line)
                if ev["type"] == "stream":
                    out.append(ev["token"].replace("\x00", ""))
                elif ev["type"] == "finalAnswer":
                    break
    answered = time.perf_counter() - t0
    assert out
    deleted = await asyncio.create_task(_background_delete(client, url, cid, t0))
    return answered, deleted


# ---------------------------------------------------------------- h2o-fsm
class Ours:
    """``H2oClient.ask`` timed to its return and to its conversation's ``deleted`` record."""

    def __init__(self, url: str, dialect: str, transport: str = "auto") -> None:
        self.deleted = asyncio.Event()
        self.client = H2oClient(url, dialect=dialect, transport=transport, on_transition=self._seen)  # type: ignore[arg-type]

    def _seen(self, record: TransitionRecord) -> None:
        if record.trigger == "deleted":
            self.deleted.set()

    async def ask(self) -> tuple[float, float]:
        self.deleted.clear()
        t0 = time.perf_counter()
        assert await self.client.ask(MSGS)
        answered = time.perf_counter() - t0
        await self.deleted.wait()
        return answered, time.perf_counter() - t0

    async def block(self) -> tuple[float, float]:
        """A conversation block: the answer at ``ask``'s return, the DELETE when the block is left."""
        t0 = time.perf_counter()
        async with self.client.conversation() as conv:
            assert await conv.ask(MSGS)
            answered = time.perf_counter() - t0
        return answered, time.perf_counter() - t0


async def seed_h2o() -> tuple[float, float]:
    """The seed's API: it yields every chunk and ends after its DELETE (its documented order)."""
    t0 = time.perf_counter()
    assert await H2o.create_async("", MSGS)
    done = time.perf_counter() - t0
    return done, done


HAND = "hand-written client (httpx + httpx-aiohttp), returns at the final answer"
HAND_HTTPX = "hand-written client (httpx's own transport), returns at the final answer"
OURS = "h2o-fsm H2oClient.ask (default transport: httpx-aiohttp)"
OURS_HTTPX = "h2o-fsm H2oClient.ask, transport='httpx'"


async def measure(url: str, dialect: str, runs: int) -> dict[str, tuple[float, float]]:
    from httpx_aiohttp import AiohttpTransport

    hand, hand_httpx = httpx.AsyncClient(transport=AiohttpTransport()), httpx.AsyncClient()
    ours, ours_httpx = Ours(url, dialect), Ours(url, dialect, "httpx")
    by_hand = hand_h2o if dialect == "h2o" else hand_chatui
    variants: dict[str, Timed] = {
        HAND: lambda: by_hand(hand, url),
        HAND_HTTPX: lambda: by_hand(hand_httpx, url),
        OURS: ours.ask,
        OURS_HTTPX: ours_httpx.ask,
    }
    if dialect == "h2o":
        H2o.url = url
        for client in (hand, hand_httpx):
            await client.post(url + "/settings", data=settings_form(DEFAULT_MODEL), headers={"Referer": url + "/"})
        variants["h2o-fsm H2o.create_async (the seed's order: it ends after its DELETE)"] = seed_h2o
    else:
        variants["h2o-fsm async with conversation(): ask, then leave the block"] = ours.block
    for fn in variants.values():  # warm up: connections, the session, imports
        await fn()
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    for _ in range(runs):
        for name, fn in variants.items():
            samples[name].append(await fn())
    for client in (hand, hand_httpx):
        await client.aclose()
    for mine in (ours, ours_httpx):
        await mine.client.aclose()
    await H2o.aclose()
    return {k: (statistics.median(a for a, _ in v), statistics.median(d for _, d in v)) for k, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--tail", type=float, default=0.5, help="server work after the answer (s)")
    ap.add_argument("--delete", type=float, default=0.3, help="how long each DELETE takes (s)")
    ap.add_argument("--dialect", choices=("h2o", "chat-ui", "both"), default="both")
    ap.add_argument("--serve", choices=("h2o", "chat-ui"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.tail, args.delete)
        return
    print(f"# time to answer: answer_tail={args.tail:g}s, DELETE {args.delete:g}s, {args.runs} runs, medians")
    for dialect in ("h2o", "chat-ui") if args.dialect == "both" else (args.dialect,):
        proc, url = start_server(dialect, args.tail, args.delete)
        try:
            figures = asyncio.run(measure(url, dialect, args.runs))
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(10)
        print(f"\n## {dialect}\n\n| client | time to answer | time to the DELETE done |\n|---|---:|---:|")
        for name, (answered, deleted) in figures.items():
            print(f"| {name} | {answered * 1000:.1f} ms | {deleted * 1000:.0f} ms |")
        for mine, theirs, transport in ((OURS, HAND, "httpx-aiohttp"), (OURS_HTTPX, HAND_HTTPX, "httpx")):
            ratio = figures[mine][0] / figures[theirs][0]
            print(f"\ntime to answer, H2oClient.ask / the hand-written client ({transport}): **{ratio:.2f}×**"
                  " (target ≤ 1.2×)")


if __name__ == "__main__":
    main()
