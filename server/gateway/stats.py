"""Rolling performance figures for the endpoints record (OpenRouter's ``*_last_30m`` fields).

Kept in memory per process: they describe what this server did recently, like OpenRouter's own
figures describe a provider. Latency is time to first token in milliseconds; throughput is
output tokens per second after the first token; uptime is the share of minutes with traffic in
which at least 80% of generations succeeded (client mistakes are not attempts).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

_WINDOW_S = 30 * 60
_MAX_SAMPLES = 20_000  # bounds memory under heavy load; the newest samples win


@dataclass
class _Minute:
    attempts: int = 0
    failures: int = 0


def percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    if len(values) == 1:
        v = round(values[0], 3)
        return {"p50": v, "p75": v, "p90": v, "p99": v}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(q[49], 3), "p75": round(q[74], 3), "p90": round(q[89], 3), "p99": round(q[98], 3)}


class RecentStats:
    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, float, float | None]] = deque(maxlen=_MAX_SAMPLES)
        self._minutes: dict[int, _Minute] = {}

    def record(self, ok: bool, ttft_s: float | None = None, tokens: int = 0, decode_s: float = 0.0) -> None:
        now = self._clock()
        with self._lock:
            minute = self._minutes.setdefault(int(now // 60), _Minute())
            minute.attempts += 1
            minute.failures += 0 if ok else 1
            if ok and ttft_s is not None:
                tps = (tokens - 1) / decode_s if tokens > 1 and decode_s > 0 else None
                self._samples.append((now, ttft_s * 1000.0, tps))
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - _WINDOW_S:
            self._samples.popleft()
        oldest = int((now - 86_400) // 60)
        for m in [m for m in self._minutes if m < oldest]:
            del self._minutes[m]

    def uptime(self, seconds: int) -> float | None:
        now = self._clock()
        first = int((now - seconds) // 60)
        with self._lock:
            minutes = [m for k, m in self._minutes.items() if k > first and m.attempts]
        if not minutes:
            return None
        good = sum(1 for m in minutes if m.failures <= 0.2 * m.attempts)
        return round(100.0 * good / len(minutes), 2)

    def snapshot(self) -> dict[str, Any]:
        now = self._clock()
        with self._lock:
            self._trim(now)
            samples = list(self._samples)
        return {
            "latency_last_30m": percentiles([s[1] for s in samples]),
            "throughput_last_30m": percentiles([s[2] for s in samples if s[2] is not None]),
            "uptime_last_5m": self.uptime(5 * 60),
            "uptime_last_30m": self.uptime(_WINDOW_S),
            "uptime_last_1d": self.uptime(86_400),
        }
