"""Summaries, A/B ratios, and the JSON / HTML / PNG report of a load test."""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from server.bench.load import Record


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
        "wall_s": wall,
        "requests_per_s": len(ok) / wall,
        "output_tokens_per_s": out_tokens / wall,
        "input_tokens_per_s": in_tokens / wall,
        "mean_prompt_tokens": in_tokens / len(ok) if ok else None,
        "mean_completion_tokens": out_tokens / len(ok) if ok else None,
        "mean_reasoning_tokens": (sum(r.reasoning_tokens or 0 for r in ok) / len(ok)) if ok else None,
        "goodput_requests_per_s": sum(1 for r in records if slo.met(r)) / wall,
        "ttft_ms": _stats([r.ttft for r in ok if r.ttft is not None]),
        "itl_ms": _stats([x for r in ok for x in r.itl]),
        "tpot_ms": _stats([t for r in ok if (t := r.tpot) is not None]),
        "e2e_ms": _stats([r.e2e for r in ok]),
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


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        s = r["summary"]
        errs = ", ".join(f"{k}:{v}" for k, v in sorted(s["errors"].items())) or "-"
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


def plots(results: list[dict[str, Any]], records: dict[tuple[str, str], list[Record]]) -> dict[str, bytes]:
    """PNG plots: throughput and latency per load level per target, and TTFT distributions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(r["target"] for r in results))
    loads = list(dict.fromkeys(r["load"] for r in results))
    by = {(r["target"], r["load"]): r["summary"] for r in results}
    pngs: dict[str, bytes] = {}

    def save(fig: Any, name: str) -> None:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        pngs[name] = buf.getvalue()

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
    save(fig, "levels.png")

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
    save(fig, "ttft_cdf.png")
    return pngs


def write_report(
    out: Path,
    meta: dict[str, Any],
    results: list[dict[str, Any]],
    ab: list[dict[str, Any]],
    records: dict[tuple[str, str], list[Record]],
) -> dict[str, Path]:
    """results.json, the PNG plots and report.html (self-contained: plots inlined) in ``out``."""
    from server.bench.load import records_json

    out.mkdir(parents=True, exist_ok=True)
    data = {
        "meta": meta,
        "results": results,
        "ab": ab,
        "records": {f"{t}|{ld}": records_json(rs) for (t, ld), rs in records.items()},
    }
    paths = {"json": out / "results.json", "html": out / "report.html"}
    paths["json"].write_text(json.dumps(data, indent=1))
    pngs = plots(results, records)
    for name, png in pngs.items():
        (out / name).write_bytes(png)
        paths[name] = out / name

    def table(header: list[str], rows: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    ab_html = ""
    if ab:
        keys = list(ab[0]["ratios"])
        ab_rows = [[a["load"], f"{a['b']} / {a['a']}", *[_fmt(a["ratios"][k], 3) for k in keys]] for a in ab]
        ab_html = "<h2>A/B ratios</h2>" + table(["load", "ratio", *keys], ab_rows)
    imgs = "".join(
        f'<h2>{html.escape(n)}</h2><img src="data:image/png;base64,{base64.b64encode(p).decode()}">' for n, p in pngs.items()
    )
    meta_rows = [[k, json.dumps(v) if not isinstance(v, str) else v] for k, v in meta.items()]
    paths["html"].write_text(
        "<!doctype html><meta charset=utf-8><title>hermes-server bench</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}img{max-width:100%}</style>"
        f"<h1>Load test</h1>{table(['setting', 'value'], meta_rows)}<h2>Results</h2>{table(HEADER, table_rows(results))}"
        f"{ab_html}{imgs}"
    )
    return paths
