"""Fault to serving again: kill a part of a running server the way a crash would, under streams,
and time what a client and an operator see — how the streams end, when the server exits, and when
it serves again after its restart. This script is the service manager: like systemd with
``Restart=on-failure`` and ``RestartSec=1``, it starts the server again once it exits non-zero.

    .venv/bin/python scripts/fault_recovery.py [--faults engine-core,api-process,replica] [--restart-sec 1]

Faults (tiny model, CPU build):
  engine-core   one API process, its engine core SIGKILLed (the OOM killer, a GPU Xid)
  api-process   api_processes 2, one API process SIGKILLed
  replica       data_parallel_size 2, one replica's engine core SIGKILLed

Prints a Markdown table for benchmarks/RESULTS.md: per fault, how the 4 streams ended, the exit
status, kill → exit, exit → ready (the restart: a start, dominated by loading the model), and
kill → serving. On a GPU host the restart is the weights' load and the engine's warm-up
(minutes for 70B), which this machine does not measure."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_overhead import free_port, start_hermes, wait_ready  # noqa: E402

FAULTS: dict[str, tuple[dict[str, str], str]] = {
    # name: (server environment, which process dies)
    "engine-core": ({}, "EngineCore"),
    "api-process": ({"HERMES_API_PROCESSES": "2"}, "APIServer"),
    "replica": (
        {"HERMES_ENGINE__DATA_PARALLEL_SIZE": "2", "HERMES_ENGINE__KV_CACHE_MEMORY_BYTES": str(256 << 20)},
        "EngineCore",
    ),
}
STREAMS = 4


@dataclass
class Outcome:
    fault: str
    streams: dict[str, int]
    exit_code: int
    kill_to_exit_s: float
    exit_to_ready_s: float

    @property
    def kill_to_serving_s(self) -> float:
        return self.kill_to_exit_s + self.exit_to_ready_s


def _stream(url: str, ends: list[str]) -> None:
    body = {"prompt": "Once upon a time", "max_tokens": 2000, "min_tokens": 2000, "stream": True, "top_p": 1}
    try:
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=300) as r:
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
        finished = any('"finish_reason": "length"' in x or '"finish_reason":"length"' in x for x in lines)
        outcome = "finished" if finished else ("error event" if any('"error"' in x for x in lines) else "cut")
        if outcome == "cut":  # ended without its finish or an error: show how it ended
            print("a stream was cut, ending with:", lines[-3:], flush=True)
        ends.append(outcome)
    except httpx.TransportError:
        ends.append("connection lost")


def _victim(server: subprocess.Popen[bytes], kind: str) -> psutil.Process:
    family = psutil.Process(server.pid).children(recursive=True)
    matches = sorted((p for p in family if kind in " ".join([p.name(), *p.cmdline()])), key=lambda p: p.name())
    if not matches:
        raise RuntimeError(f"no {kind} process under {server.pid}: {[p.name() for p in family]}")
    return matches[-1]


def run_fault(name: str, restart_sec: float, tmp: Path) -> Outcome:
    env, kind = FAULTS[name]
    port, log = free_port(), tmp / f"{name}.log"
    url = f"http://127.0.0.1:{port}"
    server = start_hermes(port, log, env, append=True)
    wait_ready(url + "/ready", server, log)
    ends: list[str] = []
    threads = [threading.Thread(target=_stream, args=(url, ends)) for _ in range(STREAMS)]
    for t in threads:
        t.start()
    time.sleep(3)
    victim = _victim(server, kind)
    killed = time.monotonic()
    os.kill(victim.pid, signal.SIGKILL)
    code = server.wait(timeout=600)
    exited = time.monotonic()
    for t in threads:
        t.join(timeout=300)
    if code == 0:
        raise RuntimeError(f"{name}: the server exited 0 after its {kind} was killed; see {log}")
    time.sleep(restart_sec)  # Restart=on-failure, RestartSec
    server = start_hermes(port, log, env, append=True)
    try:
        wait_ready(url + "/ready", server, log)
        ready = time.monotonic()
        r = httpx.post(url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 4}, timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"{name}: after the restart a request got {r.status_code}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    counts: dict[str, int] = {}
    for e in ends:
        counts[e] = counts.get(e, 0) + 1
    return Outcome(name, counts, code, round(exited - killed, 1), round(ready - exited, 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faults", default=",".join(FAULTS))
    p.add_argument("--restart-sec", type=float, default=1.0)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hermes-faults-"))
    outcomes = []
    for name in args.faults.split(","):
        outcome = run_fault(name, args.restart_sec, tmp)
        print(outcome, flush=True)
        outcomes.append(outcome)
    print("\n| fault | the 4 streams | exit | kill → exit | exit → ready (restart) | kill → serving |")
    print("|---|---|---|---|---|---|")
    for o in outcomes:
        streams = ", ".join(f"{n} {what}" for what, n in sorted(o.streams.items()))
        print(
            f"| {o.fault} | {streams} | {o.exit_code} | {o.kill_to_exit_s} s | {o.exit_to_ready_s} s | {o.kill_to_serving_s:.1f} s |"
        )


if __name__ == "__main__":
    main()
