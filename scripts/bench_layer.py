"""What this server's API layer costs per streamed token, with generation itself free.

    .venv/bin/python scripts/bench_layer.py [--streams 1,64,256] [--tokens 128] [--requests 256] [--repo DIR]

Serves the app (a subprocess, uvicorn, the tiny profile's settings) in front of a zero-cost engine:
every request gets the same pre-decoded reply of --tokens tokens, one token per engine delta, with
no sampling work at all. A streaming chat load at each level of concurrency then measures output
tokens/s through the layer and the server process's CPU time per streamed token (user + system,
from /proc). --repo points at another checkout (e.g. a git worktree of an older commit) to compare
before and after on the same machine; its ``create_app(settings, engine=..., renderer=...)`` is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

# The server side: the app with a zero-cost engine, run by uvicorn in its own process.
SERVER = r"""
import sys, asyncio
sys.path.insert(0, {repo!r})
import uvicorn
from server.app import create_app
from server.engine.base import EngineDelta
from server.hermes.prompt import PromptRenderer
from server.settings import load_settings

class FreeEngine:
    ready = True
    max_model_len = 131072

    def __init__(self, tokenizer, n, step):
        self.step = step
        ids = tokenizer.encode(" hello" * n, add_special_tokens=False)[:n]
        self.pieces = [(tokenizer.decode([t]), [t]) for t in ids]
        self.running = 0

    async def start(self): pass
    async def shutdown(self): pass
    def num_unfinished_requests(self): return self.running
    def kv_cache_usage(self): return 0.0

    async def generate(self, prompt, options, request_id):
        self.running += 1
        try:
            last = min(len(self.pieces), options.max_tokens) - 1
            for i, (text, ids) in enumerate(self.pieces[: last + 1]):
                await asyncio.sleep(self.step)  # one engine step per token (0: free; the loop still turns)
                yield EngineDelta(text, ids, finished=i == last, finish_reason="length" if i == last else None,
                                  num_cached_tokens=0 if i == last else None)
        finally:
            self.running -= 1

settings = load_settings({config!r}, max_request_bytes=1 << 20)
for name, value in {gateway!r}.items():
    setattr(settings.gateway, name, value)
renderer = PromptRenderer.from_path(settings.model.resolved_path())
app = create_app(settings, engine=FreeEngine(renderer.tokenizer, {tokens}, {step}), renderer=renderer)
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    repo: Path, config: str, tokens: int, step: float = 0.0, gateway: dict[str, object] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """The app of ``repo`` behind the zero-cost engine (``step`` seconds per token), ready."""
    port = free_port()
    limits = gateway if gateway is not None else {"max_in_flight": 4096, "max_queue": 4096}
    code = SERVER.format(repo=str(repo), config=str(ROOT / config), tokens=tokens, step=step, port=port, gateway=limits)
    env = {**os.environ, "HERMES_DATABASE_URL": f"sqlite:///{tempfile.mkdtemp(prefix='hermes-layer-')}/usage.db"}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=repo, env=env)
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("server did not start")
        time.sleep(0.5)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one(client: httpx.AsyncClient, url: str, tokens: int) -> int:
    body = {"messages": [{"role": "user", "content": "Hi"}], "stream": True, "max_tokens": tokens, "temperature": 0, "top_p": 1}
    got = 0
    async with client.stream("POST", url, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: {") and '"usage"' in line:
                got = json.loads(line[6:])["usage"]["completion_tokens"]
    return got


async def level(url: str, streams: int, requests: int, tokens: int) -> tuple[int, float]:
    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        queue = list(range(requests))

        async def worker() -> int:
            n = 0
            while queue:
                queue.pop()
                n += await one(client, url, tokens)
            return n

        start = time.monotonic()
        done = await asyncio.gather(*(worker() for _ in range(streams)))
        return sum(done), time.monotonic() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="1,64,256")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--requests", type=int, default=256, help="requests per level (at least the number of streams)")
    ap.add_argument("--config", default="configs/tiny-cpu.yaml")
    ap.add_argument("--repo", type=Path, default=ROOT, help="checkout whose server to measure")
    args = ap.parse_args()
    proc, port = start(args.repo.resolve(), args.config, args.tokens)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    repo = args.repo.resolve()
    try:
        asyncio.run(level(url, 4, 16, args.tokens))  # warm-up
        print(f"checkout: {repo}  ({args.tokens} tokens per request, zero-cost engine)")
        print("| streams | requests | output tok/s | server CPU µs / token |")
        print("|---|---|---|---|")
        for streams in (int(s) for s in args.streams.split(",")):
            before = cpu_seconds(proc.pid)
            tokens, elapsed = asyncio.run(level(url, streams, max(args.requests, streams), args.tokens))
            cpu = cpu_seconds(proc.pid) - before
            print(f"| {streams} | {max(args.requests, streams)} | {tokens / elapsed:,.0f} | {cpu / tokens * 1e6:.1f} |")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
