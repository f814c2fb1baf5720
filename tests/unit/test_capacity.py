"""The decode model against the GPU figures it was built from, and the API layer's ceiling."""

from __future__ import annotations

import pytest

from server import capacity, planner
from server.model_shape import HERMES_70B
from server.settings import load_settings
from tests.conftest import ROOT

# Measured weights-only decode, Hermes 4 70B FP8 shape on one GPU: total output tok/s by batch.
MEASURED = {
    "h100": {1: 37.1, 16: 594, 32: 1166, 64: 2220, 128: 4135, 256: 7099},
    "h200": {1: 51.9, 16: 831, 32: 1625, 64: 3012, 128: 5521, 256: 8095},
}


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_model_reproduces_the_measured_rows(gpu: str) -> None:
    one_gpu = capacity.Replica(gpu, capacity.MEASURED_STEP_BYTES, 0.0, layers=80, tp=1, pp=1)
    for batch, measured in MEASURED[gpu].items():
        (row,) = capacity.decode_table(one_gpu, 1, context=0, levels=[batch])
        assert row.total == pytest.approx(measured, rel=0.10)


def test_batch_between_and_beyond_measured_points_stays_monotonic() -> None:
    one_gpu = capacity.Replica("h100", capacity.MEASURED_STEP_BYTES, 0.0, layers=80, tp=1, pp=1)
    totals = [r.total for r in capacity.decode_table(one_gpu, 1, 0, [1, 8, 24, 48, 100, 200, 256, 384, 512])]
    assert totals == sorted(totals)
    # Each stream slows as the batch grows (the measured steps at batch 1 and 16 are level).
    per_stream = [r.per_stream for r in capacity.decode_table(one_gpu, 1, 0, [16, 48, 100, 200, 256, 384, 512])]
    assert per_stream == sorted(per_stream, reverse=True)


def test_tp2_single_stream_matches_nims_published_itl() -> None:
    """NIM 1.8, Llama-3.3-70B FP8 on 2xH100 at TP 2, 5000 tokens in, 500 out: 18.6 ms per token
    at one stream. The profile of the same layout, through the planner, within 20 %."""
    s = load_settings(ROOT / "configs" / "h100x2-fp8.yaml")
    p = planner.plan(s, gpus=2, gpu_mem_gib=79.6, config=HERMES_70B)
    replica, _ = planner.decode_replica(s, p, 5250)
    assert replica is not None
    itl_ms = replica.step_s(1, 5250) * 1000
    assert itl_ms == pytest.approx(18.6, rel=0.20)


def test_kv_reads_slow_long_contexts() -> None:
    s = load_settings(ROOT / "configs" / "h200x1-fp8.yaml")
    p = planner.plan(s, gpus=1, gpu_mem_gib=140.4, config=HERMES_70B)
    replica, _ = planner.decode_replica(s, p, 1)
    assert replica is not None
    assert replica.step_s(32, 100_000) > 1.5 * replica.step_s(32, 1_000)


def test_plan_warns_when_the_api_layer_would_be_the_bottleneck() -> None:
    s = load_settings(ROOT / "configs" / "h100x8-fp8-dp4.yaml")
    p = planner.plan(s, gpus=8, gpu_mem_gib=79.6, config=HERMES_70B)
    lines, bottleneck = planner.throughput_report(s, p, 8192, capacity.LAYER_US_PER_TOKEN)
    assert not bottleneck and not any("WARNING" in line for line in lines)  # the profile runs 2 processes
    one = s.model_copy(update={"api_processes": 1})
    lines, bottleneck = planner.throughput_report(one, p, 8192, capacity.LAYER_US_PER_TOKEN)
    assert bottleneck and any("set api_processes: 2" in line for line in lines)
    # A slower host CPU (measured there with bench_layer.py --vs-vllm) needs more processes.
    lines, _ = planner.throughput_report(one, p, 8192, 400.0)
    assert any("set api_processes: 4" in line for line in lines)  # 6,969 / (0.7 x 2,500)


def test_pick_profile_by_predicted_throughput_at_the_target_load(tmp_path) -> None:
    configs = ROOT / "configs"
    few, _, _ = planner.pick_profile(configs, 8, 79.6, concurrency=16, context=8192)
    many, lines, why = planner.pick_profile(configs, 8, 79.6, concurrency=256, context=8192)
    assert few == "h100x8-bf16"  # at low concurrency, the widest TP decodes each stream fastest
    assert many == "h100x8-fp8-dp4"  # at high concurrency, four small replicas carry the most
    assert any("h100x8-fp8-dp4" in line and "tok/s at 256" in line for line in lines)
    assert why.startswith("h100x8-fp8-dp4: ~") and "next h100x8-bf16" in why
