"""Capacity search: the most load a deployment carries while every SLO holds.

A probe runs one load level (a closed-loop concurrency or an open-loop request rate) long enough
for stable percentiles and is judged against the SLOs. The search doubles the level from a start
until a probe fails (bracketing), then bisects between the last pass and the first failure until
they are one step apart: 1 for concurrency, ``precision`` (relative) for rates. It stops on its own
bounds (``limit``), so a deployment that never fails is reported at the limit, not searched forever.

A request the gateway refused (429), timed out (408) or ended mid-stream is a failure, counted
apart by kind, and counts as infinitely slow in the latency percentiles: a server with a small
admission queue that turns load away is not reported as faster than it is.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from server.bench.load import Record
from server.bench.record_stats import longest_retry_after, per_user_tokens_per_s

MIN_PROBE_REQUESTS = 32


@dataclass(frozen=True)
class Slo:
    ttft_p90_ms: float | None = None
    itl_p90_ms: float | None = None
    e2e_p90_ms: float | None = None
    max_error_rate: float = 0.0

    def describe(self) -> str:
        parts = [
            f"{n} p90 <= {v:g} ms"
            for n, v in (("TTFT", self.ttft_p90_ms), ("ITL", self.itl_p90_ms), ("E2E", self.e2e_p90_ms))
            if v is not None
        ]
        return ", ".join([*parts, f"errors <= {self.max_error_rate:.0%}"])


@dataclass
class Probe:
    level: float
    requests: int
    ttft_p90_ms: float
    itl_p90_ms: float
    e2e_p90_ms: float
    error_rate: float
    errors: dict[str, int]  # rejected_429, timeout_408, mid_stream, other
    output_tokens_per_s: float
    goodput_rps: float  # requests/s that met every per-request SLO
    tokens_per_s_per_user: float | None = None  # p50 of 1 / TPOT
    retry_after_s: float | None = None  # the longest Retry-After the refusals asked for
    broke: list[str] = field(default_factory=list)  # the SLOs it failed

    @property
    def passed(self) -> bool:
        return not self.broke

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def error_class(error: str) -> str:
    if error == "http_429":
        return "rejected_429"
    if error in ("http_408", "stream_error_408", "timeout"):
        return "timeout_408"
    if error.startswith("stream_error"):
        return "mid_stream"
    return "other"


def p90(values: list[float]) -> float:
    """Nearest-rank 90th percentile (inf counts: a failed request is infinitely slow)."""
    if not values:
        return math.inf
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def judge(level: float, records: list[Record], elapsed: float, slo: Slo) -> Probe:
    """One probe's figures and the SLOs it broke."""
    n = len(records)
    failed = [r for r in records if not r.ok]
    ttft = [r.ttft * 1000 if r.ok and r.ttft is not None else math.inf for r in records]
    itl = [(r.tpot or 0.0) * 1000 if r.ok else math.inf for r in records]
    e2e = [r.e2e * 1000 if r.ok else math.inf for r in records]
    tokens = sum(r.completion_tokens or 0 for r in records if r.ok)

    def good(r: Record) -> bool:
        return (
            r.ok
            and (slo.ttft_p90_ms is None or (r.ttft is not None and r.ttft * 1000 <= slo.ttft_p90_ms))
            and (slo.itl_p90_ms is None or (r.tpot or 0.0) * 1000 <= slo.itl_p90_ms)
            and (slo.e2e_p90_ms is None or r.e2e * 1000 <= slo.e2e_p90_ms)
        )

    probe = Probe(
        level=level,
        requests=n,
        ttft_p90_ms=p90(ttft),
        itl_p90_ms=p90(itl),
        e2e_p90_ms=p90(e2e),
        error_rate=len(failed) / n if n else 1.0,
        errors=dict(Counter(error_class(r.error or "other") for r in failed)),
        output_tokens_per_s=tokens / elapsed if elapsed > 0 else 0.0,
        goodput_rps=sum(1 for r in records if good(r)) / elapsed if elapsed > 0 else 0.0,
        tokens_per_s_per_user=per_user_tokens_per_s(records),
        retry_after_s=longest_retry_after(records),
    )
    for name, value, bound in (
        ("ttft_p90", probe.ttft_p90_ms, slo.ttft_p90_ms),
        ("itl_p90", probe.itl_p90_ms, slo.itl_p90_ms),
        ("e2e_p90", probe.e2e_p90_ms, slo.e2e_p90_ms),
    ):
        if bound is not None and value > bound:
            probe.broke.append(name)
    if probe.error_rate > slo.max_error_rate:
        probe.broke.append("errors")
    return probe


@dataclass
class SearchResult:
    kind: str  # concurrency | rate
    best: Probe | None  # the highest level that met every SLO
    first_fail: Probe | None  # the lowest level seen to fail
    trace: list[Probe]
    hit_limit: bool  # every probe passed up to the limit


def probe_requests(kind: str, level: float, probe_seconds: float) -> int:
    """Requests per probe: enough for a stable p90 at this level."""
    if kind == "concurrency":
        return max(MIN_PROBE_REQUESTS, int(4 * level))
    return max(MIN_PROBE_REQUESTS, int(level * probe_seconds))


async def find_max(
    measure: Callable[[float], Awaitable[Probe]],
    kind: str,
    *,
    start: float = 1,
    limit: float = 1024,
    precision: float = 0.1,
    on_probe: Callable[[Probe, float, float | None], None] | None = None,
) -> SearchResult:
    """Bracket by doubling from ``start``, then bisect; ``on_probe`` sees each probe and the
    current bracket (last pass, first fail)."""
    integer = kind == "concurrency"
    trace: list[Probe] = []
    best: Probe | None = None
    fail: Probe | None = None

    async def run(level: float) -> Probe:
        nonlocal best, fail
        probe = await measure(level)
        trace.append(probe)
        if probe.passed and (best is None or level > best.level):
            best = probe
        if not probe.passed and (fail is None or level < fail.level):
            fail = probe
        if on_probe is not None:
            on_probe(probe, best.level if best else 0.0, fail.level if fail else None)
        return probe

    level = start
    while True:  # bracketing
        probe = await run(level)
        if not probe.passed or level >= limit:
            break
        level = min(limit, level * 2)
    while best is not None and fail is not None:  # bisection
        lo, hi = best.level, fail.level
        if (hi - lo <= 1) if integer else (hi - lo <= precision * lo):
            break
        mid = (lo + hi) // 2 if integer else (lo + hi) / 2
        await run(mid)
    return SearchResult(kind, best, fail, trace, hit_limit=fail is None)
