"""How the gateway answers a burst it cannot carry: every request gets an answer, refusals fast.

    .venv/bin/python scripts/bench_overload.py [--burst 400] [--slots 64] [--queue 64] [--max-wait 5]

Serves the app behind an engine that takes --step seconds per token (--tokens per answer), so its
capacity is known: --slots generations at a time plus --queue waiting. --burst requests come in
(default about 4x what the slots carry): the first fill the slots and the queue at once, the rest
arrive while the server is full, 16 at a time. Every request's status, latency and Retry-After
are recorded. Prints how many got 200 and 429, the p50/p99 latency of the 429s given to requests
that found the server full (target: p99 under 50 ms), how long queued requests waited before a
429 (bounded by --max-wait), and the longest wait for any answer.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_layer import ROOT, start

Result = tuple[int, float, str | None, str]  # status, seconds, Retry-After, error message


async def one(client: httpx.AsyncClient, url: str, tokens: int) -> Result:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": tokens, "temperature": 0, "top_p": 1}
    t0 = time.monotonic()
    r = await client.post(url, json=body)
    message = r.json().get("error", {}).get("message", "") if r.status_code != 200 else ""
    return r.status_code, time.monotonic() - t0, r.headers.get("retry-after"), message


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else (values[0] if values else 0.0)


async def burst(url: str, n: int, fill: int, tokens: int) -> list[Result]:
    limits = httpx.Limits(max_connections=fill + 16, max_keepalive_connections=fill + 16)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        first = [asyncio.create_task(one(client, url, tokens)) for _ in range(fill)]
        await asyncio.sleep(1.0)  # the slots and the queue are taken
        rest: list[Result] = []
        pending = n - fill
        while pending > 0:
            batch = min(16, pending)
            rest += await asyncio.gather(*(one(client, url, tokens) for _ in range(batch)))
            pending -= batch
        return [*await asyncio.gather(*first), *rest]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--burst", type=int, default=400)
    ap.add_argument("--slots", type=int, default=64)
    ap.add_argument("--queue", type=int, default=64)
    ap.add_argument("--max-wait", type=float, default=5.0, help="gateway.max_queue_wait_seconds")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--step", type=float, default=0.05, help="seconds per token of the stand-in engine")
    args = ap.parse_args()
    gateway = {"max_in_flight": args.slots, "max_queue": args.queue, "max_queue_wait_seconds": args.max_wait}
    proc, port = start(ROOT, "configs/tiny-cpu.yaml", args.tokens, args.step, gateway)
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        results = asyncio.run(burst(url, args.burst, args.slots + args.queue, args.tokens))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    service = args.tokens * args.step
    ok = [lat for status, lat, _, _ in results if status == 200]
    refused = [(lat, ra, msg) for status, lat, ra, msg in results if status == 429]
    at_once = [lat for lat, _, msg in refused if "at capacity" in msg]
    timed_out = [lat for lat, _, msg in refused if "came free" in msg]
    other = sorted({status for status, _, _, _ in results} - {200, 429})
    print(
        f"burst of {args.burst} at {args.slots} slots + {args.queue} queued, {service:.1f} s per answer, max wait {args.max_wait:g} s"
    )
    print(
        f"200: {len(ok)}   429: {len(refused)} ({len(at_once)} at once, {len(timed_out)} after waiting)   other: {other or 'none'}"
    )
    if at_once:
        print(f"429 at once: p50 {pct(at_once, 50) * 1000:.1f} ms, p99 {pct(at_once, 99) * 1000:.1f} ms")
    if timed_out:
        print(f"429 after waiting: p50 {pct(timed_out, 50):.2f} s, max {max(timed_out):.2f} s")
    print(f"longest wait for any answer: {max(lat for _, lat, _, _ in results):.2f} s")
    print(f"Retry-After given: {sorted({ra for _, ra, _ in refused if ra}, key=int)}")


if __name__ == "__main__":
    main()
