"""The load generator's arithmetic and report, on synthetic records (no server)."""

from __future__ import annotations

import json
import math
import random
import statistics

import pytest

from server.bench.ab_stats import describe_interval, round_ratio_interval, t_quantile
from server.bench.load import Dist, Record, Target, Workload, request_body
from server.bench.record_stats import time_split
from server.bench.report import SLO, ratios, summarize, write_report
from server.bench.runner import BenchError, _levels, _plan, targets_of
from server.bench.workloads import make_specs


def test_distributions_parse_and_sample() -> None:
    rng = random.Random(0)
    assert Dist.parse("256").sample(rng) == 256
    u = [Dist.parse("uniform:100:200").sample(rng) for _ in range(500)]
    assert min(u) >= 100 and max(u) <= 200 and 140 < sum(u) / len(u) < 160
    n = [Dist.parse("normal:300:10").sample(rng) for _ in range(500)]
    assert 295 < sum(n) / len(n) < 305
    assert min(Dist.parse("exp:5").sample(rng) for _ in range(200)) >= 1
    for bad in ("x", "uniform:1", "poisson:3", "normal:a:b"):
        with pytest.raises(ValueError, match="bad distribution"):
            Dist.parse(bad)


def test_specs_are_deterministic_and_sized() -> None:
    w = Workload(prompt_tokens=Dist.parse("200"), output_tokens=Dist.parse("uniform:10:20"), seed=3)
    a, b = make_specs(w, 20, salt=1), make_specs(w, 20, salt=1)
    assert [s.prompt for s in a] == [s.prompt for s in b] and len({s.prompt for s in a}) == 20
    assert all(10 <= s.max_tokens <= 20 for s in a)
    assert all(190 <= len(s.prompt.split()) <= 200 for s in a)  # ~1 token per word
    assert make_specs(w, 5, salt=2)[0].prompt != a[0].prompt


def test_request_body_reasoning_and_fixed_output() -> None:
    t = Target("a", "http://x/v1")
    spec = make_specs(Workload(), 1)[0]
    body = request_body(t, Workload(reasoning="on", fixed_output=True), spec)
    assert body["reasoning"] == {"enabled": True} and body["ignore_eos"] and body["min_tokens"] == spec.max_tokens
    assert body["stream_options"] == {"include_usage": True}
    assert request_body(t, Workload(reasoning="off"), spec)["reasoning"] == {"enabled": False}
    assert request_body(t, Workload(reasoning="high", stream=False), spec)["reasoning"] == {"effort": "high"}
    assert "reasoning" not in request_body(t, Workload(), spec) and "stream_options" not in request_body(
        t, Workload(stream=False), spec
    )


def _rec(ok: bool = True, ttft: float = 0.1, e2e: float = 1.1, tokens: int = 11, error: str | None = None) -> Record:
    return Record(
        "a",
        "c=1",
        ok,
        error,
        0.0,
        ttft if ok else None,
        e2e,
        itl=[0.1] * (tokens - 1),
        prompt_tokens=50,
        completion_tokens=tokens,
    )


def test_summary_percentiles_errors_goodput() -> None:
    recs = [_rec(ttft=0.1 * (i + 1)) for i in range(10)] + [
        _rec(False, error="http_429"),
        _rec(False, error="http_429"),
        _rec(False, error="timeout"),
    ]
    s = summarize(recs, wall=10.0, slo=SLO(ttft_ms=500))
    assert s["requests"] == 13 and s["ok"] == 10 and s["errors"] == {"http_429": 2, "timeout": 1}
    assert s["requests_per_s"] == pytest.approx(1.0) and s["output_tokens_per_s"] == pytest.approx(11.0)
    assert s["ttft_ms"]["p50"] == pytest.approx(550.0) and s["ttft_ms"]["p99"] == pytest.approx(991.0)
    assert s["tpot_ms"]["p50"] == pytest.approx((1100 - 550) / 10, rel=0.2)
    assert s["itl_ms"]["p50"] == pytest.approx(100.0)
    assert s["goodput_requests_per_s"] == pytest.approx(0.5)  # ttft 100..500 ms meet the SLO


def test_time_split_puts_a_request_before_its_first_token_between_its_tokens_and_after_its_last() -> None:
    # 10 gaps of 100 ms after a first token at 100 or 300 ms; e2e leaves 50 or 150 ms after the last.
    recs = [_rec(ttft=0.1, e2e=1.15), _rec(ttft=0.3, e2e=1.45), _rec(False, error="timeout")]
    split = summarize(recs, wall=3.0, slo=SLO())["time_split_ms"]
    assert split["first_token"] == pytest.approx(200.0) and split["decode"] == pytest.approx(1000.0)
    assert split["per_token"] == pytest.approx(100.0) and split["after_last_token"] == pytest.approx(100.0)
    assert time_split([_rec(False, error="timeout")]) == dict.fromkeys(split)  # nothing timed: no figures


def test_ratios_and_report(tmp_path) -> None:
    a = summarize([_rec(ttft=0.2) for _ in range(4)], 4.0, SLO())
    b = summarize([_rec(ttft=0.1) for _ in range(4)], 2.0, SLO())
    r = ratios(b, a)
    assert r["output_tokens_per_s"] == pytest.approx(2.0) and r["ttft_ms.p50"] == pytest.approx(0.5)
    results = [{"target": "A", "url": "u", "load": "c=1", "summary": a}, {"target": "B", "url": "v", "load": "c=1", "summary": b}]
    recs = {("A", "c=1"): [_rec(ttft=0.2)], ("B", "c=1"): [_rec(ttft=0.1)]}
    paths = write_report(tmp_path, {"k": "v"}, results, [{"load": "c=1", "a": "A", "b": "B", "ratios": r}], recs)
    data = json.loads(paths["json"].read_text())
    assert data["ab"][0]["ratios"]["output_tokens_per_s"] == pytest.approx(2.0) and "A|c=1" in data["records"]
    html = paths["html"].read_text()
    assert "A/B ratios" in html and html.count("data:image/png;base64,") == 2
    assert paths["levels.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_invocations() -> None:
    with pytest.raises(BenchError, match="not both"):
        _levels("1", "2", 10, 10)
    with pytest.raises(BenchError, match="not both"):
        _levels(None, None, 10, 10)
    with pytest.raises(BenchError, match="positive"):
        _levels("0", None, 10, 10)
    assert [ld.name for ld in _levels(None, "0.5,2", 10, 10)] == ["rate=0.5/s", "rate=2/s"]
    with pytest.raises(BenchError, match="given twice"):
        _levels("2,4,2", None, 10, 10)
    with pytest.raises(BenchError, match="one --url"):
        targets_of(["a", "b", "c"], [], [], "m")
    with pytest.raises(BenchError, match="labels must differ"):
        targets_of(["a", "b"], [], ["x", "x"], "m")
    assert [t.label for t in targets_of(["a", "b"], ["k"], [], "m")] == ["A", "B"]

    with pytest.raises(BenchError, match="concurrency or rate"):
        _plan(None, None, 10, 10, "users", 64, 30)
    with pytest.raises(BenchError, match="give them with --rate"):
        _plan("1,2", None, 10, 10, "rate", 64, 30)
    given = _plan("1,4", None, 10, 10, "concurrency", 64, 30).first()
    assert given is not None and given.concurrency == 1 and given.requests == 10  # the levels given, as given


@pytest.mark.parametrize(("df", "table"), [(2, 4.303), (3, 3.182), (5, 2.571), (7, 2.365), (15, 2.131), (30, 2.042)])
def test_t_quantile_matches_the_table(df: int, table: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(table, rel=0.01 if df == 2 else 0.002)


def test_round_ratio_interval_is_the_runs_resolution() -> None:
    steady = round_ratio_interval([1.05] * 6)
    assert steady == pytest.approx((1.05, 1.05))  # every round agrees: no doubt left
    spread = round_ratio_interval([0.92, 0.98, 1.06, 1.06, 1.07, 1.08, 1.10, 1.18, None])
    assert spread is not None and spread[0] < 1.0 < spread[1]  # mean 1.05, yet 1.0 is inside
    low, high = spread
    mean = math.exp(statistics.fmean(math.log(x) for x in (0.92, 0.98, 1.06, 1.06, 1.07, 1.08, 1.10, 1.18)))
    assert low * high == pytest.approx(mean**2)  # symmetric around the geometric mean, in logs
    assert round_ratio_interval([1.2, None, 0.9]) is None  # two rounds cannot show a spread
    assert describe_interval(None) == "–" and describe_interval((0.9876, 1.1)) == "0.988–1.100"
