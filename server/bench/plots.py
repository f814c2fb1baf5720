"""The load test's PNG plots (matplotlib, headless): throughput and latency per level, TTFT
distributions, and the Pareto plot of tokens/s per user against total tokens/s."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.bench.load import Record


@dataclass(frozen=True)
class Point:
    """One measured level on the Pareto plot."""

    target: str
    level: str
    per_user: float  # output tokens/s one user sees (p50 over requests)
    total: float  # output tokens/s over all users
    passed: bool | None  # met every SLO (None: no SLO given)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    _pyplot().close(fig)
    return buf.getvalue()


def levels_png(results: list[dict[str, Any]]) -> bytes:
    """Output tokens/s, TTFT p50/p99 and TPOT p50 per load level, one line per target."""
    plt = _pyplot()
    targets = list(dict.fromkeys(r["target"] for r in results))
    loads = list(dict.fromkeys(r["load"] for r in results))
    by = {(r["target"], r["load"]): r["summary"] for r in results}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for t in targets:
        xs = [ld for ld in loads if (t, ld) in by]
        axes[0].plot(xs, [by[(t, ld)]["output_tokens_per_s"] for ld in xs], marker="o", label=t)
        axes[1].plot(xs, [by[(t, ld)]["ttft_ms"]["p50"] or np.nan for ld in xs], marker="o", label=f"{t} p50")
        axes[1].plot(xs, [by[(t, ld)]["ttft_ms"]["p99"] or np.nan for ld in xs], marker="x", linestyle="--", label=f"{t} p99")
        axes[2].plot(xs, [by[(t, ld)]["tpot_ms"]["p50"] or np.nan for ld in xs], marker="o", label=t)
    for ax, title in zip(axes, ["output tokens/s", "time to first token (ms)", "time per output token p50 (ms)"], strict=True):
        ax.set_title(title)
        ax.set_xlabel("load")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


def ttft_cdf_png(records: dict[tuple[str, str], list[Record]]) -> bytes:
    plt = _pyplot()
    targets = list(dict.fromkeys(t for t, _ in records))
    loads = list(dict.fromkeys(ld for _, ld in records))
    fig, axes = plt.subplots(1, len(loads), figsize=(4 * len(loads), 3.5), squeeze=False)
    for ax, ld in zip(axes[0], loads, strict=True):
        for t in targets:
            v = np.sort([r.ttft * 1000 for r in records.get((t, ld), []) if r.ok and r.ttft is not None])
            if len(v):
                ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=t)
        ax.set_title(f"TTFT CDF, {ld}")
        ax.set_xlabel("ms")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


def pareto_front(points: list[Point]) -> list[Point]:
    """The points no other point beats on both axes, by tokens/s per user."""

    def beaten(p: Point) -> bool:
        return any(
            q.per_user >= p.per_user and q.total >= p.total and (q.per_user, q.total) != (p.per_user, p.total) for q in points
        )

    return sorted((p for p in points if not beaten(p)), key=lambda p: p.per_user)


def pareto_png(points: list[Point], itl_p90_ms: float | None) -> bytes:
    """Tokens/s per user (x) against total tokens/s (y), each level labelled, the Pareto front of
    each target drawn through, levels that met every SLO filled and those that broke one crossed.
    An ITL SLO is drawn as its boundary: a user sees at least 1000 / ITL tokens/s."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for i, target in enumerate(dict.fromkeys(p.target for p in points)):
        mine = [p for p in points if p.target == target]
        color = f"C{i}"
        front = pareto_front(mine)
        ax.plot([p.per_user for p in front], [p.total for p in front], color=color, alpha=0.6, label=f"{target} Pareto front")
        for p in mine:
            marker = "x" if p.passed is False else "o"
            ax.scatter([p.per_user], [p.total], color=color, marker=marker, s=40)
            ax.annotate(p.level, (p.per_user, p.total), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if itl_p90_ms:
        bound = 1000.0 / itl_p90_ms
        ax.axvline(bound, color="red", linestyle="--", label=f"ITL SLO {itl_p90_ms:g} ms: ≥ {bound:.1f} tok/s per user")
        ax.axvspan(0, bound, color="red", alpha=0.06)
    ax.set_xlabel("output tokens/s per user (p50)")
    ax.set_ylabel("output tokens/s, all users")
    ax.set_title("Pareto: speed per user against total throughput (o met every SLO, x broke one)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)
