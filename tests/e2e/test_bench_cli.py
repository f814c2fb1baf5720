"""`hermes-server bench` against the real server: an A/B run (the same server under two labels),
closed and open loop, JSON + HTML + PNG report, and errors counted by kind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import RunningServer, free_port


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", "bench", *args], capture_output=True, text=True, timeout=600)


def test_ab_run_writes_a_report(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "ab"
    r = _bench(
        "--url", server.v1, "--url", server.api_v1, "--label", "v1", "--label", "api",
        "--concurrency", "1,3", "--requests", "6", "--rounds", "2",
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
    assert [a["load"] for a in data["ab"]] == ["c=1", "c=3"] and data["ab"][0]["ratios"]["output_tokens_per_s"] > 0
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
