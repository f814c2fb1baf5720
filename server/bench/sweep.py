"""Which load level a run measures next: the levels given, or a sweep to saturation.

A sweep by concurrency doubles from one stream; a sweep by rate first measures one stream (its
request rate is the synchronous rate r1) and then offers r1, 2·r1, 4·r1 … requests/s. It stops
after the level where every target is saturated (doubling the load gained less than 10 % output
tokens/s, or an open loop's completions came more than 10 % slower than its offered rate), or at
``limit``. Each
level runs at least ``--requests`` requests and enough for a stable p90 (as the capacity search's
probes: 4 per stream, or ``probe_seconds`` of arrivals).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.bench.load import Load
from server.bench.search import probe_requests

# Doubling the load must add this much throughput, or the target is saturated.
SATURATION_GAIN = 1.10
# An open loop that completes less than this share of its offered rate is saturated.
RATE_KEPT = 0.90


class LevelPlan:
    """The fixed levels given on the command line, in order."""

    def __init__(self, levels: list[Load]) -> None:
        self._levels = list(levels)
        self._i = 0

    def first(self) -> Load | None:
        return self._levels[0] if self._levels else None

    def next(self, last: Load, summaries: list[dict[str, Any]]) -> Load | None:
        self._i += 1
        return self._levels[self._i] if self._i < len(self._levels) else None


@dataclass
class SweepPlan:
    kind: str  # concurrency | rate
    limit: float
    requests: int
    probe_seconds: float
    duration: float
    _best: dict[int, float] = field(default_factory=dict)  # per target: the best output tokens/s so far

    def _load(self, kind: str, level: float) -> Load:
        n = max(self.requests, probe_requests(kind, level, self.probe_seconds))
        if kind == "concurrency":
            return Load(concurrency=int(level), requests=n, duration=self.duration)
        return Load(rate=level, requests=n, duration=self.duration)

    def first(self) -> Load:
        return self._load("concurrency", 1)  # one stream: a rate sweep's synchronous baseline too

    def next(self, last: Load, summaries: list[dict[str, Any]]) -> Load | None:
        """The next level, or None: every target saturated at ``last``, or the limit reached."""
        if self.kind == "rate" and last.rate is None:  # after the synchronous baseline
            r1 = min(s["requests_per_s"] for s in summaries)
            return self._load("rate", round(r1, 3)) if r1 > 0 else None
        saturated = [self._saturated(i, last, s) for i, s in enumerate(summaries)]
        if all(saturated):
            return None
        current = last.concurrency if last.concurrency is not None else last.rate
        assert current is not None
        if current >= self.limit:
            return None
        return self._load(self.kind, min(self.limit, current * 2))

    def _saturated(self, target: int, last: Load, summary: dict[str, Any]) -> bool:
        tokens = summary["output_tokens_per_s"]
        before = self._best.get(target)
        self._best[target] = max(tokens, before or 0.0)
        kept = summary.get("completion_rate_per_s")
        if last.rate is not None and (kept is None or kept < RATE_KEPT * last.rate):
            return True
        return before is not None and tokens < SATURATION_GAIN * before
