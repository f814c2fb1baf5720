"""``hermes-server bench``: the load tester's command line. Its options are built once into a
``BenchOptions`` (``bench/runner.py``) for ``run_bench`` or, with ``--find-max``, ``run_search``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from server.constants import OPENROUTER_MODEL_ID


def bench(
    url: Annotated[list[str], typer.Option(help="base URL (…/v1 or …/api/v1); twice for an A/B run")],
    key: Annotated[list[str] | None, typer.Option(help="API key per URL (or set BENCH_KEY / OPENROUTER_API_KEY)")] = None,
    label: Annotated[list[str] | None, typer.Option(help="name per URL in the report")] = None,
    model: Annotated[str, typer.Option(help="model id to send")] = OPENROUTER_MODEL_ID,
    concurrency: Annotated[str | None, typer.Option(help="closed loop: comma-separated levels, e.g. 1,8,64")] = None,
    rate: Annotated[str | None, typer.Option(help="open loop: Poisson arrival rates in req/s, e.g. 0.5,2")] = None,
    requests: Annotated[int, typer.Option(help="requests per level and URL")] = 64,
    duration: Annotated[float, typer.Option(help="cap per level and URL, seconds")] = 300.0,
    rounds: Annotated[int, typer.Option(help="A/B: alternate the URLs this many times per level (ABBA…)")] = 2,
    together: Annotated[
        bool, typer.Option(help="A/B: load both URLs at once in each round (two front ends of one engine)")
    ] = False,
    workload_name: Annotated[
        str,
        typer.Option(
            "--workload",
            help="plain | multi-turn[:turns=4,followup=64] | long-context[:share=0.1,min=8000,max=100000]"
            " | reasoning[:share=0.5,budget=1024] | tools[:share=0.5,choice=auto]"
            " | sessions[:turns=4,system=1500,followup=64,think=0.5,named=1] (see the README)",
        ),
    ] = "plain",
    prompt_tokens: Annotated[str, typer.Option(help="N | uniform:LO:HI | normal:MEAN:SD | exp:MEAN")] = "256",
    output_tokens: Annotated[str, typer.Option(help="max_tokens distribution, same forms")] = "128",
    fixed_output: Annotated[
        bool, typer.Option(help="send ignore_eos/min_tokens for exact output lengths (vLLM servers)")
    ] = False,
    reasoning: Annotated[str | None, typer.Option(help="on | off | an effort level (default: send nothing)")] = None,
    stream: Annotated[bool, typer.Option(help="stream (TTFT and inter-token latency need it)")] = True,
    temperature: Annotated[float, typer.Option()] = 0.6,
    slo_ttft_ms: Annotated[float | None, typer.Option(help="goodput SLO: time to first token")] = None,
    slo_tpot_ms: Annotated[float | None, typer.Option(help="goodput SLO: time per output token")] = None,
    slo_e2e_ms: Annotated[float | None, typer.Option(help="goodput SLO: end-to-end latency")] = None,
    warmup: Annotated[int, typer.Option(help="unmeasured requests per URL first")] = 2,
    request_timeout: Annotated[float, typer.Option(help="seconds per request")] = 600.0,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path, typer.Option(help="folder for results.json, report.html and PNG plots")] = Path("bench-results"),
    find_max: Annotated[
        str | None, typer.Option(help="capacity search: the highest concurrency | rate meeting every --slo-*-p90")
    ] = None,
    sweep: Annotated[
        str | None,
        typer.Option(help="concurrency | rate: from one stream to saturation (or the --concurrency/--rate levels), Pareto plot"),
    ] = None,
    slo_ttft_p90: Annotated[float | None, typer.Option(help="search/sweep SLO: p90 time to first token, ms")] = None,
    slo_itl_p90: Annotated[float | None, typer.Option(help="search/sweep SLO: p90 inter-token latency, ms")] = None,
    slo_e2e_p90: Annotated[float | None, typer.Option(help="search/sweep SLO: p90 end-to-end latency, ms")] = None,
    max_error_rate: Annotated[float, typer.Option(help="search/sweep SLO: share of failed requests (429/408 count)")] = 0.0,
    max_level: Annotated[float, typer.Option(help="search/sweep bound: the highest concurrency or rate to try")] = 1024,
    probe_seconds: Annotated[float, typer.Option(help="search/sweep, rate: seconds of arrivals per level")] = 30.0,
) -> None:
    """Load-test one or two OpenAI/OpenRouter-compatible URLs: TTFT, ITL, TPOT, E2E percentiles,
    throughput, errors by kind, goodput; JSON + HTML/PNG report; A/B ratios for two URLs. With
    --find-max: the most load that meets the SLOs (bracketing, then bisection). With --sweep: levels
    from one stream to saturation, each judged against the --slo-*-p90 bounds, and a Pareto plot."""
    from server.bench.report import SLO
    from server.bench.runner import BenchError, BenchOptions, make_workload, run_bench, targets_of
    from server.bench.search import Slo
    from server.bench.search_run import run_search

    try:
        workload = make_workload(
            prompt_tokens,
            output_tokens,
            mix=workload_name,
            stream=stream,
            reasoning=reasoning,
            temperature=temperature,
            fixed_output=fixed_output,
            seed=seed,
            request_timeout=request_timeout,
        )
        opts = BenchOptions(
            targets=targets_of(url, key or [], label or [], model),
            workload=workload,
            concurrency=concurrency,
            rate=rate,
            requests=requests,
            duration=duration,
            rounds=rounds,
            together=together,
            goodput=SLO(slo_ttft_ms, slo_tpot_ms, slo_e2e_ms),
            p90=Slo(slo_ttft_p90, slo_itl_p90, slo_e2e_p90, max_error_rate),
            warmup=warmup,
            out=out,
            sweep=sweep,
            max_level=max_level,
            probe_seconds=probe_seconds,
        )
        if find_max is None:
            run_bench(opts)
            return
        if sweep is not None:
            raise BenchError("give --find-max or --sweep, not both")
        if concurrency is not None or rate is not None:
            raise BenchError("--find-max chooses the levels itself: leave out --concurrency and --rate")
        run_search(opts, find_max)
    except BenchError as exc:
        typer.echo(f"hermes-server bench: {exc}", err=True)
        raise typer.Exit(2) from exc
