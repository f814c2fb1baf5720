"""Soak: mixed traffic for N minutes against a keyed server, then the accounts.

    .venv/bin/python scripts/soak.py --minutes 30 [--concurrency 6] [--warmup 5]
    .venv/bin/python scripts/soak.py --url http://host:8000 --key sk-... --pid <API process> \\
        --database-url sqlite:///path/hermes-server.db --minutes 30

Without --url it starts the tiny model's server itself with keys on (a fresh SQLite database in a
temporary directory, one key made with `hermes-server keys create`). Traffic: chat completions,
legacy completions, Responses and Anthropic Messages, streamed and not, short prompts of varied
length, 8-48 output tokens; a share of streams is dropped after their first chunks and a share of
non-streamed requests is given up by its client mid-generation (both must be aborted and
recorded as cancelled).

Reports: requests by API, mode and status; the API process's resident memory (sampled every
5 s) after warm-up against its end (median of each window's samples), the engine core's for
information; and the usage records: every 200 (streams cut short included) recorded exactly
once, and every request its client gave up on recorded too. Exits 1 when a target is missed:
RSS growth >= 2 % after warm-up, a non-200 other than the client's own give-ups, a record
missing or extra."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_overhead import free_port, start_hermes, wait_ready  # noqa: E402
from server.bench.words import WORDS  # noqa: E402

MODEL = "nousresearch/hermes-4-70b"
DROP_SHARE = 0.1  # streams read for a few chunks, then closed
GIVE_UP_SHARE = 0.1  # non-streamed chat and completions whose client times out mid-generation
GIVE_UP_TOKENS = 2000
RSS_TARGET = 0.02


@dataclass
class Tally:
    statuses: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    ok_ids: list[str] = field(default_factory=list)  # every 200's generation id (cut streams too)
    given_up: int = 0  # non-streamed requests whose client left before the answer
    dropped: int = 0  # streams closed early
    errors: Counter[str] = field(default_factory=Counter)


def _prompt(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 400)))


def _request(api: str, stream: bool, rng: random.Random) -> tuple[str, dict[str, object]]:
    prompt, tokens = _prompt(rng), rng.randint(8, 48)
    common: dict[str, object] = {"model": MODEL, "stream": stream, "temperature": 1.0, "top_p": 1}
    if api == "chat":
        return "/v1/chat/completions", {**common, "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens}
    if api == "completions":
        return "/v1/completions", {**common, "prompt": prompt, "max_tokens": tokens}
    if api == "responses":
        return "/v1/responses", {**common, "input": prompt, "max_output_tokens": tokens}
    return "/v1/messages", {
        "model": MODEL,
        "stream": stream,
        "max_tokens": tokens,
        "messages": [{"role": "user", "content": prompt}],
    }


async def _one(client: httpx.AsyncClient, api: str, stream: bool, rng: random.Random, tally: Tally) -> None:
    path, body = _request(api, stream, rng)
    if stream:
        drop = rng.random() < DROP_SHARE
        async with client.stream("POST", path, json=body) as r:
            tally.statuses[(api, "stream", r.status_code)] += 1
            if r.status_code != 200:
                tally.errors[(await r.aread()).decode(errors="replace")[:200]] += 1
                return
            tally.ok_ids.append(r.headers["x-generation-id"])
            chunks = 0
            async for _ in r.aiter_raw():
                chunks += 1
                if drop and chunks >= 2:
                    tally.dropped += 1
                    return  # closing the stream: the server aborts the generation
        return
    give_up = api in ("chat", "completions") and rng.random() < GIVE_UP_SHARE
    if give_up:  # long enough to be generating when the client leaves after a second
        body = {**body, "max_tokens": GIVE_UP_TOKENS, "min_tokens": GIVE_UP_TOKENS}
    try:
        r = await client.post(path, json=body, timeout=1.0 if give_up else 300)
    except httpx.TimeoutException:
        tally.given_up += 1
        return
    tally.statuses[(api, "whole", r.status_code)] += 1
    if r.status_code == 200:
        tally.ok_ids.append(r.headers["x-generation-id"])
    else:
        tally.errors[r.text[:200]] += 1


async def _worker(url: str, key: str, seed: int, until: float, tally: Tally) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {key}", "x-api-key": key}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as client:
        while time.monotonic() < until:
            api = rng.choice(("chat", "completions", "responses", "messages"))
            try:
                await _one(client, api, rng.random() < 0.5, rng, tally)
            except httpx.HTTPError as exc:
                tally.errors[f"{type(exc).__name__}: {exc}"[:200]] += 1


async def _sample_rss(pids: dict[str, int], samples: list[tuple[float, dict[str, int]]], until: float) -> None:
    start = time.monotonic()
    while time.monotonic() < until:
        row = {}
        for name, pid in pids.items():
            try:
                row[name] = psutil.Process(pid).memory_info().rss
            except psutil.NoSuchProcess:
                row[name] = 0
        samples.append((time.monotonic() - start, row))
        await asyncio.sleep(5)


def _start_server(tmp: Path) -> tuple[subprocess.Popen[bytes], str, str, str]:
    db = f"sqlite:///{tmp / 'soak.db'}"
    env = {**os.environ, "HERMES_AUTH_REQUIRED": "1", "HERMES_DATABASE_URL": db}
    made = subprocess.run(
        [sys.executable, "-m", "server.cli", "keys", "create", "--label", "soak"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = made.stdout.strip().splitlines()[-1].strip()
    port = free_port()
    log = tmp / "server.log"
    proc = start_hermes(port, log, env)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/ready", proc, log)
    return proc, url, key, db


def _processes(supervisor_or_server: int) -> dict[str, int]:
    """The API process (the supervised server, or the given pid) and its engine core."""
    root = psutil.Process(supervisor_or_server)
    server = next((c for c in root.children() if "serve" in " ".join(c.cmdline())), root)
    pids = {"api": server.pid}
    for child in server.children(recursive=True):
        if "EngineCore" in child.name() or "EngineCore" in " ".join(child.cmdline()):
            pids["engine core"] = child.pid
            break
    return pids


def _window_median(samples: list[tuple[float, dict[str, int]]], name: str, start: float, end: float) -> float:
    values = [row[name] for t, row in samples if start <= t <= end and row.get(name)]
    return float(statistics.median(values)) if values else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--warmup", type=float, default=None, help="minutes left out of the RSS figure (default: a sixth, at least 1)")
    p.add_argument("--concurrency", type=int, default=6)
    p.add_argument("--url")
    p.add_argument("--key")
    p.add_argument("--pid", type=int, help="the API process's pid (with --url)")
    p.add_argument("--database-url", help="the server's database (with --url), to check the usage records")
    p.add_argument("--out", type=Path, default=None, help="write the report as JSON here too")
    args = p.parse_args()
    warmup = args.warmup if args.warmup is not None else max(1.0, args.minutes / 6)

    proc = None
    tmp = Path(tempfile.mkdtemp(prefix="hermes-soak-"))
    if args.url:
        url, key, db = args.url, args.key, args.database_url
        pids = _processes(args.pid) if args.pid else {}
    else:
        proc, url, key, db = _start_server(tmp)
        pids = _processes(proc.pid)
    try:
        tally, samples = Tally(), list[tuple[float, dict[str, int]]]()
        began = time.monotonic()
        until = began + args.minutes * 60

        async def run() -> None:
            workers = [_worker(url, key, seed, until, tally) for seed in range(args.concurrency)]
            await asyncio.gather(_sample_rss(pids, samples, until), *workers)

        asyncio.run(run())
        elapsed = time.monotonic() - began
        time.sleep(3)  # usage records are written within milliseconds; leave the writer a moment
        report = _report(args, warmup, elapsed, tally, samples, db)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=120)
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0 if report["passed"] else 1


def _report(
    args: argparse.Namespace,
    warmup: float,
    elapsed: float,
    tally: Tally,
    samples: list[tuple[float, dict[str, int]]],
    db: str | None,
) -> dict[str, object]:
    ok = sum(n for (_, _, status), n in tally.statuses.items() if status == 200)
    not_ok = {f"{api} {mode} {status}": n for (api, mode, status), n in tally.statuses.items() if status != 200}
    rss: dict[str, object] = {}
    end = elapsed
    for name in samples[0][1] if samples else []:
        after_warmup = _window_median(samples, name, warmup * 60, warmup * 60 + 60)
        at_end = _window_median(samples, name, end - 60, end)
        rss[name] = {
            "after_warmup_mib": round(after_warmup / 2**20, 1),
            "end_mib": round(at_end / 2**20, 1),
            "growth_pct": round((at_end - after_warmup) / after_warmup * 100, 2),
        }
    records: dict[str, object] = {}
    if db:
        engine = create_engine(db)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, cancelled FROM generations")).all()
        counts = Counter(row[0] for row in rows)
        ids = set(tally.ok_ids)
        cancelled_unknown = sum(1 for row in rows if row[0] not in ids and row[1])
        records = {
            "records": len(rows),
            "ok_recorded_once": sum(1 for i in ids if counts[i] == 1),
            "ok_missing": sum(1 for i in ids if counts[i] == 0),
            "ok_duplicated_ids": len(tally.ok_ids) - len(ids),
            "given_up_recorded_as_cancelled": cancelled_unknown,
            "other_records": len(rows) - len(ids & set(counts)) - cancelled_unknown,
        }
    api = rss.get("api")
    api_growth = api["growth_pct"] if isinstance(api, dict) else None
    passed = (
        not not_ok
        and not tally.errors
        and (api_growth is None or api_growth < RSS_TARGET * 100)
        and (not records or (records["ok_missing"] == 0 and records["ok_duplicated_ids"] == 0 and records["other_records"] == 0))
        and (not records or records["given_up_recorded_as_cancelled"] == tally.given_up)
    )
    return {
        "minutes": round(elapsed / 60, 1),
        "warmup_minutes": warmup,
        "concurrency": args.concurrency,
        "requests_200": ok,
        "streams_dropped_early": tally.dropped,
        "given_up_by_client": tally.given_up,
        "non_200": not_ok,
        "errors": dict(tally.errors.most_common(5)),
        "by_api": {f"{api} {mode}": n for (api, mode, status), n in sorted(tally.statuses.items()) if status == 200},
        "rss": rss,
        "usage_records": records,
        "passed": passed,
    }


if __name__ == "__main__":
    raise SystemExit(main())
