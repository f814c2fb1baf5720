"""`hermes-server bench`: load levels x targets (interleaved for A/B), progress, report."""

from __future__ import annotations

import asyncio
import functools
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from server.bench.ab_stats import describe_interval, round_ratio_interval
from server.bench.load import Dist, Load, Record, Spec, Target, Workload, one_request, run_phase
from server.bench.record_stats import output_tokens_per_s
from server.bench.replicas import describe as describe_spread
from server.bench.replicas import read_counters
from server.bench.replicas import spread as replica_spread
from server.bench.report import SLO, ratios, results_table, summarize, write_report
from server.bench.search import Slo, judge
from server.bench.sweep import LevelPlan, SweepPlan
from server.bench.usage_stats import STATS_HEADER, describe_rows, token_stats
from server.bench.workloads import describe, make_specs, parse_mix


class BenchError(ValueError):
    """A bad bench invocation, reported in one line."""


def _levels(concurrency: str | None, rate: str | None, requests: int, duration: float) -> list[Load]:
    if (concurrency is None) == (rate is None):
        raise BenchError("give --concurrency (closed loop) or --rate (open loop, Poisson), not both")
    try:
        if concurrency is not None:
            levels = [Load(concurrency=int(c), requests=requests, duration=duration) for c in concurrency.split(",")]
        else:
            assert rate is not None
            levels = [Load(rate=float(r), requests=requests, duration=duration) for r in rate.split(",")]
    except ValueError as exc:
        raise BenchError(f"bad load levels: {exc}") from exc
    if any((ld.concurrency is not None and ld.concurrency < 1) or (ld.rate is not None and ld.rate <= 0) for ld in levels):
        raise BenchError("load levels must be positive")
    names = [ld.name for ld in levels]
    if len(set(names)) < len(names):  # results are keyed by level: a repeat would merge two runs
        raise BenchError(f"a load level is given twice: {', '.join(names)} (run the bench again to repeat one)")
    return levels


def targets_of(urls: list[str], keys: list[str], labels: list[str], model: str) -> list[Target]:
    if not 1 <= len(urls) <= 2:
        raise BenchError("give one --url, or two for an A/B comparison")
    if len(keys) not in (0, 1, len(urls)) or len(labels) not in (0, len(urls)):
        raise BenchError("give one --key (or one per --url) and one --label per --url")
    default_key = os.environ.get("BENCH_KEY") or os.environ.get("OPENROUTER_API_KEY")
    out = []
    for i, u in enumerate(urls):
        k = keys[i] if len(keys) == len(urls) else (keys[0] if keys else default_key)
        out.append(Target(labels[i] if labels else "AB"[i] if len(urls) == 2 else "target", u, k, model))
    if len({t.label for t in out}) != len(out):
        raise BenchError("labels must differ")
    return out


def make_workload(
    prompt_tokens: str,
    output_tokens: str,
    *,
    mix: str = "plain",
    stream: bool,
    reasoning: str | None,
    temperature: float,
    fixed_output: bool,
    seed: int,
    request_timeout: float,
) -> Workload:
    try:
        return Workload(
            mix=parse_mix(mix),
            prompt_tokens=Dist.parse(prompt_tokens),
            output_tokens=Dist.parse(output_tokens),
            stream=stream,
            reasoning=reasoning,
            temperature=temperature,
            fixed_output=fixed_output,
            seed=seed,
            request_timeout=request_timeout,
        )
    except ValueError as exc:
        raise BenchError(str(exc)) from exc


async def warm_up(targets: list[Target], workload: Workload, n: int) -> None:
    """Connections, caches, CUDA graphs: not measured; a target that cannot answer stops the run."""
    import httpx

    async with httpx.AsyncClient(timeout=workload.request_timeout) as client:
        for t in targets:
            for spec in make_specs(workload, n, salt=-1):
                rec = await one_request(client, t, "warmup", workload, spec)
                if not rec.ok and rec.error in ("connect", "http_401", "http_404"):
                    raise BenchError(f"{t.label} ({t.url}): warm-up request failed with {rec.error}")


@dataclass(frozen=True)
class BenchOptions:
    """One bench invocation, built once (by the CLI, or a script) and handed to :func:`run_bench`
    or ``search_run.run_search``."""

    targets: list[Target]
    workload: Workload
    concurrency: str | None = None  # closed-loop levels, "1,8,64"
    rate: str | None = None  # open-loop levels, req/s
    requests: int = 64  # per level and target
    duration: float = 300.0  # cap per level and target, seconds
    rounds: int = 2  # A/B: alternations per level
    # A/B: load both targets at once in each round, not one after the other: for two front ends
    # of one engine, whose speed then falls on both alike (scripts/bench_overhead.py --one-engine).
    together: bool = False
    goodput: SLO = field(default_factory=SLO)  # per-request SLO for goodput
    p90: Slo = field(default_factory=Slo)  # search/sweep: p90 bounds per level
    warmup: int = 2
    out: Path = Path("bench-results")
    sweep: str | None = None  # concurrency | rate: from one stream to saturation
    max_level: float = 1024  # search/sweep bound
    probe_seconds: float = 30.0  # search/sweep, rate: seconds of arrivals per level


def run_bench(opts: BenchOptions) -> dict[str, Any]:
    """Measure the given levels, or with ``sweep`` (concurrency | rate) from one stream to
    saturation; each level of a sweep is judged against the p90 bounds."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    plan = _plan(opts.concurrency, opts.rate, opts.requests, opts.duration, opts.sweep, opts.max_level, opts.probe_seconds)
    targets, workload, sweep = opts.targets, opts.workload, opts.sweep
    sweep_slo = opts.p90 if sweep is not None else None
    rounds = max(1, opts.rounds if len(targets) == 2 else 1)
    console = Console(stderr=True)
    records: dict[tuple[str, str], list[Record]] = {}
    results: list[dict[str, Any]] = []
    # Output tokens/s per round, by level and target: the A/B ratio's spread from round to round
    # says whether a difference is more than the machine's drift.
    round_rates: dict[str, list[dict[str, float]]] = {}

    spreads: dict[str, dict[str, Any]] = {}

    async def main() -> None:
        await warm_up(targets, workload, opts.warmup)
        async with httpx.AsyncClient() as client:
            before = {t.label: await read_counters(client, t) for t in targets}
        await measure()
        # A server counts a generation as its stream ends, a moment after the client has the last
        # frame: let the last ones land before reading the counters again.
        await asyncio.sleep(1.0)
        async with httpx.AsyncClient() as client:
            for t in targets:
                s = replica_spread(before[t.label], await read_counters(client, t))
                if s is not None:
                    spreads[t.label] = s

    async def measure() -> None:
        with Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as progress:

            async def phase(t: Target, load: Load, r: int, chunk: list[Spec], walls: dict[str, float]) -> None:
                """Round ``r`` of ``load`` against ``t``: its records, wall time and throughput kept."""
                task = progress.add_task(f"{t.label} {load.name} round {r + 1}/{rounds}", total=len(chunk))
                sub = Load(load.concurrency, load.rate, len(chunk), load.duration / rounds)
                recs, wall = await run_phase(t, sub, workload, chunk, functools.partial(_advance, progress, task))
                records.setdefault((t.label, load.name), []).extend(recs)
                walls[t.label] = walls.get(t.label, 0.0) + wall
                round_rates[load.name][r][t.label] = output_tokens_per_s(recs, wall)

            load, li = plan.first(), 0
            while load is not None:
                # Every target gets the same prompts at a level; rounds split them by conversation
                # and alternate the order (A B, B A, …) so drift on a shared machine falls on both alike.
                specs = make_specs(workload, load.requests, salt=li)
                per_round = [[s for s in specs if s.chain % rounds == r] for r in range(rounds)]
                walls: dict[str, float] = {}
                round_rates[load.name] = [{} for _ in per_round]
                for r, chunk in enumerate(per_round):
                    order = targets if r % 2 == 0 else list(reversed(targets))
                    if opts.together:  # the order still alternates: which target's users start first
                        await asyncio.gather(*(phase(t, load, r, chunk, walls) for t in order))
                        continue
                    for t in order:
                        await phase(t, load, r, chunk, walls)
                level = [
                    _result(t, load, records.get((t.label, load.name), []), walls[t.label], opts.goodput, sweep_slo)
                    for t in targets
                ]
                results.extend(level)
                load, li = plan.next(load, [r["summary"] for r in level]), li + 1

    started = time.time()
    asyncio.run(main())
    levels = list(dict.fromkeys(r["load"] for r in results))
    ab: list[dict[str, Any]] = []
    if len(targets) == 2:
        a, b = targets
        by: dict[tuple[str, str], dict[str, Any]] = {(r["target"], r["load"]): r["summary"] for r in results}
        ab = []
        for ld in levels:
            round_ratios = [rr[b.label] / rr[a.label] if rr.get(a.label) else None for rr in round_rates.get(ld, [])]
            ab.append(
                {
                    "load": ld,
                    "a": a.label,
                    "b": b.label,
                    "ratios": ratios(by[(b.label, ld)], by[(a.label, ld)]),
                    "round_throughput_ratios": round_ratios,
                    "round_throughput_interval": round_ratio_interval(round_ratios),
                }
            )
    meta = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "targets": {t.label: t.url for t in targets},
        "model": targets[0].model,
        "levels": levels,
        "sweep": sweep,
        "requests_per_level": opts.requests,
        "rounds": rounds,
        "together": opts.together and len(targets) == 2,
        "workload": describe(workload.mix),
        "prompt_tokens": str(workload.prompt_tokens),
        "output_tokens": str(workload.output_tokens),
        "fixed_output": workload.fixed_output,
        "stream": workload.stream,
        "reasoning": workload.reasoning,
        "seed": workload.seed,
        "slo_ms": {"ttft": opts.goodput.ttft_ms, "tpot": opts.goodput.tpot_ms, "e2e": opts.goodput.e2e_ms},
        "sweep_slo": sweep_slo.describe() if sweep_slo else None,
        "client_machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "replicas": spreads,
    }
    itl_bound = sweep_slo.itl_p90_ms if sweep_slo else None
    paths = write_report(opts.out, meta, results, ab, records, itl_p90_ms=itl_bound)

    header, rows = results_table(results)
    table = Table(*header, title="hermes-server bench")
    for row in rows:
        table.add_row(*row)
    console_out = Console(width=220)
    console_out.print(table)
    for entry in ab:
        rs = entry["ratios"]
        console_out.print(
            f"{entry['load']}: {entry['b']}/{entry['a']}  throughput x{_r(rs['output_tokens_per_s'])}  "
            f"TTFT p50 x{_r(rs['ttft_ms.p50'])}  TTFT p99 x{_r(rs['ttft_ms.p99'])}  TPOT p50 x{_r(rs['tpot_ms.p50'])}"
            f"  throughput by round {' '.join(_r(x) for x in entry['round_throughput_ratios'])}"
            f" (95 % interval {describe_interval(entry['round_throughput_interval'])})"
        )
    for label, s in spreads.items():
        console_out.print(f"{label} replicas: {describe_spread(s)}")
    for t in targets:
        rows = describe_rows(token_stats([r for (label, _), recs in records.items() if label == t.label for r in recs if r.ok]))
        if len(rows) > 2:  # the overall row and two kinds or more (turns, tools …): per kind
            stats = Table("kind", *STATS_HEADER[1:], title=f"{t.label}: tokens per request (server usage, means)")
            for row in rows:
                stats.add_row(*row)
            console_out.print(stats)
    console_out.print(f"report: {paths['html']}  data: {paths['json']}")
    return {"meta": meta, "results": results, "ab": ab, "paths": paths}


def _plan(
    concurrency: str | None,
    rate: str | None,
    requests: int,
    duration: float,
    sweep: str | None,
    max_level: float,
    probe_seconds: float,
) -> LevelPlan | SweepPlan:
    if sweep is None:
        return LevelPlan(_levels(concurrency, rate, requests, duration))
    if sweep not in ("concurrency", "rate"):
        raise BenchError("--sweep takes concurrency or rate")
    if concurrency is not None or rate is not None:
        given = _levels(concurrency, rate, requests, duration)
        if (given[0].concurrency is not None) != (sweep == "concurrency"):
            raise BenchError(f"--sweep {sweep} with levels: give them with --{sweep}")
        return LevelPlan(given)
    return SweepPlan(sweep, max_level, requests, probe_seconds, duration)


def _result(target: Target, load: Load, records: list[Record], wall: float, slo: SLO, sweep_slo: Slo | None) -> dict[str, Any]:
    out: dict[str, Any] = {"target": target.label, "url": target.url, "load": load.name, "summary": summarize(records, wall, slo)}
    if sweep_slo is not None:
        level = load.concurrency if load.concurrency is not None else load.rate
        assert level is not None
        out["slo"] = judge(level, records, wall, sweep_slo).as_dict()
    return out


def _advance(progress: Any, task: Any, _record: Record) -> None:
    progress.advance(task)


def _r(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"
