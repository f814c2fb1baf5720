"""What this server's API layer costs per streamed token: (a) with generation itself free, and
(b) beside vLLM's own OpenAI server on the same engine.

    .venv/bin/python scripts/bench_layer.py [--streams 1,64,256] [--tokens 128] [--requests 256] [--repo DIR]
    .venv/bin/python scripts/bench_layer.py --vs-vllm [--streams 1,64] [--api-processes N]

Serves the app (a subprocess, uvicorn, the tiny profile's settings) in front of a zero-cost engine:
every request gets the same pre-decoded reply of --tokens tokens, one token per engine delta, with
no sampling work at all. A streaming chat load at each level of concurrency then measures output
tokens/s through the layer and the server process's CPU time per streamed token (user + system,
through psutil). --repo points at another checkout (e.g. a git worktree of an older commit) to compare
before and after on the same machine; its ``create_app(settings, engine=..., renderer=...)`` is used.

--vs-vllm (part b): this server (``hermes-server serve``) and vLLM's OpenAI server, each with its
own engine core on the tiny model, take the same greedy streaming load in turn; printed is the CPU
time of each one's API process(es) per streamed token (the engine core processes excluded) and the
ratio. Both detokenize in the API process (vLLM's output processor runs there in both).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from bench_overhead import cpu_seconds, free_port, start_hermes, vllm_command, wait_ready

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
    def queue_counts(self): return (self.running, 0)
    replicas = 1
    def replica_loads(self): return None

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


async def one(client: httpx.AsyncClient, url: str, tokens: int, model: str | None = None) -> int:
    body = {
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},  # vLLM's server sends usage only when asked
        "max_tokens": tokens,
        "min_tokens": tokens,
        "temperature": 0,
        "top_p": 1,
        **({"model": model} if model else {}),
    }
    got = 0
    async with client.stream("POST", url, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: {") and '"usage"' in line:
                got = json.loads(line[6:])["usage"]["completion_tokens"]
    return got


async def level(url: str, streams: int, requests: int, tokens: int, model: str | None = None) -> tuple[int, float]:
    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        queue = list(range(requests))

        async def worker() -> int:
            n = 0
            while queue:
                queue.pop()
                n += await one(client, url, tokens, model)
            return n

        start = time.monotonic()
        done = await asyncio.gather(*(worker() for _ in range(streams)))
        return sum(done), time.monotonic() - start


def vs_vllm(args: argparse.Namespace) -> None:
    """Part (b): API-process CPU per streamed token, this server against vLLM's, same engine."""
    sys.path.insert(0, str(ROOT))
    from server.settings import load_settings

    s = load_settings(args.config)
    tmp = Path(tempfile.mkdtemp(prefix="hermes-layer-vs-"))
    env = {
        **os.environ,
        "HERMES_DATABASE_URL": f"sqlite:///{tmp / 'usage.db'}",
        "HERMES_API_PROCESSES": str(args.api_processes),
        "HERMES_ENGINE__STREAM_INTERVAL": str(args.stream_interval),
    }
    ours_port, vllm_port = free_port(), free_port()
    ours_log, vllm_log = tmp / "hermes.log", tmp / "vllm.log"
    ours = start_hermes(ours_port, ours_log, env, args.config)
    vllm = subprocess.Popen(vllm_command(s, vllm_port), cwd=ROOT, env=env, stdout=vllm_log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{ours_port}/ready", ours, ours_log)
        wait_ready(f"http://127.0.0.1:{vllm_port}/health", vllm, vllm_log)
        # The API process(es): serve's supervised child (N > 1: that child's API process children,
        # not its engine core), and vLLM's server process itself (its engine core is a child).
        server = psutil.Process(ours.pid).children()[0]
        api = [server] if args.api_processes == 1 else [c for c in server.children() if "apiserver" in _described(c).lower()]
        ours_api = [p.pid for p in api]
        targets = {
            "vllm": (f"http://127.0.0.1:{vllm_port}/v1/chat/completions", [vllm.pid]),
            "hermes": (f"http://127.0.0.1:{ours_port}/v1/chat/completions", ours_api),
        }
        for url, _ in targets.values():
            asyncio.run(level(url, 4, 16, args.tokens, s.model.served_name))  # warm-up
        print(
            f"{args.tokens} greedy tokens per request, tiny model on the CPU build; hermes api_processes="
            f"{args.api_processes}, stream_interval={args.stream_interval} (vLLM: its defaults)",
            flush=True,
        )
        print("| streams | requests | vLLM API CPU µs / token | hermes API CPU µs / token | ratio (hermes / vLLM) |")
        print("|---|---|---|---|---|")
        for streams in (int(x) for x in args.streams.split(",")):
            cost: dict[str, float] = {}
            n = max(args.requests, streams)
            for name in ("vllm", "hermes") if streams % 2 else ("hermes", "vllm"):
                url, pids = targets[name]
                before = sum(cpu_seconds(p) for p in pids)
                tokens, _ = asyncio.run(level(url, streams, n, args.tokens, s.model.served_name))
                cost[name] = (sum(cpu_seconds(p) for p in pids) - before) / tokens * 1e6
            print(
                f"| {streams} | {n} | {cost['vllm']:.1f} | {cost['hermes']:.1f} | {cost['hermes'] / cost['vllm']:.2f} |",
                flush=True,
            )
    finally:
        for p in (ours, vllm):
            p.terminate()
        for p in (ours, vllm):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()


def _described(proc: psutil.Process) -> str:
    """The process's command line and name ("" once it has ended): what tells an API process apart."""
    try:
        return " ".join(proc.cmdline()) + " " + proc.name()
    except psutil.Error:
        return ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="1,64,256")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--requests", type=int, default=256, help="requests per level (at least the number of streams)")
    ap.add_argument("--config", default="configs/tiny-cpu.yaml")
    ap.add_argument("--repo", type=Path, default=ROOT, help="checkout whose server to measure")
    ap.add_argument("--vs-vllm", action="store_true", help="part (b): API process CPU against vLLM's server, same engine")
    ap.add_argument("--api-processes", type=int, default=1, help="with --vs-vllm: this server's api_processes")
    ap.add_argument("--stream-interval", type=int, default=1, help="with --vs-vllm: this server's engine.stream_interval")
    args = ap.parse_args()
    if args.vs_vllm:
        vs_vllm(args)
        return
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
