"""Benchmarks for h2o-fsm (issues 6, 9, 11). Prints ratios measured side by side in one run.

    pip install '.[bench]' && python benchmarks/run.py [--quick] [--only-cpu] [--profile]

The server is the bundled emulator in *another process* (``h2o-fsm serve``) on loopback, so the
client CPU measured here (``time.process_time`` of this process) excludes the server. Variants run
in alternating rounds; medians over rounds are compared. Both dialects: the 2023 "h2o" one against
the old provider's way and a raw httpx client, today's "chat-ui" one against a minimal hand-written
chat-ui client on the same transport. ``--profile`` prints the top self-time functions of h2o-fsm
on the h2o one-shot path (cProfile).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable

import httpx
import parser_chatui as chatui_parser  # benchmarks/ is on sys.path when run as a script

from h2o_fsm import H2o, H2oClient, Retries
from h2o_fsm._dialects.h2o.bodies import create_body, send_body, settings_form
from h2o_fsm._dialects.h2o.stream import StreamParser
from h2o_fsm._protocol import DEFAULT_MODEL, merge_parameters

MSGS = [{"role": "user", "content": "Hello, how are you?"}]


def start_server(max_tokens: int, token_delay: float = 0.0, dialect: str = "h2o") -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "h2o_fsm.cli", "serve", "--max-tokens", str(max_tokens), "--no-request-log",
         "--token-delay", str(token_delay), "--dialect", dialect],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


# ---------------------------------------------------------------- the baselines
async def raw_httpx(client: httpx.AsyncClient, url: str) -> str:
    """A minimal client doing the same four requests (settings every time, like the old provider)."""
    await client.post(url + "/settings", data=settings_form(DEFAULT_MODEL), headers={"Referer": url + "/"})
    r = await client.post(url + "/conversation", json=create_body(DEFAULT_MODEL))
    cid = r.json()["conversationId"]
    out = []
    async with client.stream("POST", f"{url}/conversation/{cid}", json=send_body("Hello", merge_parameters())) as resp:
        async for line in resp.aiter_lines():
            if line.startswith("data:"):
                ev = json.loads(line[5:])
                if not ev["token"]["special"]:
                    out.append(ev["token"]["text"])
    await client.delete(f"{url}/conversation/{cid}")
    return "".join(out)


async def old_aiohttp(url: str) -> str:
    """The old provider's way: a new aiohttp session per call, four requests."""
    import aiohttp

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.post(url + "/settings", data=settings_form(DEFAULT_MODEL),
                                headers={"Referer": url + "/"}, allow_redirects=False) as r:
            await r.read()
        async with session.post(url + "/conversation", json=create_body(DEFAULT_MODEL)) as r:
            cid = (await r.json())["conversationId"]
        out = []
        async with session.post(f"{url}/conversation/{cid}", json=send_body("Hello", merge_parameters())) as r:
            async for raw in r.content:
                line = raw.decode()
                if line.startswith("data:"):
                    ev = json.loads(line[5:])
                    if not ev["token"]["special"]:
                        out.append(ev["token"]["text"])
        async with session.delete(f"{url}/conversation/{cid}") as r:
            await r.read()
        return "".join(out)


async def handwritten_chatui(client: httpx.AsyncClient, url: str) -> str:
    """A minimal hand-written client of today's chat-ui (PROTOCOL.md, second half), one shared client.

    create (JSON) → the root message from the create answer's ``conversation`` field, else
    ``GET /api/v2/conversations/{id}`` → multipart send with ``Origin`` → JSON lines (stdlib
    ``json.loads`` per line, NULs removed) → DELETE. No validation, no limits, no retries.
    """
    r = await client.post(url + "/conversation", json={"model": DEFAULT_MODEL})
    # chat-ui's session cookie is Secure even over plain http (PROTOCOL.md): a cookie jar would drop it
    session = {"Cookie": r.headers.get("set-cookie", "").split(";", 1)[0]}
    answer = r.json()
    cid = answer["conversationId"]
    if "conversation" in answer:
        root = json.loads(answer["conversation"])["json"]["rootMessageId"]
    else:
        got = await client.get(f"{url}/api/v2/conversations/{cid}", headers=session)
        root = got.json()["json"]["rootMessageId"]
    data = json.dumps({"inputs": "Hello", "id": root, "is_retry": False, "generationId": str(uuid.uuid4())})
    out = []
    async with client.stream("POST", f"{url}/conversation/{cid}", files={"data": (None, data)},
                             headers={"Origin": url, **session}) as resp:
        async for raw in resp.aiter_lines():
            line = raw.strip()
            if line:
                ev = json.loads(line)
                if ev["type"] == "stream":
                    out.append(ev["token"].replace("\x00", ""))
                elif ev["type"] == "finalAnswer":
                    break
    await client.delete(f"{url}/conversation/{cid}", headers=session)
    return "".join(out)


def fast_transport() -> httpx.AsyncBaseTransport | None:
    try:
        from httpx_aiohttp import AiohttpTransport
    except ImportError:
        return None
    return AiohttpTransport()  # type: ignore[no-any-return]


# ---------------------------------------------------------------- 1. client CPU per conversation
async def settled(limit: float = 5.0) -> None:
    """Until no task but this one is left: h2o-fsm's ``ask`` returns with the answer and deletes the
    conversation in a task of its client (the old way's DELETE is inside its call)."""
    me = asyncio.current_task()
    end = time.monotonic() + limit
    while any(t is not me and not t.done() for t in asyncio.all_tasks()) and time.monotonic() < end:  # noqa: ASYNC110
        await asyncio.sleep(0.001)


async def cpu_per_conversation(url: str, rounds: int, per_round: int) -> dict[str, float]:
    H2o.url = url
    shared = httpx.AsyncClient()
    shared_fast = httpx.AsyncClient(transport=fast_transport()) if fast_transport() else None
    native = H2oClient(url, retries=Retries(attempts=1))
    native_httpx = H2oClient(url, transport="httpx")
    native_fast = H2oClient(url, transport=fast_transport()) if fast_transport() else None

    async def compat() -> str:
        return "".join([c async for c in H2o.create_async_generator("", MSGS)])

    variants: dict[str, Callable[[], Awaitable[str]]] = {
        "aiohttp old provider (new session per call)": lambda: old_aiohttp(url),
        "raw httpx, shared client": lambda: raw_httpx(shared, url),
        "h2o-fsm H2o.create_async_generator": compat,
        "h2o-fsm H2oClient.ask": lambda: native.ask(MSGS),
        "h2o-fsm H2oClient.ask, transport='httpx'": lambda: native_httpx.ask(MSGS),
    }
    if shared_fast is not None and native_fast is not None:
        variants["raw httpx + httpx-aiohttp transport"] = lambda: raw_httpx(shared_fast, url)
        variants["h2o-fsm H2oClient.ask + httpx-aiohttp transport"] = lambda: native_fast.ask(MSGS)
    for fn in variants.values():  # warm up: connections, imports, the settings of the shared session
        for _ in range(5):
            await fn()
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            gc.collect()
            t0 = time.process_time()
            for _ in range(per_round):
                await fn()
            await settled()  # the last DELETE is this variant's, not the next one's
            samples[name].append((time.process_time() - t0) / per_round * 1e6)
    await shared.aclose()
    if shared_fast:
        await shared_fast.aclose()
    await native.aclose()
    await native_httpx.aclose()
    if native_fast:
        await native_fast.aclose()
    await H2o.aclose()
    return {k: statistics.median(v) for k, v in samples.items()}


# ---------------------------------------------------------------- 1b. chat-ui client CPU per conversation
async def cpu_chatui(url: str, rounds: int, per_round: int) -> dict[str, float]:
    """The chat-ui dialect vs a minimal hand-written chat-ui client, each on both transports."""
    hand = httpx.AsyncClient()
    hand_fast = httpx.AsyncClient(transport=fast_transport()) if fast_transport() else None
    ours = H2oClient(url, dialect="chat-ui", retries=Retries(attempts=1))
    ours_httpx = H2oClient(url, dialect="chat-ui", transport="httpx", retries=Retries(attempts=1))
    variants: dict[str, Callable[[], Awaitable[str]]] = {}
    if hand_fast is not None:
        variants["hand-written chat-ui, httpx-aiohttp transport"] = lambda: handwritten_chatui(hand_fast, url)
    variants["hand-written chat-ui, httpx transport"] = lambda: handwritten_chatui(hand, url)
    variants["h2o-fsm chat-ui ask (default transport)"] = lambda: ours.ask(MSGS)
    variants["h2o-fsm chat-ui ask, transport='httpx'"] = lambda: ours_httpx.ask(MSGS)
    expected = await handwritten_chatui(hand, url)
    for name, fn in variants.items():  # warm up, and check every variant reads a whole answer (random words)
        for _ in range(5):
            got = await fn()
        assert len(got.split()) == len(expected.split()) > 0, (name, got, expected)
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            gc.collect()
            t0 = time.process_time()
            for _ in range(per_round):
                await fn()
            await settled()  # the last DELETE is this variant's, not the next one's
            samples[name].append((time.process_time() - t0) / per_round * 1e6)
    await hand.aclose()
    if hand_fast is not None:
        await hand_fast.aclose()
    await ours.aclose()
    await ours_httpx.aclose()
    return {k: statistics.median(v) for k, v in samples.items()}


# ---------------------------------------------------------------- 2. throughput
async def throughput(url: str, levels: list[int]) -> dict[int, float]:
    out = {}
    async with H2oClient(url, max_connections=200, max_concurrency=1000) as client:
        await client.ask(MSGS)
        for n in levels:
            t0 = time.perf_counter()
            await asyncio.gather(*(client.ask(MSGS) for _ in range(n)))
            out[n] = n / (time.perf_counter() - t0)
    return out


# ---------------------------------------------------------------- 3. parser
def parser_ratio(
    tokens: int = 20000, rounds: int = 7, loads: Callable[[bytes], object] | None = None
) -> tuple[float, float, float]:
    line = (b'data:{"token":{"id":31,"text":" Hello","logprob":-0.3,"special":false},'
            b'"generated_text":null,"details":null}\n\n')
    body = line * tokens
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)]

    def ours() -> int:
        p = StreamParser(loads=loads)
        n = 0
        for c in chunks:
            n += len(p.feed(c))
        return n

    def bare() -> int:
        n = 0
        for ln in body.split(b"\n"):
            if ln:
                json.loads(ln[5:])
                n += 1
        return n

    def bare_orjson() -> int:
        import orjson

        n = 0
        for ln in body.split(b"\n"):
            if ln:
                orjson.loads(ln[5:])
                n += 1
        return n

    def bench(fn: Callable[[], int]) -> float:
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return tokens / statistics.median(times)

    a, b, c = [], [], []
    for _ in range(3):
        a.append(bench(ours))
        b.append(bench(bare))
        c.append(bench(bare_orjson))
    return statistics.median(a), statistics.median(b), statistics.median(c)


# ---------------------------------------------------------------- profile of the h2o one-shot path
async def profile_h2o(url: str, n: int, top: int = 25) -> None:
    """cProfile over ``n`` ``H2oClient.ask`` calls (h2o dialect, default transport): the top self-time
    functions, and those of h2o_fsm alone."""
    async with H2oClient(url, retries=Retries(attempts=1)) as client:
        for _ in range(10):
            await client.ask(MSGS)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(n):
            await client.ask(MSGS)
        prof.disable()
    stats = pstats.Stats(prof)
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    print(f"\n## profile: {n} × H2oClient.ask (h2o dialect), {total / n * 1e6:.0f} µs per call under cProfile")
    print("top self time, all code:")
    for (path, line, fn), (_, ncalls, tt, _ct, _) in rows[:top]:
        print(f"  {tt / total:6.1%} {ncalls / n:7.1f}/call  {'/'.join(path.split('/')[-2:])} {fn}:{line}")
    ours = [r for r in rows if "/h2o_fsm/" in r[0][0]]
    share = sum(r[1][2] for r in ours) / total
    print(f"top self time in h2o_fsm (all of h2o_fsm: {share:.1%} of the profiled time):")
    for (path, line, fn), (_, ncalls, tt, _ct, _) in ours[:top]:
        print(f"  {tt / total:6.1%} {ncalls / n:7.1f}/call  {path.split('/h2o_fsm/')[-1]}:{line} {fn}")


# ---------------------------------------------------------------- 4. memory per in-flight conversation
async def memory_in_flight(url: str, n: int) -> float:
    async with H2oClient(url, max_connections=n + 10) as client:
        await client.ask(MSGS)  # warm: the session, a connection
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        started = asyncio.Event()
        count = 0

        async def one() -> None:
            nonlocal count
            async for _ in client.stream(MSGS):
                count += 1
                if count >= n:
                    started.set()
                await asyncio.sleep(0)

        tasks = [asyncio.create_task(one()) for _ in range(n)]
        await asyncio.wait_for(started.wait(), 60)
        gc.collect()
        current = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return (current - base) / n / 1024


# ---------------------------------------------------------------- 5. construction
def construction(n: int = 5000) -> tuple[float, float]:
    from transitions.extensions.asyncio import AsyncMachine

    from h2o_fsm._table import STATES, TRANSITIONS

    client = H2oClient("http://127.0.0.1:9")
    t0 = time.perf_counter()
    for _ in range(n):
        client.conversation()
    ours = (time.perf_counter() - t0) / n * 1e6
    states = [s.phase.value for s in STATES]
    trans = [[e.trigger, [s.value for s in e.sources], e.dest.value] for e in TRANSITIONS]
    class Model:
        pass

    t0 = time.perf_counter()
    for _ in range(n // 10):
        AsyncMachine(model=Model(), states=states, transitions=trans, initial="new", auto_transitions=False)
    per_machine = (time.perf_counter() - t0) / (n // 10) * 1e6
    asyncio.run(client.aclose())
    return ours, per_machine


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("h2o-fsm", "aiohttp", "httpx", "httpx-aiohttp", "orjson", "transitions"):
        try:
            out.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist} -")
    return ", ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only-cpu", action="store_true", help="only section 1 (both dialects)")
    ap.add_argument("--profile", action="store_true", help="also profile the h2o one-shot path")
    args = ap.parse_args()
    rounds, per_round = (5, 20) if args.quick else (11, 40)
    print(f"# h2o-fsm benchmarks — Python {platform.python_version()} on {platform.machine()}, "
          f"{platform.system()}, {os.cpu_count()} CPUs; server: bundled emulator in another process, loopback")
    print(f"# {versions()}")
    proc, url = start_server(64)
    try:
        cpu = asyncio.run(cpu_per_conversation(url, rounds, per_round))
        base_old = cpu["aiohttp old provider (new session per call)"]
        base_raw = cpu["raw httpx, shared client"]
        print(f"\n## 1. h2o dialect: client CPU per one-shot conversation (64 tokens), "
              f"median of {rounds} rounds × {per_round}")
        print(f"{'variant':52} {'µs CPU':>9} {'vs old aiohttp':>15} {'vs raw httpx':>13}")
        for name, us in cpu.items():
            print(f"{name:52} {us:9.0f} {us / base_old:14.2f}× {us / base_raw:12.2f}×")
        ratio = cpu["h2o-fsm H2oClient.ask, transport='httpx'"] / base_raw
        print(f"h2o-fsm vs raw client on the same (httpx default) transport: {ratio:.2f}× (target <= 1.10×)")
        if "raw httpx + httpx-aiohttp transport" in cpu:
            ratio = cpu["h2o-fsm H2oClient.ask + httpx-aiohttp transport"] / cpu["raw httpx + httpx-aiohttp transport"]
            print(f"h2o-fsm vs raw client on the same (httpx-aiohttp) transport: {ratio:.2f}× (target <= 1.10×)")
        print(f"native ask vs old provider: {cpu['h2o-fsm H2oClient.ask'] / base_old:.2f}×, compat generator: "
              f"{cpu['h2o-fsm H2o.create_async_generator'] / base_old:.2f}× (target <= 1.0×)")
        if args.profile:
            asyncio.run(profile_h2o(url, 400 if args.quick else 2000))
        if not args.only_cpu:
            levels = [1, 10, 100] if args.quick else [1, 10, 100, 1000]
            tput = asyncio.run(throughput(url, levels))
            print("\n## 2. throughput, h2o dialect (conversations/s, one client)")
            for n, rate in tput.items():
                print(f"  {n:>5} concurrent: {rate:8.0f}/s")
    finally:
        proc.terminate()
        proc.wait()
    proc, url = start_server(64, dialect="chat-ui")
    try:
        cu = asyncio.run(cpu_chatui(url, rounds, per_round))
        print(f"\n## 1b. chat-ui dialect: client CPU per one-shot conversation (64 tokens), "
              f"median of {rounds} rounds × {per_round}")
        hand_httpx = cu["hand-written chat-ui, httpx transport"]
        hand = {"httpx-aiohttp": cu.get("hand-written chat-ui, httpx-aiohttp transport", hand_httpx),
                "httpx": hand_httpx}
        print(f"{'variant':52} {'µs CPU':>9} {'vs hand-written, same transport':>32}")
        for name, us in cu.items():
            base = hand["httpx" if "httpx transport" in name or "'httpx'" in name else "httpx-aiohttp"]
            print(f"{name:52} {us:9.0f} {us / base:31.2f}×")
        if "hand-written chat-ui, httpx-aiohttp transport" in cu:
            print(f"h2o-fsm chat-ui vs hand-written (httpx-aiohttp, the default transport): "
                  f"{cu['h2o-fsm chat-ui ask (default transport)'] / hand['httpx-aiohttp']:.2f}× (target <= 1.10×)")
        own = cu["h2o-fsm chat-ui ask, transport='httpx'"] / hand["httpx"]
        print(f"h2o-fsm chat-ui vs hand-written (httpx's own transport): {own:.2f}× (target <= 1.10×)")
    finally:
        proc.terminate()
        proc.wait()
    if args.only_cpu:
        return
    ours_json = parser_ratio(loads=json.loads)[0]
    ours, bare, bare_or = parser_ratio()
    print(f"\n## 3. stream parsing, h2o (TGI data: lines): ours {ours:,.0f} tokens/s; "
          f"a bare loop of json.loads per line "
          f"{bare:,.0f}/s → {ours / bare:.2f}×; of orjson.loads per line {bare_or:,.0f}/s → {ours / bare_or:.2f}×")
    print(f"   ours with the stdlib json decoder (no fast extra): {ours_json:,.0f} tokens/s → {ours_json / bare:.2f}× "
          "the bare json.loads loop")
    cp, _, _ = chatui_parser.measure(rounds=7, repeats=3)
    cbare, cours, cstd = cp[chatui_parser.BARE], cp[chatui_parser.OURS], cp[chatui_parser.OURS_STDLIB]
    print(f"## 3b. stream parsing, chat-ui (JSON lines, NUL-padded tokens, keepAlive, 4096-space padding): "
          f"ours {cours:,.0f} tokens/s → {cours / cbare:.2f}× a bare json.loads loop ({cbare:,.0f}/s; "
          f"target >= 1.0×); with the stdlib json decoder {cstd:,.0f}/s → {cstd / cbare:.2f}×")
    proc, url = start_server(64, token_delay=0.05)
    try:
        n = 100 if args.quick else 300
        kib = asyncio.run(memory_in_flight(url, n))
        print(f"\n## 4. memory per in-flight conversation (mid-stream, {n} at once): "
              f"{kib:.1f} KiB above the shared client")
    finally:
        proc.terminate()
        proc.wait()
    ours_c, machine_c = construction()
    print(f"\n## 5. creating a conversation object: {ours_c:.1f} µs (a new transitions AsyncMachine per conversation: "
          f"{machine_c:.1f} µs → {ours_c / machine_c:.2f}×)")


if __name__ == "__main__":
    main()
