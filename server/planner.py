"""Capacity planner: what a profile's hardware carries, from the model's config.json and the
profile, before any engine starts. Pure arithmetic (the figures are computed, not measured):

- weights per GPU = parameters x bytes per parameter / (TP x PP); an FP8 checkpoint keeps
  embeddings and the LM head in BF16;
- KV cache per token = 2 (K, V) x layers x KV heads x head_dim x KV bytes, split across the
  ranks (KV heads by TP, layers by PP; a KV head is replicated when TP exceeds their number);
- KV capacity = (GPU memory x gpu_memory_utilization - weights - overhead) / KV per token per GPU,
  or ``engine.kv_cache_memory_bytes`` when the profile fixes it (the CPU build);
- a speculative draft model adds its weights and its layers' KV cache (server/speculative.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.model_shape import HERMES_70B, count_params, dtype_bytes, kv_bytes_per_token
from server.settings import Settings
from server.speculative import draft_cost

if TYPE_CHECKING:
    from server.capacity import Replica

GIB = 1024**3
# Activations, CUDA graphs and the sampler's buffers per GPU, beyond weights and KV cache
# (an assumption, stated in the output; vLLM measures the real figure at start-up).
OVERHEAD_GIB = 2.0


@dataclass
class Plan:
    params: int
    weight_bytes_per_gpu: float
    kv_bytes_per_token: int  # whole model, all ranks
    kv_bytes_per_token_per_gpu: float
    kv_budget_bytes_per_gpu: float
    kv_capacity_tokens: int
    max_model_len: int
    full_sequences: int
    largest_max_model_len: int
    gpus: int
    gpu_mem_gib: float | None
    fits: bool
    verdict: str
    layers: int = 80
    draft: str = ""  # the speculative draft's share, when the profile names a draft model
    draft_weight_bytes_per_gpu: float = 0.0  # included in weight_bytes_per_gpu
    # KV offload to host RAM (engine.kv_offload_gib): what it takes of each node's memory, and
    # how many tokens of evicted prefixes each replica keeps there.
    kv_offload_bytes_per_node: float = 0.0
    kv_offload_tokens_per_replica: int = 0

    @property
    def hermes_weight_bytes_per_gpu(self) -> float:
        """Hermes's own weights per GPU, without a draft's: what each decode step reads and
        what the checkpoint holds."""
        return self.weight_bytes_per_gpu - self.draft_weight_bytes_per_gpu


def model_config(settings: Settings) -> tuple[dict[str, Any], str]:
    path = Path(settings.model.resolved_path()) / "config.json"
    if path.exists():
        return json.loads(path.read_text()), str(path)
    return dict(HERMES_70B), "built-in Hermes-4-70B architecture (checkpoint not downloaded)"


def plan(
    settings: Settings, gpus: int | None = None, gpu_mem_gib: float | None = None, config: dict[str, Any] | None = None
) -> Plan:
    c = config if config is not None else model_config(settings)[0]
    e = settings.engine
    ranks = e.tensor_parallel_size * e.pipeline_parallel_size  # one replica
    needed = ranks * e.data_parallel_size
    n_gpus = gpus if gpus is not None else needed
    layer_params, embed_params = count_params(c)
    quant = (e.quantization or "").lower()
    weight_dtype = "fp8" if "fp8" in quant or "fp8" in settings.model.path.lower() else e.dtype
    wbytes = dtype_bytes(weight_dtype)
    weights = layer_params * wbytes + embed_params * max(wbytes, 2)
    weight_per_gpu = weights / ranks
    kv_dtype = e.kv_cache_dtype if e.kv_cache_dtype != "auto" else e.dtype
    kv_b = dtype_bytes("fp8" if kv_dtype.startswith("fp8") else kv_dtype)
    layers = c["num_hidden_layers"]
    kv_per_token, kv_per_token_gpu = kv_bytes_per_token(c, kv_b, e.tensor_parallel_size, e.pipeline_parallel_size)

    draft = draft_cost(e.speculative_config, e.tensor_parallel_size, dtype_bytes(e.dtype), kv_b)
    weight_per_gpu += draft.weight_bytes_per_gpu
    kv_per_token += draft.kv_bytes_per_token
    kv_per_token_gpu += draft.kv_bytes_per_token_per_gpu
    if e.kv_cache_memory_bytes is not None:
        budget = float(e.kv_cache_memory_bytes)
    elif gpu_mem_gib is not None:
        budget = gpu_mem_gib * GIB * e.gpu_memory_utilization - weight_per_gpu - OVERHEAD_GIB * GIB
    else:
        budget = float("nan")
    capacity = int(budget // kv_per_token_gpu) if budget == budget and budget > 0 else 0
    limit = min(c.get("max_position_embeddings", e.max_model_len), capacity)
    full = capacity // e.max_model_len
    if gpus is not None and gpus < needed:
        dp = f" x DP {e.data_parallel_size}" if e.data_parallel_size > 1 else ""
        fits, verdict = (
            False,
            f"needs {needed} GPUs (TP {e.tensor_parallel_size} x PP {e.pipeline_parallel_size}{dp}), only {gpus} given",
        )
    elif budget != budget:
        fits, verdict = False, "GPU memory unknown: pass --gpu-mem-gib (or run where nvidia-smi sees the GPUs)"
    elif budget <= 0:
        fits, verdict = (
            False,
            (
                f"weights alone ({weight_per_gpu / GIB:.1f} GiB per GPU) leave no room for the KV cache: "
                "use more GPUs (higher TP), FP8 weights, or GPUs with more memory"
            ),
        )
    elif capacity < e.max_model_len:
        fits, verdict = (
            False,
            (
                f"max_model_len {e.max_model_len} does not fit: the KV cache holds {capacity} tokens; "
                f"set engine.max_model_len <= {limit}" + ("" if kv_b == 1 else ", use an FP8 KV cache") + ", or use more GPUs"
            ),
        )
    else:
        each = " per replica" if e.data_parallel_size > 1 else ""
        fits, verdict = True, f"fits: {full} full-length ({e.max_model_len}-token) sequences at once{each}"
    return Plan(
        params=layer_params + embed_params,
        weight_bytes_per_gpu=weight_per_gpu,
        kv_bytes_per_token=kv_per_token,
        kv_bytes_per_token_per_gpu=kv_per_token_gpu,
        kv_budget_bytes_per_gpu=budget,
        kv_capacity_tokens=capacity,
        max_model_len=e.max_model_len,
        full_sequences=full,
        largest_max_model_len=limit,
        gpus=n_gpus,
        gpu_mem_gib=gpu_mem_gib,
        fits=fits,
        verdict=verdict,
        layers=layers,
        draft=draft.summary,
        draft_weight_bytes_per_gpu=draft.weight_bytes_per_gpu,
        kv_offload_bytes_per_node=kv_offload_bytes_per_node(settings),
        kv_offload_tokens_per_replica=int((e.kv_offload_gib or 0) * GIB // kv_per_token),
    )


def kv_offload_bytes_per_node(settings: Settings) -> float:
    """Host RAM the KV offload takes on one node: its replicas' buffers (a replica's ranks share
    its buffer; replicas are spread evenly over the nodes)."""
    e = settings.engine
    if not e.kv_offload_gib:
        return 0.0
    replicas_here = math.ceil(e.data_parallel_size / nodes(settings))
    return e.kv_offload_gib * GIB * replicas_here


def report(p: Plan, source: str) -> list[str]:
    return [
        f"model config:            {source}",
        f"parameters:              {p.params / 1e9:.2f} B",
        f"GPUs:                    {p.gpus}" + (f" x {p.gpu_mem_gib:g} GiB" if p.gpu_mem_gib else ""),
        *([f"speculative draft:       {p.draft}"] if p.draft else []),
        f"weights per GPU:         {p.weight_bytes_per_gpu / GIB:.2f} GiB",
        f"KV cache per token:      {p.kv_bytes_per_token:,} B ({p.kv_bytes_per_token_per_gpu:,.0f} B per GPU)",
        f"KV budget per GPU:       {p.kv_budget_bytes_per_gpu / GIB:.2f} GiB (after {OVERHEAD_GIB:g} GiB assumed overhead on GPUs)",
        f"KV capacity:             {p.kv_capacity_tokens:,} tokens",
        f"full-context sequences:  {p.full_sequences} of {p.max_model_len:,} tokens",
        f"largest max_model_len:   {p.largest_max_model_len:,}",
        *(
            [
                f"KV offload (host RAM):   {p.kv_offload_bytes_per_node / GIB:,.0f} GiB per node, "
                f"{p.kv_offload_tokens_per_replica:,} tokens per replica"
            ]
            if p.kv_offload_bytes_per_node
            else []
        ),
        f"verdict:                 {p.verdict}",
        "(computed from the model's shape and the profile, not measured)",
    ]


def detect_gpus() -> tuple[int, float] | None:
    """(count, GiB of the smallest) from nvidia-smi, or None without NVIDIA GPUs."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    mib = [float(x) for x in out.split() if x.strip()]
    return (len(mib), min(mib) / 1024) if mib else None


def nodes(settings: Settings) -> int:
    """Machines a profile spans: nvidia-smi sees one of them, assumed alike."""
    e = settings.engine
    if e.nnodes > 1:
        return e.nnodes
    return e.pipeline_parallel_size if e.distributed_executor_backend == "ray" else 1


def check_before_serve(settings: Settings) -> str | None:
    """The planner's verdict when the profile cannot work on this machine, else None. Only when
    the memory is known (GPUs found, or a fixed KV-cache size): nothing is guessed."""
    found = detect_gpus()
    if found is None and settings.engine.kv_cache_memory_bytes is None:
        return None
    gpus = found[0] * nodes(settings) if found else None
    p = plan(settings, gpus=gpus, gpu_mem_gib=found[1] if found else None)
    return None if p.fits else p.verdict


def pick_profile(
    configs: Path, gpus: int, gpu_mem_gib: float, concurrency: int = 64, context: int = 8192
) -> tuple[str | None, list[str], str]:
    """The single-node GPU profile that serves ``concurrency`` streams of ``context`` tokens
    fastest on ``gpus`` GPUs of ``gpu_mem_gib`` each (predicted total tok/s, modelled from measured
    bandwidth; then most GPUs used, the longest context, most full-context sequences), one line per
    profile saying why it does or does not fit, and one sentence on why the choice. Without a
    decode model for the GPU: most GPUs used first. Multi-node profiles are never picked: they need
    a cluster first."""
    from server.settings import load_settings

    ranked: list[tuple[float, int, int, int, str]] = []
    lines: list[str] = []
    for path in sorted(configs.glob("*.yaml")):
        s = load_settings(path)
        e = s.engine
        if s.hardware.gpus is None or e.distributed_executor_backend == "ray" or e.nnodes > 1:
            continue  # CPU and cluster profiles
        p = plan(s, gpus=gpus, gpu_mem_gib=gpu_mem_gib)
        used = e.tensor_parallel_size * e.pipeline_parallel_size * e.data_parallel_size
        rate = predicted_total(s, p, concurrency, context) if p.fits else None
        if p.fits and e.max_model_len < context:
            lines.append(f"{path.stem:<20} no: its context ({e.max_model_len:,}) is shorter than --context {context:,}")
            continue
        said = f"; ~{rate:,.0f} tok/s at {concurrency} x {context:,} tokens (modelled)" if rate is not None else ""
        lines.append(f"{path.stem:<20} {p.verdict if p.fits else 'no: ' + p.verdict}{said}")
        if p.fits:
            ranked.append((rate or 0.0, used, e.max_model_len, p.full_sequences, path.stem))
    ranked.sort(key=lambda r: r[:4], reverse=True)
    if not ranked:
        return None, lines, "no profile fits"
    best = ranked[0]
    if best[0] == 0.0:
        return best[4], lines, f"{best[4]}: no decode model for this GPU, so the one using the most GPUs ({best[1]})"
    why = f"{best[4]}: ~{best[0]:,.0f} tok/s predicted at {concurrency} streams of {context:,} tokens (modelled), the most of {len(ranked)} fitting"
    if len(ranked) > 1:
        why += f"; next {ranked[1][4]} ~{ranked[1][0]:,.0f} tok/s (other loads: --concurrency/--context)"
    return best[4], lines, why


def predicted_total(settings: Settings, p: Plan, concurrency: int, context: int) -> float | None:
    """Total output tok/s at ``concurrency`` streams (at most what the KV cache admits) of
    ``context`` tokens; None without a decode model for the GPU."""
    from server import capacity

    replica, admitted = decode_replica(settings, p, context)
    if replica is None or admitted == 0:
        return None
    return capacity.decode_table(replica, settings.engine.data_parallel_size, context, [min(concurrency, admitted)])[0].total


def decode_replica(settings: Settings, p: Plan, context: int) -> tuple[Replica | None, int]:
    """The decode model of one replica (None: no figures for the GPU) and the most sequences of
    ``context`` tokens all replicas hold at once."""
    from server import capacity

    e = settings.engine
    gpu = capacity.gpu_kind(p.gpu_mem_gib)
    admitted = e.data_parallel_size * min(e.max_num_seqs, p.kv_capacity_tokens // max(1, context))
    if gpu is None:
        return None, admitted
    tp, pp = e.tensor_parallel_size, e.pipeline_parallel_size
    return capacity.Replica(gpu, p.hermes_weight_bytes_per_gpu, p.kv_bytes_per_token_per_gpu, p.layers, tp, pp), admitted


DECODE_LEVELS = (1, 8, 32, 64, 128, 256)


def throughput_report(settings: Settings, p: Plan, context: int, layer_us_per_token: float) -> tuple[list[str], bool]:
    """The decode table (modelled from measured GPU bandwidth) and the API layer's ceiling beside
    its peak; True when the layer would be the bottleneck."""
    from server import capacity

    e = settings.engine
    layer = capacity.layer_ceiling(settings.api_processes, layer_us_per_token)
    lines = [""]
    replica, admitted = decode_replica(settings, p, context)
    if replica is None or not p.fits:
        lines.append("decode rate:             no model for this GPU (measured figures exist for H100 and H200)")
        return lines, False
    replicas = e.data_parallel_size
    levels = sorted({n for n in DECODE_LEVELS if n <= admitted} | ({admitted} if admitted else set()))
    rows = capacity.decode_table(replica, replicas, context, levels)
    lines.append(
        f"decode at {context:,}-token context, {replicas} replica(s) of TP {e.tensor_parallel_size} x PP "
        f"{e.pipeline_parallel_size} on {replica.gpu.upper()} (modelled from measured bandwidth, not measured here):"
    )
    lines.append("  concurrency   per stream tok/s   total tok/s")
    for r in rows:
        mark = "  (largest the KV cache admits)" if r.concurrency == admitted else ""
        lines.append(f"  {r.concurrency:>11,}   {r.per_stream:>16.1f}   {r.total:>11,.0f}{mark}")
    peak = max((r.total for r in rows), default=0.0)
    bottleneck = peak > capacity.LAYER_HEADROOM * layer
    lines.append(
        f"API layer:               {settings.api_processes} process(es) x ~{capacity.layer_ceiling(1, layer_us_per_token):,.0f} "
        f"tok/s = ~{layer:,.0f} streamed tok/s at most ({layer_us_per_token:g} us CPU per token; "
        "measured on the dev machine unless --layer-us-per-token)"
    )
    if bottleneck:
        need = capacity.processes_needed(peak, layer_us_per_token)
        lines.append(
            f"WARNING: the API layer would be the bottleneck: the GPUs' peak ~{peak:,.0f} tok/s is over "
            f"{capacity.LAYER_HEADROOM:.0%} of it; set api_processes: {need} (one free CPU core each)"
        )
    return lines, bottleneck
