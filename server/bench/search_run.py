"""`hermes-server bench --find-max`: the capacity search (server/bench/search.py) against real
URLs, with progress, a trace table and results.json (every probe, every request)."""

from __future__ import annotations

import asyncio
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

from server.bench.load import Load, Target, Workload, records_json, run_phase
from server.bench.runner import BenchError, targets_of, warm_up
from server.bench.search import Probe, SearchResult, Slo, find_max, judge, probe_requests
from server.bench.workloads import make_specs
from server.jsonio import dumps


def run_search(
    *,
    urls: list[str],
    keys: list[str],
    labels: list[str],
    model: str,
    kind: str,
    slo: Slo,
    workload: Workload,
    limit: float,
    probe_seconds: float,
    warmup: int,
    out: Path,
) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    if kind not in ("concurrency", "rate"):
        raise BenchError("--find-max takes concurrency or rate")
    if slo.ttft_p90_ms is None and slo.itl_p90_ms is None and slo.e2e_p90_ms is None:
        raise BenchError("--find-max needs at least one of --slo-ttft-p90, --slo-itl-p90, --slo-e2e-p90")
    targets = targets_of(urls, keys, labels, model)
    console = Console(stderr=True)
    requests: dict[str, list[dict[str, Any]]] = {}

    async def search(target: Target) -> SearchResult:
        async def measure(level: float) -> Probe:
            n = probe_requests(kind, level, probe_seconds)
            load = Load(concurrency=int(level), requests=n) if kind == "concurrency" else Load(rate=level, requests=n)
            records, elapsed = await run_phase(target, load, workload, make_specs(workload, n, salt=int(level * 1000)))
            requests.setdefault(target.label, []).extend(records_json(records))
            return judge(level, records, elapsed, slo)

        def progress(p: Probe, lo: float, hi: float | None) -> None:
            verdict = "[green]pass[/]" if p.passed else f"[red]fail: {', '.join(p.broke)}[/]"
            bracket = f"[{lo:g}, {hi:g}]" if hi is not None else f"[{lo:g}, …)"
            console.print(
                f"{target.label} {kind}={p.level:g}: TTFT p90 {_ms(p.ttft_p90_ms)}, ITL p90 {_ms(p.itl_p90_ms)}, "
                f"errors {p.error_rate:.0%} {verdict}; bracket {bracket}"
            )

        return await find_max(measure, kind, limit=limit, on_probe=progress)

    async def main() -> dict[str, SearchResult]:
        await warm_up(targets, workload, warmup)
        return {t.label: await search(t) for t in targets}

    console.print(f"capacity search by {kind}, SLO: {slo.describe()}")
    results = asyncio.run(main())
    table = Table("target", f"max {kind}", "goodput req/s", "output tok/s", "TTFT p90 ms", "ITL p90 ms", "first failing", "broke")
    for label, r in results.items():
        b, f = r.best, r.first_fail
        table.add_row(
            label,
            f"{b.level:g}" + (" (the limit)" if r.hit_limit else "") if b else "none",
            f"{b.goodput_rps:.2f}" if b else "-",
            f"{b.output_tokens_per_s:,.0f}" if b else "-",
            _ms(b.ttft_p90_ms) if b else "-",
            _ms(b.itl_p90_ms) if b else "-",
            f"{f.level:g}" if f else "-",
            ", ".join(f.broke) + (f" {f.errors}" if f.errors else "") if f else "-",
        )
    Console(width=200).print(table)
    for label, r in results.items():
        said = f"{r.best.level:g}" + (" (the limit)" if r.hit_limit else "") if r.best else "none"
        fail = f"; first failing {r.first_fail.level:g} ({', '.join(r.first_fail.broke)})" if r.first_fail else ""
        print(f"{label}: highest {kind} meeting the SLO: {said}{fail}")
    summary: dict[str, Any] = {
        "kind": kind,
        "slo": asdict(slo),
        "machine": platform.platform(),
        "targets": {
            label: {
                "best": r.best.as_dict() if r.best else None,
                "first_fail": r.first_fail.as_dict() if r.first_fail else None,
                "hit_limit": r.hit_limit,
                "trace": [p.as_dict() for p in r.trace],
            }
            for label, r in results.items()
        },
    }
    if len(results) == 2:
        first, second = (r.best.level if r.best else 0.0 for r in results.values())
        summary["ratio"] = second / first if first else None
        names = " / ".join(reversed(list(results)))
        Console().print(f"ratio ({names}): {summary['ratio']:.2f}" if first else "ratio: n/a")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_bytes(dumps({**summary, "requests": requests}))
    Console().print(f"results: {out / 'results.json'}")
    return summary


def _ms(value: float) -> str:
    return "inf" if value == float("inf") else f"{value:,.0f}"
