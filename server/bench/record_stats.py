"""Figures over a run's request records: throughput and rates, where a request's time went, the
longest Retry-After, the records as JSON."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from server.bench.load import Record


def output_tokens_per_s(records: list[Record], wall: float) -> float:
    """Output tokens of the requests that succeeded, per second of ``wall``."""
    return sum(r.completion_tokens or 0 for r in records if r.ok) / max(wall, 1e-9)


def per_user_tokens_per_s(records: list[Record]) -> float | None:
    """The median output rate one user sees after the first token (1 / TPOT)."""
    rates = sorted(1.0 / t for r in records if r.ok and (t := r.tpot))
    return rates[len(rates) // 2] if rates else None


def completion_rate(records: list[Record]) -> float | None:
    """Requests completed per second between the first and the last completion: in an open loop
    that keeps up, the offered rate; one that falls behind spreads its completions out. Unlike
    completions / wall time, it does not count the last requests' own latency against the rate."""
    ends = sorted(r.start + r.e2e for r in records if r.ok)
    return (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 2 and ends[-1] > ends[0] else None


def time_split(records: list[Record]) -> dict[str, float | None]:
    """Where a streamed request's time went, in mean milliseconds: before its first token, between
    its first and last (``decode``, and per token after the first), and after its last token until
    the response ended (the finish and usage frames). Decode time per token is the engine's step
    time as the client sees it, which moves with the machine's load; the other two are where the
    serving layer's own costs show."""
    # (first token, decode, tokens after the first, whole request) in seconds, per timed request
    timed = [(r.ttft, sum(r.itl), len(r.itl), r.e2e) for r in records if r.ok and r.ttft is not None and r.itl]
    if not timed:
        return dict.fromkeys(("first_token", "decode", "per_token", "after_last_token"))
    n = len(timed)
    first, decode, tokens, whole = (sum(column) for column in zip(*timed, strict=True))
    return {
        "first_token": 1000 * first / n,
        "decode": 1000 * decode / n,
        "per_token": 1000 * decode / tokens,
        "after_last_token": 1000 * (whole - first - decode) / n,
    }


def longest_retry_after(records: list[Record]) -> float | None:
    waits = [r.retry_after for r in records if r.retry_after is not None]
    return max(waits) if waits else None


def records_json(records: list[Record]) -> list[dict[str, Any]]:
    return [asdict(r) | {"tpot": r.tpot} for r in records]
