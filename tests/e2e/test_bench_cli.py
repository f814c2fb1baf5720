"""`hermes-server bench` against the real server: an A/B run (the same server under two labels),
closed and open loop, JSON + HTML + PNG report, and errors counted by kind."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import RunningServer, free_port


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", "bench", *args], capture_output=True, text=True, timeout=600)


def test_ab_run_writes_a_report(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "ab"
    r = _bench(
        "--url", server.v1, "--url", server.api_v1, "--label", "v1", "--label", "api",
        "--concurrency", "1,3", "--requests", "6", "--rounds", "3",
        "--prompt-tokens", "uniform:20:60", "--output-tokens", "12", "--fixed-output",
        "--reasoning", "off", "--slo-ttft-ms", "60000", "--out", str(out), "--warmup", "1",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr + r.stdout
    data = json.loads((out / "results.json").read_text())
    assert [(x["target"], x["load"]) for x in data["results"]] == [("v1", "c=1"), ("api", "c=1"), ("v1", "c=3"), ("api", "c=3")]
    for x in data["results"]:
        s = x["summary"]
        assert s["ok"] == 6 and s["errors"] == {} and s["mean_completion_tokens"] == 12  # ignore_eos/min_tokens honoured
        assert s["ttft_ms"]["p50"] > 0 and s["itl_ms"]["p50"] > 0 and s["goodput_requests_per_s"] > 0
        split = s["time_split_ms"]  # the parts of a request's time: none negative, together its whole
        assert split["first_token"] > 0 and split["per_token"] > 0 and split["after_last_token"] >= 0
        assert split["first_token"] + split["decode"] + split["after_last_token"] == pytest.approx(s["e2e_ms"]["mean"])
    assert [a["load"] for a in data["ab"]] == ["c=1", "c=3"] and data["ab"][0]["ratios"]["output_tokens_per_s"] > 0
    for a in data["ab"]:  # one throughput ratio per round, each from that round's own requests
        rounds = a["round_throughput_ratios"]
        assert len(rounds) == 3 and all(x > 0 for x in rounds)
        low, high = a["round_throughput_interval"]  # around the rounds' geometric mean
        assert low <= math.prod(rounds) ** (1 / 3) <= high
    assert "A/B ratios" in (out / "report.html").read_text() and (out / "levels.png").stat().st_size > 1000
    assert "c=3: api/v1  throughput x" in r.stdout  # the ratio line: b / a per level


def test_open_loop_and_error_kinds(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "poisson"
    # max_tokens beyond the served context: every request is a client error, counted as http_400.
    r = _bench(
        "--url", server.v1, "--rate", "4", "--requests", "5", "--output-tokens", "200000", "--out", str(out), "--warmup", "0"
    )
    assert r.returncode == 0, r.stderr
    (res,) = json.loads((out / "results.json").read_text())["results"]
    assert res["load"] == "rate=4/s" and res["summary"]["errors"] == {"http_400": 5}


def test_unreachable_url_stops_at_once(tmp_path: Path) -> None:
    r = _bench("--url", f"http://127.0.0.1:{free_port()}/v1", "--concurrency", "1", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "warm-up request failed with connect" in r.stderr


def test_capacity_search_on_the_tiny_model(server: RunningServer, tmp_path: Path) -> None:
    """A loose SLO holds up to the search's bound; an impossible one fails at the first probe.
    Both end on their own, with the trace and every request in results.json."""
    common = ["--url", server.v1, "--find-max", "concurrency", "--max-level", "4", "--prompt-tokens", "32"]
    common += ["--output-tokens", "8", "--fixed-output", "--reasoning", "off", "--warmup", "1"]
    loose = _bench(*common, "--slo-ttft-p90", "60000", "--slo-itl-p90", "10000", "--out", str(tmp_path / "loose"))
    assert loose.returncode == 0, loose.stderr + loose.stdout
    data = json.loads((tmp_path / "loose" / "results.json").read_text())
    found = data["targets"]["target"]
    assert found["best"]["level"] == 4 and found["hit_limit"] and found["first_fail"] is None
    assert [p["level"] for p in found["trace"]] == [1, 2, 4] and all(p["requests"] >= 32 for p in found["trace"])
    assert found["best"]["output_tokens_per_s"] > 0 and len(data["requests"]["target"]) == sum(
        p["requests"] for p in found["trace"]
    )
    assert "4 (the limit)" in loose.stdout and "kind" in data and data["slo"]["ttft_p90_ms"] == 60000

    strict = _bench(*common, "--slo-ttft-p90", "0.001", "--out", str(tmp_path / "strict"))
    assert strict.returncode == 0, strict.stderr
    none = json.loads((tmp_path / "strict" / "results.json").read_text())["targets"]["target"]
    assert none["best"] is None and none["first_fail"]["level"] == 1 and none["first_fail"]["broke"] == ["ttft_p90"]
    page = (tmp_path / "loose" / "report.html").read_text()
    assert "Search trace" in page and "Workload" in page and page.count("data:image/png;base64,") == 1  # Pareto


def test_sweep_to_its_bound_with_slo_verdicts_and_a_pareto_plot(server: RunningServer, tmp_path: Path) -> None:
    r = _bench(
        "--url", server.v1, "--sweep", "concurrency", "--max-level", "4", "--requests", "8", "--prompt-tokens", "32",
        "--output-tokens", "8", "--fixed-output", "--reasoning", "off", "--warmup", "1", "--slo-ttft-p90", "60000",
        "--slo-itl-p90", "10000", "--out", str(tmp_path / "sweep"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr + r.stdout
    data = json.loads((tmp_path / "sweep" / "results.json").read_text())
    levels = [x["load"] for x in data["results"]]
    assert levels == ["c=1", "c=2", "c=4"][: len(levels)] and len(levels) >= 2  # doubling; saturation may end it early
    assert all(x["slo"]["passed"] and x["summary"]["ok"] >= 32 for x in data["results"])
    assert (tmp_path / "sweep" / "pareto.png").stat().st_size > 1000 and "SLO" in r.stdout


def _server_usage(server: RunningServer, gen_id: str) -> dict[str, int]:
    import httpx

    d = httpx.get(server.api_v1 + "/generation", params={"id": gen_id}, timeout=10).json()["data"]
    return {k: d[k] for k in ("tokens_prompt", "tokens_completion", "native_tokens_reasoning", "native_tokens_cached")}


def test_shipped_workloads_token_counts_match_the_servers_usage(server: RunningServer, tmp_path: Path) -> None:
    """Each shipped workload against the tiny model: every request's token counts in results.json
    are the server's own usage record of that generation, the report's totals add them up, and
    each workload has the shape it promises (a shared prefix that caches, long prompts, a thinking
    budget, tool calls then tool results)."""
    common = ["--url", server.v1, "--concurrency", "3", "--warmup", "0", "--temperature", "0", "--reasoning", "off"]
    runs = {
        "multi-turn:turns=3,followup=16": ["--requests", "9", "--prompt-tokens", "300", "--output-tokens", "4"],
        "long-context:share=0.5,min=2000,max=3000": ["--requests", "6", "--prompt-tokens", "40", "--output-tokens", "4"],
        "reasoning:share=0.5,budget=8": ["--requests", "6", "--prompt-tokens", "40", "--output-tokens", "4"],
        "tools:share=1,choice=required": ["--requests", "6", "--prompt-tokens", "40", "--output-tokens", "80"],
    }
    for i, (mix, args) in enumerate(runs.items()):
        out = tmp_path / f"w{i}"
        r = _bench(*common, *args, "--workload", mix, "--seed", "7", "--out", str(out))
        assert r.returncode == 0, r.stderr + r.stdout
        data = json.loads((out / "results.json").read_text())
        recs = data["records"]["target|c=3"]
        assert data["meta"]["workload"].startswith(mix.split(":")[0]) and all(x["ok"] for x in recs)
        totals = {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0, "reasoning_tokens": 0}
        for x in recs:
            usage = _server_usage(server, x["gen_id"])
            mine = (x["prompt_tokens"], x["completion_tokens"], x["reasoning_tokens"], x["cached_tokens"])
            assert mine == tuple(usage.values()), (mix, x["tag"])
            for k, v in zip(
                totals,
                (
                    usage["tokens_prompt"],
                    usage["tokens_completion"],
                    usage["native_tokens_cached"],
                    usage["native_tokens_reasoning"],
                ),
                strict=True,
            ):
                totals[k] += v
        stats = data["tokens"]
        assert {k: stats[k] for k in totals} == totals and stats["requests"] == len(recs)
        by_tag = stats["by_tag"]
        if mix.startswith("multi-turn"):
            assert by_tag["turn 2"]["prompt_tokens"] > by_tag["turn 1"]["prompt_tokens"]
            assert by_tag["turn 2"]["cached_tokens"] > 0 and by_tag["turn 3"]["cached_share"] > 0.5
        elif mix.startswith("long"):
            assert all(x["prompt_tokens"] >= 2000 for x in recs if x["tag"] == "long") and by_tag["short"]["requests"]
        elif mix.startswith("reasoning"):
            thinking = [x for x in recs if x["tag"] == "reasoning"]
            assert thinking and all(x["completion_tokens"] <= 8 + 4 and x["reasoning_tokens"] <= 8 for x in thinking)
        else:
            assert by_tag["tool call"]["with_tool_calls"] >= 1 and by_tag["tool result"]["requests"] >= 1
            assert by_tag["tool result"]["prompt_tokens"] / by_tag["tool result"]["requests"] > (
                by_tag["tool call"]["prompt_tokens"] / by_tag["tool call"]["requests"]
            )
        assert mix.split(":")[0] in (out / "report.html").read_text()
