"""What a speculative-decoding draft costs the GPUs it shares with Hermes: its weights, and the KV
cache of its own layers, which vLLM keeps in the same block pool as the target model's (every
token takes a slot in the draft's layers too). Computed from the draft checkpoint on disk, like
the planner's other figures; a draft that is not on disk is reported as not counted."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.download import find_local, safetensors_header
from server.model_shape import dtype_bytes, kv_bytes_per_token


@dataclass(frozen=True)
class DraftCost:
    weight_bytes_per_gpu: float = 0.0
    kv_bytes_per_token: int = 0  # the draft's layers, all ranks
    kv_bytes_per_token_per_gpu: int = 0
    summary: str = ""  # one line for the plan report; empty without a draft model


def _served_weight_bytes(folder: Path, served_bytes: int) -> tuple[float, str]:
    """Bytes of the draft's weights once loaded: from the safetensors headers, each tensor at its
    stored width or the engine's dtype if narrower (an FP32 checkpoint is served in BF16, an FP8
    one stays FP8); without safetensors, the weight files' sizes as stored."""
    total = 0.0
    shards = sorted(folder.glob("*.safetensors"))
    for shard in shards:
        read = safetensors_header(shard)
        if read is None:
            continue
        for name, tensor in read[1].items():
            if name != "__metadata__" and isinstance(tensor, dict):
                width = min(dtype_bytes(str(tensor.get("dtype", ""))), served_bytes)
                total += math.prod(tensor.get("shape", ())) * width
    if shards:
        return total, "from its safetensors headers"
    stored = sum(f.stat().st_size for pattern in ("*.bin", "*.pt", "*.pth") for f in folder.glob(pattern))
    return float(stored), "its weight files' size as stored"


def _config(path: Path) -> dict[str, Any]:
    """The draft's config.json, or {} when missing or unreadable (vLLM will say why at start-up;
    the plan then counts its weights but no KV cache)."""
    try:
        c = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return c if isinstance(c, dict) else {}


def draft_cost(spec: dict[str, Any] | None, tensor_parallel: int, served_bytes: int, kv_bytes: int) -> DraftCost:
    """The draft named by ``engine.speculative_config`` (``model``), split as vLLM splits it:
    across ``draft_tensor_parallel_size`` GPUs if given, else the target's TP. Prompt lookup
    (n-gram) has no draft weights: zero."""
    spec = spec or {}
    model = spec.get("model")
    if not model:
        return DraftCost()
    found = find_local(str(model), spec.get("revision"))
    if found is None:
        return DraftCost(summary=f"{model} is not on disk: its weights and KV cache are NOT counted below")
    folder = found[0]
    c = _config(folder / "config.json")
    tp = int(spec.get("draft_tensor_parallel_size") or tensor_parallel)
    weights, how = _served_weight_bytes(folder, served_bytes)
    layers = int(c.get("num_hidden_layers", 0))
    try:  # the planner's own formula, applied to the draft's shape
        kv_per_token, kv_per_gpu = kv_bytes_per_token(c, kv_bytes, tp)
    except (KeyError, TypeError, ZeroDivisionError):  # no shape in its config: no KV counted
        kv_per_token, kv_per_gpu = 0, 0
    summary = (
        f"{model}: {weights / 1024**3:.2f} GiB of weights ({how}) over TP {tp}, "
        f"{kv_per_token:,} B of KV cache per token ({layers} layers); both counted below"
    )
    return DraftCost(weights / tp, kv_per_token, kv_per_gpu, summary)
