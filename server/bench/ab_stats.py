"""How sure an A/B throughput ratio is: the rounds of a run alternate the two targets, so each
round gives one ratio, and their spread is the machine's drift while the run went on. A ratio
whose interval holds 1.0 does not tell the targets apart on that machine, however far the overall
figure is from 1.
"""

from __future__ import annotations

import math
import statistics


def round_ratio_interval(ratios: list[float | None], confidence: float = 0.95) -> tuple[float, float] | None:
    """Student's t interval for the geometric mean of the rounds' ratios (ratios multiply, so
    their logs are averaged); None with fewer than three rounds. It treats rounds as independent,
    which a drift that lasts several rounds is not: read it as the run's resolution, not a test."""
    logs = [math.log(r) for r in ratios if r is not None and r > 0 and math.isfinite(r)]
    if len(logs) < 3:
        return None
    half = t_quantile(0.5 + confidence / 2, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    mean = statistics.fmean(logs)
    return math.exp(mean - half), math.exp(mean + half)


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile from the normal one by the Cornish-Fisher expansion (Abramowitz and
    Stegun 26.7.5): at the 97.5 % point within 1 % of the exact value at 2 degrees of freedom
    (three rounds), 0.2 % at 3 and 0.1 % from 4 up. Hand-written because scipy, a large
    dependency, would be here for this one number."""
    z = statistics.NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def describe_interval(interval: tuple[float, float] | None) -> str:
    return "–" if interval is None else f"{interval[0]:.3f}–{interval[1]:.3f}"
