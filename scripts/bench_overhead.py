"""What this server's layer costs on top of the engine: the same tiny model served twice on this
machine, through hermes-server and through vLLM's own OpenAI server with the same engine
settings, driven by the same streaming chat load in one run (levels interleaved A B / B A).

    .venv/bin/python scripts/bench_overhead.py [--levels 1,8,32,64] [--requests 128] [--out benchmarks/overhead]
        [--one-engine [--hermes-client 0|1]]

Prints throughput, TTFT and E2E ratios (ours / vLLM's) per level, with each round's throughput ratio
(rounds alternate the servers, so their spread shows the machine's drift) and a 95 % interval
from them, and a Markdown table for benchmarks/RESULTS.md. Targets: throughput ratio >= 1.0 and
p50 TTFT ratio <= 1.0 at every level; where the interval holds 1.0 it says the run cannot tell
the two servers' throughput apart, whichever side of 1.0 the overall ratio fell.

It splits each server's mean request time into before the first token, per token after it (the
engine's step time as the client sees it, which moves with the host's load on a shared machine)
and after the last token, so a throughput ratio can be read as the layer's or the engine's.

It also prints the CPU time each server's API process (and its engine) used over the whole run,
per request: the layer's own cost, read from the processes' counters rather than from latencies,
so it is steadier than the ratios on a machine where both servers, both engines and the load
generator share the cores.

With ``--one-engine`` the two servers are two front ends of one engine (``scripts/one_engine.py``)
and each round loads both at once: every token of either comes out of the same forward pass, so
the engine's speed, which drifts by ±15 % between rounds on a small shared machine and decides the
separate-engine ratios, cancels out, and what differs is the layers alone. Both servers' requests
then also race for the same prefill steps: a front end that hands its requests to the engine later
waits whole steps longer for its first token.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.bench.ab_stats import describe_interval  # noqa: E402
from server.bench.runner import BenchOptions, make_workload, run_bench, targets_of  # noqa: E402
from server.settings import Settings, load_settings  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} not ready after {timeout}s")


def start_hermes(
    port: int, log: Path, env: dict[str, str] | None = None, config: str = "configs/tiny-cpu.yaml", append: bool = False
) -> subprocess.Popen[bytes]:
    """``hermes-server serve`` of ``config`` on ``port``, its output to ``log`` (``append``: after
    an earlier run's, as a restart's); ``env`` on top of this process's environment. Not waited
    for: see :func:`wait_ready`."""
    cmd = [sys.executable, "-m", "server.cli", "serve", "--config", config, "--port", str(port)]
    out = log.open("ab" if append else "wb")
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) the process ``pid`` has used so far."""
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def cpu_seconds_by_part(
    procs: list[psutil.Process], parts: tuple[str, ...], part_of: Callable[[psutil.Process], str]
) -> dict[str, float]:
    """CPU seconds so far of ``procs``, summed by ``part_of`` each (one of ``parts``); a process
    that ended in between is left out."""
    out = dict.fromkeys(parts, 0.0)
    for proc in procs:
        try:
            out[part_of(proc)] += cpu_seconds(proc.pid)
        except psutil.Error:
            continue
    return out


def server_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds the server started as ``pid`` has used so far: its API process(es) and its
    engine (vLLM's own processes, named ``VLLM::…``)."""
    root = psutil.Process(pid)
    return cpu_seconds_by_part(
        [root, *root.children(recursive=True)], ("api", "engine"), lambda p: "engine" if p.name().startswith("VLLM::") else "api"
    )


def cpu_by_part(servers: dict[str, subprocess.Popen[bytes]], hermes_client: int) -> dict[str, float]:
    """CPU seconds so far of each server's API process and engine ("hermes api", "vllm engine" …),
    or with one engine (``scripts/one_engine.py``) of each front end and of the engine they share
    ("engine"): the front ends are the engine's clients ``VLLM::APIServer_<index>``."""
    if "one engine" not in servers:
        return {f"{name} {part}": v for name, p in servers.items() for part, v in server_cpu_seconds(p.pid).items()}

    def part_of(proc: psutil.Process) -> str:
        title = (proc.cmdline() or [""])[0]  # setproctitle's title, then empty arguments
        if not title.startswith("VLLM::APIServer_"):
            return "engine"
        return "hermes api" if title == f"VLLM::APIServer_{hermes_client}" else "vllm api"

    procs = psutil.Process(servers["one engine"].pid).children(recursive=True)
    return cpu_seconds_by_part(procs, ("hermes api", "vllm api", "engine"), part_of)


def vllm_command(s: Settings, port: int) -> list[str]:
    """vLLM's own OpenAI server with the engine settings the profile gives ours."""
    e = s.engine
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        s.model.resolved_path(),
        "--served-model-name",
        s.model.served_name,
        "--dtype",
        e.dtype,
        "--max-model-len",
        str(e.max_model_len),
        "--max-num-seqs",
        str(e.max_num_seqs),
        "--seed",
        str(e.seed),
        "--tensor-parallel-size",
        str(e.tensor_parallel_size),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if e.kv_cache_memory_bytes:
        cmd += ["--kv-cache-memory-bytes", str(e.kv_cache_memory_bytes)]
    if not e.enable_prefix_caching:
        cmd += ["--no-enable-prefix-caching"]
    return cmd


Readiness = list[tuple[str, subprocess.Popen[bytes], Path]]


def start_servers(
    args: argparse.Namespace, s: Settings, ours_port: int, vllm_port: int, env: dict[str, str], tmp: Path
) -> tuple[dict[str, subprocess.Popen[bytes]], Readiness]:
    """Both servers, or with ``--one-engine`` the one process that runs both front ends; and what
    to wait for: each server's readiness URL, the process that serves it and its log."""
    ready, health = f"http://127.0.0.1:{ours_port}/ready", f"http://127.0.0.1:{vllm_port}/health"
    if args.one_engine:
        log = tmp / "one-engine.log"
        cmd = [sys.executable, str(ROOT / "scripts" / "one_engine.py"), "--config", args.config]
        cmd += ["--hermes-port", str(ours_port), "--vllm-port", str(vllm_port), "--hermes-client", str(args.hermes_client)]
        both = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        return {"one engine": both}, [(ready, both, log), (health, both, log)]
    ours_log, vllm_log = tmp / "hermes.log", tmp / "vllm.log"
    ours = start_hermes(ours_port, ours_log, env, args.config)
    vllm = subprocess.Popen(vllm_command(s, vllm_port), cwd=ROOT, env=env, stdout=vllm_log.open("wb"), stderr=subprocess.STDOUT)
    return {"hermes": ours, "vllm": vllm}, [(ready, ours, ours_log), (health, vllm, vllm_log)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/tiny-cpu.yaml")
    ap.add_argument("--levels", default="1,8,32,64")
    ap.add_argument("--requests", type=int, default=128, help="requests per level and server")
    ap.add_argument("--prompt-tokens", default="128")
    ap.add_argument("--output-tokens", default="64")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "overhead")
    ap.add_argument("--one-engine", action="store_true", help="both servers as front ends of one engine, loaded at once")
    ap.add_argument("--hermes-client", type=int, choices=(0, 1), default=1, help="--one-engine: which engine client is ours")
    args = ap.parse_args()

    s = load_settings(args.config)
    tmp = Path(tempfile.mkdtemp(prefix="hermes-overhead-"))
    ours_port, vllm_port = free_port(), free_port()
    env = {**os.environ, "HERMES_DATABASE_URL": f"sqlite:///{tmp / 'usage.db'}"}
    servers, readiness = start_servers(args, s, ours_port, vllm_port, env, tmp)
    try:
        for url, proc, log in readiness:
            wait_ready(url, proc, log)
        workload = make_workload(
            args.prompt_tokens,
            args.output_tokens,
            stream=True,
            reasoning=None,
            temperature=0.0,
            fixed_output=True,
            seed=0,
            request_timeout=600,
        )
        urls = [f"http://127.0.0.1:{vllm_port}/v1", f"http://127.0.0.1:{ours_port}/v1"]
        opts = BenchOptions(
            targets=targets_of(urls, [], ["vllm", "hermes"], s.model.served_name),
            workload=workload,
            concurrency=args.levels,
            requests=args.requests,
            duration=1800,
            rounds=args.rounds,
            together=args.one_engine,
            warmup=4,
            out=args.out,
        )
        before = cpu_by_part(servers, args.hermes_client)
        result = run_bench(opts)
        used = cpu_by_part(servers, args.hermes_client)
    finally:
        for p in servers.values():
            p.send_signal(signal.SIGTERM)
        for p in servers.values():
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()

    by = {(r["target"], r["load"]): r["summary"] for r in result["results"]}
    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; profile {args.config}")
    print(
        "| load | vLLM out tok/s | hermes out tok/s | throughput ratio | by round | rounds' 95 % interval | vLLM TTFT p50 ms | hermes TTFT p50 ms | TTFT p50 ratio | TTFT p99 ratio | E2E p50 ratio | errors (vLLM / hermes) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    missed, unresolved = [], []
    for entry in result["ab"]:
        ld, r, interval = entry["load"], entry["ratios"], entry["round_throughput_interval"]
        v, h = by[("vllm", ld)], by[("hermes", ld)]
        thr, ttft = r["output_tokens_per_s"], r["ttft_ms.p50"]
        print(
            f"| {ld} | {v['output_tokens_per_s']:.1f} | {h['output_tokens_per_s']:.1f} | {thr:.3f} | {by_round(entry)} | "
            f"{describe_interval(interval)} | "
            f"{v['ttft_ms']['p50']:.1f} | {h['ttft_ms']['p50']:.1f} | {ttft:.3f} | {r['ttft_ms.p99']:.3f} | {r['e2e_ms.p50']:.3f} | "
            f"{sum(v['errors'].values())} / {sum(h['errors'].values())} |"
        )
        if thr is None or thr < 1.0 or ttft is None or ttft > 1.0:
            missed.append(ld)
        if interval is not None and interval[0] < 1.0 < interval[1]:
            unresolved.append(ld)
    print()
    # A throughput ratio below 1 with a decode step slower by as much is the engine's (the host's
    # speed while that server ran), not the layer's: the layer shows before the first token and
    # after the last.
    print("| load | server | mean ms to first token | mean ms per token after it (engine step) | mean ms after the last token |")
    print("|---|---|---|---|---|")
    for (name, ld), summary in sorted(by.items(), key=lambda item: (item[0][1], item[0][0] != "vllm")):
        split = summary["time_split_ms"]
        print(
            f"| {ld} | {name} | {_ms(split['first_token'])} | {_ms(split['per_token'], 2)} | {_ms(split['after_last_token'], 2)} |"
        )
    print()
    served = {name: sum(s["ok"] for (t, _), s in by.items() if t == name) for name in ("hermes", "vllm")}
    print("| server | requests | API process CPU s | API ms / request | engine CPU s |")
    print("|---|---|---|---|---|")
    for name in ("vllm", "hermes"):
        api = used[f"{name} api"] - before[f"{name} api"]
        per = 1000 * api / served[name] if served[name] else float("nan")
        engine = f"{used[f'{name} engine'] - before[f'{name} engine']:.2f}" if f"{name} engine" in used else "shared"
        print(f"| {name} | {served[name]} | {api:.2f} | {per:.2f} | {engine} |")
    if "engine" in used:
        print(f"| (the one engine) | {sum(served.values())} | – | – | {used['engine'] - before['engine']:.2f} |")
    print()
    print("targets met at every level" if not missed else f"targets missed at: {', '.join(missed)}")
    if unresolved:  # the figure's side of 1.0 is the run's luck there, not the servers' difference
        print(f"throughput not told apart from vLLM's by this run's rounds at: {', '.join(unresolved)}")
    print(f"logs: {tmp}")


def by_round(entry: dict[str, Any]) -> str:
    """The throughput ratio of each round, lowest to highest: how far one round's figure strays on
    this machine, against which the overall ratio's distance from 1 can be judged."""
    values = sorted(x for x in entry["round_throughput_ratios"] if x is not None)
    return " ".join(f"{x:.2f}" for x in values) or "–"


def _ms(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    main()
