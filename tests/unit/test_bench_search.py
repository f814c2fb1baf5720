"""The capacity search against simulated servers whose latency grows with load in a known way."""

from __future__ import annotations

import math

import pytest

from server.bench.load import Record
from server.bench.search import Probe, Slo, find_max, judge, p90


def _records(n: int, ttft_s: float, tpot_s: float = 0.01, tokens: int = 50, refused: int = 0) -> list[Record]:
    out = []
    for i in range(n):
        if i < refused:
            out.append(Record("t", "x", ok=False, error="http_429", start=0.0, ttft=None, e2e=0.002))
        else:
            out.append(
                Record(
                    "t",
                    "x",
                    ok=True,
                    error=None,
                    start=0.0,
                    ttft=ttft_s,
                    e2e=ttft_s + tpot_s * (tokens - 1),
                    completion_tokens=tokens,
                )
            )
    return out


def closed_loop_server(level: float) -> list[Record]:
    """TTFT grows linearly with concurrency: 20 ms x (1 + c / 8)."""
    return _records(max(32, int(4 * level)), 0.020 * (1 + level / 8))


async def test_concurrency_search_lands_on_the_known_answer() -> None:
    slo = Slo(ttft_p90_ms=200)  # 20 (1 + c/8) <= 200  <=>  c <= 72

    async def measure(level: float) -> Probe:
        return judge(level, closed_loop_server(level), elapsed=10.0, slo=slo)

    seen: list[tuple[float, float, float | None]] = []
    result = await find_max(measure, "concurrency", on_probe=lambda p, lo, hi: seen.append((p.level, lo, hi)))
    assert result.best is not None and result.best.level == 72
    assert result.first_fail is not None and result.first_fail.level == 73 and result.first_fail.broke == ["ttft_p90"]
    assert [p.level for p in result.trace][:8] == [1, 2, 4, 8, 16, 32, 64, 128]  # bracketing by doubling
    assert len(result.trace) <= 14 and seen[-1][1:] == (72, 73)  # progress saw the final bracket


async def test_rate_search_within_one_step() -> None:
    capacity = 50.0
    slo = Slo(ttft_p90_ms=200)  # queueing: 20 ms / (1 - rate / capacity) <= 200  <=>  rate <= 45

    async def measure(rate: float) -> Probe:
        ttft = 0.020 / (1 - rate / capacity) if rate < capacity else 60.0
        return judge(rate, _records(64, ttft), elapsed=10.0, slo=slo)

    result = await find_max(measure, "rate", start=1, limit=1000, precision=0.05)
    assert result.best is not None and result.first_fail is not None
    assert 45 * 0.95 <= result.best.level <= 45 < result.first_fail.level <= 45 * 1.1


async def test_refusals_fail_the_slo_even_when_answers_are_fast() -> None:
    """Past 16 streams the gateway turns a fifth of the requests away with 429 at once: the
    accepted ones stay fast, but the probe fails and the refusals are counted apart."""
    slo = Slo(ttft_p90_ms=500, max_error_rate=0.01)

    async def measure(level: float) -> Probe:
        n = max(32, int(4 * level))
        return judge(level, _records(n, 0.05, refused=n // 5 if level > 16 else 0), elapsed=10.0, slo=slo)

    result = await find_max(measure, "concurrency", limit=256)
    assert result.best is not None and result.best.level == 16
    fail = result.first_fail
    assert fail is not None and fail.level == 17 and set(fail.broke) == {"ttft_p90", "errors"}
    assert fail.errors == {"rejected_429": fail.requests // 5} and fail.ttft_p90_ms == math.inf


async def test_search_stops_at_its_limit_and_when_the_first_probe_fails() -> None:
    async def always(level: float) -> Probe:
        return judge(level, _records(32, 0.01), elapsed=1.0, slo=Slo(ttft_p90_ms=100))

    capped = await find_max(always, "concurrency", limit=50)
    assert capped.hit_limit and capped.best is not None and capped.best.level == 50

    async def never(level: float) -> Probe:
        return judge(level, _records(32, 1.0), elapsed=1.0, slo=Slo(ttft_p90_ms=100))

    hopeless = await find_max(never, "concurrency")
    assert hopeless.best is None and hopeless.first_fail is not None and len(hopeless.trace) == 1


def test_judge_figures() -> None:
    probe = judge(4, _records(10, 0.1, tpot_s=0.02, tokens=11), elapsed=2.0, slo=Slo(itl_p90_ms=10))
    assert probe.ttft_p90_ms == pytest.approx(100) and probe.itl_p90_ms == pytest.approx(20)
    assert probe.broke == ["itl_p90"] and probe.goodput_rps == 0 and probe.output_tokens_per_s == pytest.approx(55)
    assert p90([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) == 9


def test_a_probe_keeps_the_longest_retry_after_of_its_refusals() -> None:
    records = _records(32, 0.05, refused=3)
    records[0].retry_after, records[1].retry_after = 2.0, 5.0
    probe = judge(4, records, elapsed=10.0, slo=Slo(ttft_p90_ms=1000))
    assert probe.retry_after_s == 5.0 and probe.errors == {"rejected_429": 3}
    assert judge(4, _records(32, 0.05), elapsed=10.0, slo=Slo(ttft_p90_ms=1000)).retry_after_s is None
