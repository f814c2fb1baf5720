"""Decode rate from measured GPU figures, and the API layer's own ceiling beside it.

The GPU side is a model, not a measurement of this server: one decode step of Hermes 4 70B
(Llama-3.1-70B shape) at batch B and context C on a replica of TP x PP GPUs takes

    weights:    weight bytes per GPU, read at the speed measured for that batch (below)
  + KV cache:   B x C x KV bytes per token per GPU, read at the measured small-batch speed
  + all-reduce: 2 per layer when TP > 1, at a stated allowance each
  (x PP: pipeline stages run one after another for a step; no credit for overlap)

and each running sequence gets one token per step. The weights figures were measured on one H100
80GB HBM3 and one H200 (PyTorch 2.11 + cuBLAS, every linear layer in FP8 as in Hermes-4-70B-FP8
with a BF16 ``lm_head``, one decode step captured in a CUDA graph, weights only, 70.55 GB read per
step); see docs/CAPACITY_MODEL.md. Other weight sizes scale the step time by their bytes.

The layer side: one API process streams at most 1 / (CPU seconds per streamed token) tokens/s;
the figure below is what ``scripts/bench_layer.py --vs-vllm`` measured on the development machine
(benchmarks/RESULTS.md), to be replaced by a measurement on the serving host
(``hermes-server plan --layer-us-per-token``).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

# Measured: seconds per weights-only decode step of 70.55 GB at each batch (total tok/s = B / step).
MEASURED_STEP_BYTES = 70.55e9
MEASURED_STEP_S: dict[str, dict[int, float]] = {
    "h100": {1: 0.02696, 16: 16 / 594, 32: 32 / 1166, 64: 64 / 2220, 128: 128 / 4135, 256: 256 / 7099},
    "h200": {1: 0.01926, 16: 16 / 831, 32: 32 / 1625, 64: 64 / 3012, 128: 128 / 5521, 256: 256 / 8095},
}
# A decode step's two all-reduces per layer over NVLink: an allowance, not a measurement, set so
# that the model lands on NIM's published 2xH100 TP2 FP8 single-stream inter-token latency
# (18.6 ms); it also stands for the engine's own per-step work that grows with TP.
ALLREDUCE_S = 25e-6
# CPU time of one API process per streamed output token, real engine, 64 streams (measured on the
# 2-core development machine with scripts/bench_layer.py --vs-vllm; see benchmarks/RESULTS.md).
LAYER_US_PER_TOKEN = 130.0
# Keep the layer under this share of its ceiling: past it, queueing in the event loop shows up
# as inter-token latency long before the ceiling itself.
LAYER_HEADROOM = 0.7


def gpu_kind(gpu_mem_gib: float | None) -> str | None:
    """h100 or h200 (the GPUs with measured figures), told apart by the memory nvidia-smi reports
    (an H100 80GB shows ~79.6 GiB, an H200 ~140.4 GiB): the machine found, or the profile's target."""
    if gpu_mem_gib is None:
        return None
    if 75 <= gpu_mem_gib <= 96:
        return "h100"
    if 130 <= gpu_mem_gib <= 145:
        return "h200"
    return None


def weights_step_s(gpu: str, weight_bytes_per_gpu: float, batch: int) -> float:
    """Seconds to read one GPU's weights for a step at ``batch``: the measured curve (linear
    between measured batches, along the last segment beyond 256), scaled by the bytes."""
    points = MEASURED_STEP_S[gpu]
    batches = sorted(points)
    b = max(1, batch)
    i = min(max(bisect.bisect_left(batches, b), 1), len(batches) - 1)
    lo, hi = batches[i - 1], batches[i]
    step = points[lo] + (points[hi] - points[lo]) * (b - lo) / (hi - lo)
    return step * weight_bytes_per_gpu / MEASURED_STEP_BYTES


def small_batch_bandwidth(gpu: str) -> float:
    """Bytes/s at batch 1 (2.62 TB/s on the H100, 3.66 TB/s on the H200): what KV reads get."""
    return MEASURED_STEP_BYTES / MEASURED_STEP_S[gpu][1]


@dataclass(frozen=True)
class Replica:
    gpu: str
    weight_bytes_per_gpu: float
    kv_bytes_per_token_per_gpu: float
    layers: int
    tp: int
    pp: int

    def step_s(self, batch: int, context: int) -> float:
        """One decode step of ``batch`` sequences, each ``context`` tokens long."""
        weights = weights_step_s(self.gpu, self.weight_bytes_per_gpu, batch)
        kv = batch * context * self.kv_bytes_per_token_per_gpu / small_batch_bandwidth(self.gpu)
        allreduce = 2 * math.ceil(self.layers / self.pp) * ALLREDUCE_S if self.tp > 1 else 0.0
        return self.pp * (weights + kv + allreduce)


@dataclass(frozen=True)
class Row:
    concurrency: int
    per_stream: float  # tok/s each stream sees
    total: float  # tok/s of the deployment


def decode_table(replica: Replica, replicas: int, context: int, levels: list[int]) -> list[Row]:
    """Per-stream and total output tok/s at each concurrency, spread evenly over the replicas."""
    rows = []
    for n in levels:
        batch = math.ceil(n / replicas)
        per_stream = 1.0 / replica.step_s(batch, context)
        rows.append(Row(n, per_stream, per_stream * n))
    return rows


def layer_ceiling(api_processes: int, us_per_token: float = LAYER_US_PER_TOKEN) -> float:
    """Streamed tokens/s the API processes can carry at most, a core each."""
    return api_processes * 1e6 / us_per_token


def processes_needed(peak_tokens_s: float, us_per_token: float = LAYER_US_PER_TOKEN) -> int:
    """API processes that keep the layer under its headroom share at the GPUs' peak."""
    return max(1, math.ceil(peak_tokens_s / (LAYER_HEADROOM * layer_ceiling(1, us_per_token))))
