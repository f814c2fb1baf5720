"""The model's shape, from its ``config.json``: parameter count, KV-cache bytes per token, and the
bytes per element of each dtype name. A leaf module: the planner uses it for Hermes, the
speculative-decoding estimate for a draft model.
"""

from __future__ import annotations

import math
from typing import Any

# Hermes-4-70B = Llama-3.1-70B architecture (docs/HERMES4.md), used when the
# checkpoint is not on disk yet.
HERMES_70B: dict[str, Any] = {
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
}

# Bytes per element, under every name a dtype goes by here: the engine's settings (bf16, float16,
# fp8 …) and safetensors headers (BF16, F8_E4M3 …), looked up lower-cased.
_DTYPE_BYTES = {
    **dict.fromkeys(("float64", "f64", "i64"), 8),
    **dict.fromkeys(("float32", "float", "fp32", "f32", "i32"), 4),
    **dict.fromkeys(("bfloat16", "bf16", "float16", "half", "fp16", "f16", "i16", "auto"), 2),
    **dict.fromkeys(("fp8", "f8_e4m3", "f8_e5m2", "i8", "u8"), 1),
}


def dtype_bytes(name: str, default: int = 2) -> int:
    """Bytes per element of a dtype (``auto`` and unknown names: ``default``, BF16's 2)."""
    return _DTYPE_BYTES.get(name.lower(), default)


def count_params(c: dict[str, Any]) -> tuple[int, int]:
    """(parameters in the transformer layers, parameters in embeddings + LM head)."""
    h, inter, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    heads, kv = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
    hd = c.get("head_dim") or h // heads
    per_layer = h * heads * hd + 2 * h * kv * hd + heads * hd * h + 3 * h * inter + 2 * h
    embed = c["vocab_size"] * h * (1 if c.get("tie_word_embeddings") else 2) + h
    return per_layer * layers, embed


def kv_bytes_per_token(c: dict[str, Any], kv_bytes: int, tp: int, pp: int = 1) -> tuple[int, int]:
    """KV cache bytes per token of a model shaped as ``c``: (all ranks, per GPU). K and V for
    every layer and KV head; per GPU the KV heads split by TP (a KV head is replicated when TP
    exceeds their number) and the layers by PP."""
    heads = c["num_attention_heads"]
    kv_heads = c.get("num_key_value_heads", heads)
    hd = c.get("head_dim") or c["hidden_size"] // heads
    layers = c["num_hidden_layers"]
    return 2 * layers * kv_heads * hd * kv_bytes, 2 * math.ceil(layers / pp) * max(1, kv_heads // tp) * hd * kv_bytes
