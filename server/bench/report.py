"""Summaries, A/B ratios, and the JSON / HTML / PNG report of a load test."""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from server.bench.load import Record
from server.bench.plots import Point, levels_png, pareto_png, ttft_cdf_png
from server.bench.record_stats import (
    completion_rate,
    longest_retry_after,
    output_tokens_per_s,
    per_user_tokens_per_s,
    records_json,
    time_split,
)
from server.bench.usage_stats import STATS_HEADER, describe_rows, token_stats
from server.jsonio import dumps


@dataclass(frozen=True)
class SLO:
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    def met(self, r: Record) -> bool:
        if not r.ok:
            return False
        if self.ttft_ms is not None and (r.ttft is None or r.ttft * 1000 > self.ttft_ms):
            return False
        tpot = r.tpot
        if self.tpot_ms is not None and tpot is not None and tpot * 1000 > self.tpot_ms:
            return False
        return not (self.e2e_ms is not None and r.e2e * 1000 > self.e2e_ms)


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    a = np.asarray(values) * 1000.0  # ms
    return {
        "mean": float(a.mean()),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
    }


def summarize(records: list[Record], wall: float, slo: SLO) -> dict[str, Any]:
    ok = [r for r in records if r.ok]
    out_tokens = sum(r.completion_tokens or 0 for r in ok)
    in_tokens = sum(r.prompt_tokens or 0 for r in ok)
    wall = max(wall, 1e-9)
    return {
        "requests": len(records),
        "ok": len(ok),
        "errors": dict(Counter(r.error or "?" for r in records if not r.ok)),
        "retry_after_s_max": longest_retry_after(records),
        "wall_s": wall,
        "requests_per_s": len(ok) / wall,
        "completion_rate_per_s": completion_rate(ok),
        "output_tokens_per_s": output_tokens_per_s(ok, wall),
        "input_tokens_per_s": in_tokens / wall,
        "mean_prompt_tokens": in_tokens / len(ok) if ok else None,
        "mean_completion_tokens": out_tokens / len(ok) if ok else None,
        "mean_reasoning_tokens": (sum(r.reasoning_tokens or 0 for r in ok) / len(ok)) if ok else None,
        "tokens_per_s_per_user": per_user_tokens_per_s(ok),
        "tokens": token_stats(ok),
        "goodput_requests_per_s": sum(1 for r in records if slo.met(r)) / wall,
        "ttft_ms": _stats([r.ttft for r in ok if r.ttft is not None]),
        "itl_ms": _stats([x for r in ok for x in r.itl]),
        "tpot_ms": _stats([t for r in ok if (t := r.tpot) is not None]),
        "e2e_ms": _stats([r.e2e for r in ok]),
        "time_split_ms": time_split(ok),
    }


RATIO_KEYS = [
    ("output_tokens_per_s", None),
    ("requests_per_s", None),
    ("ttft_ms", "p50"),
    ("ttft_ms", "p99"),
    ("tpot_ms", "p50"),
    ("itl_ms", "p50"),
    ("e2e_ms", "p50"),
]


def ratios(b: dict[str, Any], a: dict[str, Any]) -> dict[str, float | None]:
    """b / a for throughput and latency figures (None where either side has no value)."""
    out: dict[str, float | None] = {}
    for key, sub in RATIO_KEYS:
        x = b[key][sub] if sub else b[key]
        y = a[key][sub] if sub else a[key]
        out[f"{key}{'.' + sub if sub else ''}"] = (x / y) if x is not None and y else None
    return out


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def errors_text(errors: dict[str, int], retry_after_s: float | None) -> str:
    """``http_429:3 (Retry-After up to 5 s)``, or ``-`` when nothing failed."""
    said = ", ".join(f"{k}:{v}" for k, v in sorted(errors.items())) or "-"
    return said + (f" (Retry-After up to {retry_after_s:g} s)" if retry_after_s is not None else "")


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        s = r["summary"]
        errs = errors_text(s["errors"], s["retry_after_s_max"])
        rows.append(
            [
                r["target"],
                r["load"],
                f"{s['ok']}/{s['requests']}",
                _fmt(s["requests_per_s"], 2),
                _fmt(s["output_tokens_per_s"]),
                _fmt(s["goodput_requests_per_s"], 2),
                _fmt(s["ttft_ms"]["p50"]),
                _fmt(s["ttft_ms"]["p90"]),
                _fmt(s["ttft_ms"]["p99"]),
                _fmt(s["itl_ms"]["p50"], 2),
                _fmt(s["tpot_ms"]["p50"], 2),
                _fmt(s["e2e_ms"]["p50"]),
                _fmt(s["e2e_ms"]["p99"]),
                errs,
            ]
        )
    return rows


HEADER = [
    "target",
    "load",
    "ok",
    "req/s",
    "out tok/s",
    "goodput req/s",
    "TTFT p50 ms",
    "TTFT p90",
    "TTFT p99",
    "ITL p50 ms",
    "TPOT p50 ms",
    "E2E p50 ms",
    "E2E p99",
    "errors",
]


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_image(name: str, png: bytes) -> str:
    return f'<h2>{html.escape(name)}</h2><img src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def workload_section(description: str, stats: dict[str, Any]) -> str:
    """The workload's name and options, and its token counts as the server reported them."""
    return (
        f"<h2>Workload</h2><p>{html.escape(description)}</p>"
        "<p>Token counts per request from the server's own usage (means):</p>" + html_table(STATS_HEADER, describe_rows(stats))
    )


def html_page(title: str, meta: dict[str, Any], sections: list[str]) -> str:
    """A self-contained page: settings first, then the sections (tables, inlined plots)."""
    meta_rows = [[k, json.dumps(v) if not isinstance(v, str) else v] for k, v in meta.items()]
    return (
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}img{max-width:100%}</style>"
        f"<h1>{html.escape(title)}</h1>{html_table(['setting', 'value'], meta_rows)}" + "".join(sections)
    )


def write_report(
    out: Path,
    meta: dict[str, Any],
    results: list[dict[str, Any]],
    ab: list[dict[str, Any]],
    records: dict[tuple[str, str], list[Record]],
    *,
    itl_p90_ms: float | None = None,
) -> dict[str, Path]:
    """results.json, the PNG plots and report.html (self-contained: plots inlined) in ``out``.
    With more than one level, the Pareto plot (per-user against total tokens/s; the levels' SLO
    verdicts, from ``results[i]["slo"]``, and an ITL boundary drawn when given)."""
    out.mkdir(parents=True, exist_ok=True)
    every = [r for rs in records.values() for r in rs]
    data: dict[str, Any] = {
        "meta": meta,
        "results": results,
        "ab": ab,
        "tokens": token_stats(every),
        "records": {f"{t}|{ld}": records_json(rs) for (t, ld), rs in records.items()},
    }
    paths = {"json": out / "results.json", "html": out / "report.html"}
    paths["json"].write_bytes(dumps(data))
    pngs = {"levels.png": levels_png(results), "ttft_cdf.png": ttft_cdf_png(records)}
    points = [
        Point(r["target"], r["load"], s["tokens_per_s_per_user"], s["output_tokens_per_s"], r.get("slo", {}).get("passed"))
        for r in results
        if (s := r["summary"])["tokens_per_s_per_user"] is not None
    ]
    if len({p.level for p in points}) > 1:
        pngs["pareto.png"] = pareto_png(points, itl_p90_ms)
    for name, png in pngs.items():
        (out / name).write_bytes(png)
        paths[name] = out / name

    sections = [workload_section(str(meta.get("workload", "plain")), data["tokens"])]
    header, rows = results_table(results)
    sections.append("<h2>Results</h2>" + html_table(header, rows))
    if ab:
        keys = list(ab[0]["ratios"])
        ab_rows = [[a["load"], f"{a['b']} / {a['a']}", *[_fmt(a["ratios"][k], 3) for k in keys]] for a in ab]
        sections.append("<h2>A/B ratios</h2>" + html_table(["load", "ratio", *keys], ab_rows))
    sections += [html_image(n, p) for n, p in pngs.items()]
    paths["html"].write_text(html_page("Load test", meta, sections))
    return paths


def results_table(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the per-level table, for the terminal and the report alike: with an
    SLO column when the levels were judged (a sweep)."""
    rows = table_rows(results)
    if not any("slo" in r for r in results):
        return HEADER, rows
    return [*HEADER, "SLO"], [[*row, slo_verdict(r["slo"])] for row, r in zip(rows, results, strict=True)]


def slo_verdict(probe: dict[str, Any]) -> str:
    return "pass" if probe["passed"] else "broke " + ", ".join(probe["broke"])
