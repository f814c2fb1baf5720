"""Interactive latency while a batch runs: the same streaming chat load against the tiny model,
first alone, then while a large batch is being worked (a quarter of the slots, lowest tier, with
priority scheduling on), on one server on this machine.

    .venv/bin/python scripts/bench_batch_interference.py [--requests 64] [--concurrency 4] [--batch 2000]

Prints TTFT p50/p90 and output tokens/s for both runs, and how far the batch got meanwhile.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_overhead import free_port, start_hermes, wait_ready  # noqa: E402
from server.bench.runner import BenchOptions, make_workload, run_bench, targets_of  # noqa: E402


def measure(url: str, args: argparse.Namespace, out: Path) -> dict:
    workload = make_workload(
        "128", "64", stream=True, reasoning=None, temperature=0.0, fixed_output=True, seed=args.seed, request_timeout=600.0
    )
    opts = BenchOptions(
        targets=targets_of([url + "/v1"], [], [], "nousresearch/hermes-4-70b"),
        workload=workload,
        concurrency=str(args.concurrency),
        requests=args.requests,
        warmup=2,
        out=out,
    )
    summary = run_bench(opts)["results"][0]["summary"]
    return {"ttft_p50": summary["ttft_ms"]["p50"], "ttft_p90": summary["ttft_ms"]["p90"], "tok_s": summary["output_tokens_per_s"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "bench-batch")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {"HERMES_ENGINE__SCHEDULING_POLICY": "priority", "HERMES_DATABASE_URL": f"sqlite:///{args.out / 'b.db'}"}
    log = args.out / "server.log"
    proc = start_hermes(port, log, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/ready", proc, log)
        alone = measure(url, args, args.out / "alone")
        lines = [
            json.dumps(
                {
                    "custom_id": f"b{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "messages": [{"role": "user", "content": f"Batch item {i}: write about the sea."}],
                        "max_tokens": 64,
                        "min_tokens": 64,
                        "ignore_eos": True,
                        "temperature": 0,
                    },
                }
            )
            for i in range(args.batch)
        ]
        upload = httpx.post(
            url + "/v1/files", files={"file": ("b.jsonl", "\n".join(lines))}, data={"purpose": "batch"}, timeout=60
        )
        batch = httpx.post(
            url + "/v1/batches",
            json={"input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
            timeout=60,
        ).json()
        time.sleep(5)  # the runner is at full share
        during = measure(url, args, args.out / "during")
        counts = httpx.get(f"{url}/v1/batches/{batch['id']}", timeout=60).json()["request_counts"]
        print(
            f"\nalone:           TTFT p50 {alone['ttft_p50']:.0f} ms, p90 {alone['ttft_p90']:.0f} ms, {alone['tok_s']:.0f} out tok/s"
        )
        print(
            f"during a batch:  TTFT p50 {during['ttft_p50']:.0f} ms, p90 {during['ttft_p90']:.0f} ms, {during['tok_s']:.0f} out tok/s"
        )
        print(f"batch meanwhile: {counts['completed']} of {counts['total']} requests answered")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)


if __name__ == "__main__":
    main()
