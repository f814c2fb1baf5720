"""How a run spread over the target's data-parallel replicas, from the target's own counters on
``/metrics``: hermes-server's per replica (``hermes_replica_*``: the generations it routed there,
their prompt and cached tokens), else vLLM's per engine (``vllm:request_success_total``,
``vllm:prefix_cache_queries_total`` and ``_hits_total`` by ``engine``: also there when vLLM's own
balancer places requests, and on ``vllm serve``). Read before and after a run; the difference is
the run's. A target with one replica has nothing to report."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from server.bench.load import Target

Counters = dict[str, dict[str, float]]  # replica → {"requests", "prompt", "cached"}
Sources = dict[str, Counters]  # "hermes" (ours, per replica) and "vllm" (per engine)


def metrics_url(target: Target) -> str:
    base = target.url.rstrip("/")
    for suffix in ("/api/v1", "/v1"):
        if base.endswith(suffix):
            return base[: -len(suffix)] + "/metrics"
    return base + "/metrics"


async def read_counters(client: httpx.AsyncClient, target: Target) -> Sources:
    headers = {"Authorization": f"Bearer {target.key}"} if target.key else {}
    try:
        r = await client.get(metrics_url(target), headers=headers, timeout=30)
    except httpx.HTTPError:
        return {}
    if r.status_code != 200:
        return {}
    ours: Counters = {}
    vllm: Counters = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            name, labels = sample.name, sample.labels
            if "replica" in labels:
                row = ours.setdefault(labels["replica"], {"requests": 0.0, "prompt": 0.0, "cached": 0.0})
                if name == "hermes_replica_requests_total":
                    row["requests"] += sample.value
                elif name == "hermes_replica_prompt_tokens_total":
                    row[labels.get("kind", "prompt")] += sample.value
            elif "engine" in labels and name in _VLLM:
                row = vllm.setdefault(labels["engine"], {"requests": 0.0, "prompt": 0.0, "cached": 0.0})
                row[_VLLM[name]] += sample.value
    return {"hermes": ours, "vllm": vllm}


_VLLM = {
    "vllm:request_success_total": "requests",
    "vllm:prefix_cache_queries_total": "prompt",
    "vllm:prefix_cache_hits_total": "cached",
}


def spread(before: Sources, after: Sources) -> dict[str, Any] | None:
    """Per replica: requests, prompt tokens and cached share over the run; and the balance
    (max / min requests, and prompt tokens: the work each replica was given). Ours when the
    server has them (a series appears with its first request, so it may be missing before the
    run), else vLLM's; the same source before and after."""
    source = "hermes" if len(after.get("hermes", {})) > 1 else "vllm"
    first, last = before.get(source, {}), after.get(source, {})
    rows = {r: {k: v - first.get(r, {}).get(k, 0.0) for k, v in counts.items()} for r, counts in sorted(last.items())}
    if len(rows) < 2:
        return None
    prompts = [row["prompt"] for row in rows.values()]
    requests = [row["requests"] for row in rows.values()]
    return {
        "replicas": {
            r: {
                "requests": int(row["requests"]),
                "prompt_tokens": int(row["prompt"]),
                "cached_share": row["cached"] / row["prompt"] if row["prompt"] else None,
            }
            for r, row in rows.items()
        },
        "max_over_min_prompt_tokens": max(prompts) / min(prompts) if min(prompts) > 0 else None,
        "max_over_min_requests": max(requests) / min(requests) if min(requests) > 0 else None,
    }


def describe(s: dict[str, Any]) -> str:
    parts = [
        f"replica {r}: {v['requests']} requests, {v['prompt_tokens']:,} prompt tokens"
        + (f", {v['cached_share']:.1%} cached" if v["cached_share"] is not None else "")
        for r, v in s["replicas"].items()
    ]
    tokens, requests = s["max_over_min_prompt_tokens"], s["max_over_min_requests"]
    if tokens is None or requests is None:
        return "; ".join(parts) + "; a replica got nothing"
    return "; ".join(parts) + f"; max/min: requests x{requests:.2f}, prompt tokens x{tokens:.2f}"
