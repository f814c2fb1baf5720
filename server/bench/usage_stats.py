"""A workload's token statistics, from the server's own usage counts (never client-side guesses):
what the requests really cost in prompt, cached, completion and reasoning tokens, overall and per
kind of request (a multi-turn workload's turns, a mix's long and short prompts …)."""

from __future__ import annotations

from typing import Any

import numpy as np

from server.bench.load import Record

COUNTS = ("prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens")


def _spread(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, dtype=float)
    return {
        "mean": float(a.mean()),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "max": float(a.max()),
    }


def _totals(counted: list[Record]) -> dict[str, Any]:
    """Sums over records that reported usage."""
    prompt = sum(r.prompt_tokens or 0 for r in counted)
    cached = sum(r.cached_tokens or 0 for r in counted)
    ttfts = [r.ttft for r in counted if r.ttft is not None]
    return {
        "requests": len(counted),
        **{name: sum(getattr(r, name) or 0 for r in counted) for name in COUNTS},
        "cached_share": cached / prompt if prompt else None,
        "with_tool_calls": sum(1 for r in counted if r.tool_calls),
        "ttft_ms_mean": 1000 * float(np.mean(ttfts)) if ttfts else None,
    }


def token_stats(records: list[Record]) -> dict[str, Any]:
    """Totals and spreads over the requests that reported usage, and totals per request tag."""
    counted = [r for r in records if r.prompt_tokens is not None]
    tags = sorted({r.tag for r in counted})
    return {
        **_totals(counted),
        "spread": {name: _spread([v for r in counted if (v := getattr(r, name)) is not None]) for name in COUNTS},
        "by_tag": {tag: _totals([r for r in counted if r.tag == tag]) for tag in tags},
    }


def describe_rows(stats: dict[str, Any]) -> list[list[str]]:
    """Table rows (tag, requests, mean prompt, mean cached, cached share, mean completion, mean
    reasoning, with tool calls, mean time to first token): the overall row first."""

    def row(name: str, t: dict[str, Any]) -> list[str]:
        n = t["requests"] or 1
        share = t["cached_share"]
        return [
            name,
            str(t["requests"]),
            f"{t['prompt_tokens'] / n:,.0f}",
            f"{t['cached_tokens'] / n:,.0f}",
            "-" if share is None else f"{share:.0%}",
            f"{t['completion_tokens'] / n:,.1f}",
            f"{t['reasoning_tokens'] / n:,.1f}",
            str(t["with_tool_calls"]),
            "-" if t["ttft_ms_mean"] is None else f"{t['ttft_ms_mean']:,.0f}",
        ]

    return [row("all", stats)] + [row(tag, t) for tag, t in stats["by_tag"].items()]


STATS_HEADER = ["requests", "n", "prompt", "cached", "cached %", "completion", "reasoning", "tool calls", "TTFT ms"]
