"""Agent sessions over data-parallel replicas: how much of each session's history the prefix
cache serves, with one replica, and with two with affinity routing on (sessions named, or found by
their prompts' leading blocks) and off (vLLM's balancer). The tiny model on the CPU build; one
server at a time on this machine.

    .venv/bin/python scripts/bench_sessions.py [--sessions 6] [--turns 4] [--system 1500] [--out /tmp/sessions]

Prints, per layout: the cached share of prompt tokens on turns 2..T (the turns that could reuse
their history), the mean time to first token per turn, and the replicas' spread (requests and
prompt tokens, max/min), then a Markdown table for benchmarks/RESULTS.md. Target: two replicas
with affinity within 5 % of one replica's cached share, max/min replica load at most 1.25.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_overhead import free_port, start_hermes, wait_ready  # noqa: E402
from server.bench.runner import BenchOptions, make_workload, run_bench, targets_of  # noqa: E402

KV = str(256 << 20)  # per replica: what two replicas share of this machine's memory comfortably
LAYOUTS: dict[str, tuple[dict[str, str], bool]] = {
    # name: (server environment, whether requests name their session)
    "DP=1": ({"HERMES_ENGINE__DATA_PARALLEL_SIZE": "1"}, True),
    "DP=2, affinity, named sessions": ({"HERMES_ENGINE__DATA_PARALLEL_SIZE": "2"}, True),
    "DP=2, affinity, prompts only": ({"HERMES_ENGINE__DATA_PARALLEL_SIZE": "2"}, False),
    "DP=2, affinity off (vLLM's balancer)": (
        {"HERMES_ENGINE__DATA_PARALLEL_SIZE": "2", "HERMES_ROUTING__AFFINITY": "false"},
        True,
    ),
}


def start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = start_hermes(port, log, {"HERMES_ENGINE__KV_CACHE_MEMORY_BYTES": KV, **env})
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/ready", proc, log)
    return proc, url


def measure(url: str, args: argparse.Namespace, named: bool, out: Path) -> dict[str, Any]:
    workload = make_workload(
        str(args.prompt_tokens),
        str(args.output_tokens),
        mix=f"sessions:turns={args.turns},system={args.system},think={args.think},named={int(named)}",
        stream=True,
        reasoning=None,
        temperature=0.0,
        fixed_output=True,
        seed=args.seed,
        request_timeout=600.0,
    )
    opts = BenchOptions(
        targets=targets_of([url + "/v1"], [], [], "nousresearch/hermes-4-70b"),
        workload=workload,
        concurrency=str(args.sessions),
        requests=args.sessions * args.turns,
        warmup=0,
        out=out,
    )
    return run_bench(opts)


def figures(run: dict[str, Any], turns: int) -> dict[str, Any]:
    data = json.loads(Path(run["paths"]["json"]).read_text())
    by_tag = data["tokens"]["by_tag"]
    later = [by_tag[f"turn {t}"] for t in range(2, turns + 1)]
    prompt = sum(t["prompt_tokens"] for t in later)
    cached = sum(t["cached_tokens"] for t in later)
    return {
        "cached_share": cached / prompt if prompt else 0.0,
        "ttft_ms": {tag: t["ttft_ms_mean"] for tag, t in sorted(by_tag.items())},
        "replicas": run["meta"]["replicas"].get("target"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=6)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--system", type=int, default=1500, help="system prompt words per session")
    p.add_argument("--think", type=float, default=0.5)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--output-tokens", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", help="run just the layouts whose name starts with this")
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "bench-sessions")
    args = p.parse_args()
    results: dict[str, dict[str, Any]] = {}
    for name, (env, named) in LAYOUTS.items():
        if args.only and not name.startswith(args.only):
            continue
        folder = args.out / name.split(",")[0].replace("=", "") / str(len(results))
        folder.mkdir(parents=True, exist_ok=True)
        proc, url = start(env, folder / "server.log")
        try:
            results[name] = figures(measure(url, args, named, folder), args.turns)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    base = results.get("DP=1", {}).get("cached_share")
    head = f"cached share, turns 2-{args.turns}"
    print(f"\n| layout | {head} | vs DP=1 | TTFT ms per turn | replicas (requests) | max/min requests | max/min prompt tokens |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        spread = r["replicas"]
        per = ", ".join(f"{v['requests']}" for v in spread["replicas"].values()) if spread else "-"
        ratio_r = f"{spread['max_over_min_requests']:.2f}" if spread and spread["max_over_min_requests"] else "-"
        ratio_t = f"{spread['max_over_min_prompt_tokens']:.2f}" if spread and spread["max_over_min_prompt_tokens"] else "-"
        vs = f"{r['cached_share'] - base:+.1%}" if base is not None else "-"
        ttft = " / ".join(f"{v:.0f}" for v in r["ttft_ms"].values() if v is not None)
        print(f"| {name} | {r['cached_share']:.1%} | {vs} | {ttft} | {per} | {ratio_r} | {ratio_t} |")


if __name__ == "__main__":
    main()
