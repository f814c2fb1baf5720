"""`hermes-server bench --find-max`: the capacity search (server/bench/search.py) against real
URLs, with progress (the probe running and the bracket), a trace table, results.json (every probe,
every request) and report.html (workload, trace, Pareto plot)."""

from __future__ import annotations

import asyncio
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

from server.bench.load import Load, Record, Target, run_phase
from server.bench.plots import Point, pareto_png
from server.bench.record_stats import records_json
from server.bench.report import errors_text, html_image, html_page, html_table, slo_verdict, workload_section
from server.bench.runner import BenchError, BenchOptions, warm_up
from server.bench.search import Probe, SearchResult, Slo, find_max, judge, probe_requests
from server.bench.usage_stats import token_stats
from server.bench.workloads import describe, make_specs
from server.jsonio import dumps


def run_search(opts: BenchOptions, kind: str) -> dict[str, Any]:
    """The most load (``kind``: concurrency | rate) each target carries within ``opts.p90``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    targets, workload, slo, out = opts.targets, opts.workload, opts.p90, opts.out
    limit, probe_seconds = opts.max_level, opts.probe_seconds
    if kind not in ("concurrency", "rate"):
        raise BenchError("--find-max takes concurrency or rate")
    if slo.ttft_p90_ms is None and slo.itl_p90_ms is None and slo.e2e_p90_ms is None:
        raise BenchError("--find-max needs at least one of --slo-ttft-p90, --slo-itl-p90, --slo-e2e-p90")
    console = Console(stderr=True)
    requests: dict[str, list[Record]] = {}
    progress = Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    bracket: dict[str, str] = {t.label: "[0, …)" for t in targets}

    async def search(target: Target) -> SearchResult:
        async def measure(level: float) -> Probe:
            n = probe_requests(kind, level, probe_seconds)
            load = Load(concurrency=int(level), requests=n) if kind == "concurrency" else Load(rate=level, requests=n)
            task = progress.add_task(f"{target.label} probe {kind}={level:g}, bracket {bracket[target.label]}", total=n)
            specs = make_specs(workload, n, salt=int(level * 1000))
            records, elapsed = await run_phase(target, load, workload, specs, lambda _r: progress.advance(task))
            progress.remove_task(task)
            requests.setdefault(target.label, []).extend(records)
            return judge(level, records, elapsed, slo)

        def report(p: Probe, lo: float, hi: float | None) -> None:
            verdict = "[green]pass[/]" if p.passed else f"[red]fail: {', '.join(p.broke)}[/]"
            bracket[target.label] = f"[{lo:g}, {hi:g}]" if hi is not None else f"[{lo:g}, …)"
            console.print(
                f"{target.label} {kind}={p.level:g}: TTFT p90 {_ms(p.ttft_p90_ms)}, ITL p90 {_ms(p.itl_p90_ms)}, "
                f"errors {p.error_rate:.0%} {verdict}; bracket {bracket[target.label]}"
            )

        return await find_max(measure, kind, limit=limit, on_probe=report)

    async def main() -> dict[str, SearchResult]:
        await warm_up(targets, workload, opts.warmup)
        with progress:
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
            _broke(f) if f else "-",
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
    summary["workload"] = describe(workload.mix)
    every = [r for rs in requests.values() for r in rs]
    summary["tokens"] = token_stats(every)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_bytes(
        dumps({**summary, "requests": {label: records_json(rs) for label, rs in requests.items()}})
    )
    _write_html(out, summary, results, slo)
    Console().print(f"report: {out / 'report.html'}  data: {out / 'results.json'}")
    return summary


TRACE_HEADER = ["target", "probe", "level", "requests", "TTFT p90 ms", "ITL p90 ms", "E2E p90 ms", "errors", "out tok/s"]
TRACE_HEADER += ["tok/s per user", "verdict"]


def _write_html(out: Path, summary: dict[str, Any], results: dict[str, SearchResult], slo: Slo) -> None:
    """report.html: the settings, the workload and its token counts, the answer per target, every
    probe in the order run (pass/fail per SLO), and the probes on the Pareto plot."""
    rows = []
    for label, r in results.items():
        for i, p in enumerate(r.trace, 1):
            errors = errors_text(p.errors, p.retry_after_s)
            per_user = "-" if p.tokens_per_s_per_user is None else f"{p.tokens_per_s_per_user:.1f}"
            latencies = [_ms(p.ttft_p90_ms), _ms(p.itl_p90_ms), _ms(p.e2e_p90_ms)]
            figures = [errors, f"{p.output_tokens_per_s:,.1f}", per_user, slo_verdict(p.as_dict())]
            rows.append([label, str(i), f"{p.level:g}", str(p.requests), *latencies, *figures])
    answers = [
        [
            label,
            f"{r.best.level:g}" if r.best else "none",
            "yes" if r.hit_limit else "no",
            f"{r.first_fail.level:g} ({', '.join(r.first_fail.broke)})" if r.first_fail else "-",
        ]
        for label, r in results.items()
    ]
    points = [
        Point(label, f"{p.level:g}", p.tokens_per_s_per_user, p.output_tokens_per_s, p.passed)
        for label, r in results.items()
        for p in r.trace
        if p.tokens_per_s_per_user is not None
    ]
    sections = [
        workload_section(summary["workload"], summary["tokens"]),
        f"<h2>Highest {summary['kind']} meeting the SLO</h2>"
        + html_table(["target", "highest passing", "at the limit", "first failing (broke)"], answers),
        "<h2>Search trace</h2>" + html_table(TRACE_HEADER, rows),
    ]
    if points:
        sections.append(html_image("Pareto (each probe)", pareto_png(points, slo.itl_p90_ms)))
    meta = {"search": summary["kind"], "slo": slo.describe(), "machine": summary["machine"], "workload": summary["workload"]}
    (out / "report.html").write_text(html_page("Capacity search", meta, sections))


def _broke(probe: Probe) -> str:
    said = ", ".join(probe.broke)
    return said + (f" ({errors_text(probe.errors, probe.retry_after_s)})" if probe.errors else "")


def _ms(value: float) -> str:
    return "inf" if value == float("inf") else f"{value:,.0f}"
