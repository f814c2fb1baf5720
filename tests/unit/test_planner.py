"""The capacity planner against the memory arithmetic of docs/HERMES4.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from server.model_shape import HERMES_70B, count_params
from server.planner import GIB, plan, report
from server.settings import load_settings
from tests.conftest import ROOT


def _plan(gpus: int | None = None, mem: float | None = 80, **engine):
    return plan(load_settings(None, engine=engine), gpus=gpus, gpu_mem_gib=mem, config=HERMES_70B)


def test_hermes_arithmetic() -> None:
    layers, embed = count_params(HERMES_70B)
    assert (layers + embed) / 1e9 == pytest.approx(70.55, abs=0.01)  # "~70.6e9 params"
    bf16 = _plan(tensor_parallel_size=8)
    assert bf16.kv_bytes_per_token == 327_680 and bf16.kv_bytes_per_token * 131_072 == 40 * GIB  # 40 GiB per sequence
    assert bf16.weight_bytes_per_gpu * 8 / 1e9 == pytest.approx(141.1, abs=0.2)  # "~141 GB in BF16"
    fp8 = _plan(quantization="fp8", kv_cache_dtype="fp8")
    assert fp8.kv_bytes_per_token == 163_840 and fp8.kv_bytes_per_token * 131_072 == 20 * GIB


@pytest.mark.parametrize(
    ("kw", "fits", "check"),
    [
        ({"tensor_parallel_size": 8}, True, lambda p: p.full_sequences >= 8),  # high concurrency
        ({"tensor_parallel_size": 4}, True, lambda p: p.full_sequences >= 1),  # full context
        ({"tensor_parallel_size": 2, "quantization": "fp8", "kv_cache_dtype": "fp8"}, True, lambda p: p.full_sequences >= 1),
        ({"quantization": "fp8", "kv_cache_dtype": "fp8"}, False, lambda p: 10_000 <= p.kv_capacity_tokens <= 30_000),  # 1xH100
        ({"tensor_parallel_size": 1}, False, lambda p: p.kv_capacity_tokens == 0 and "weights alone" in p.verdict),
    ],
)
def test_h100_verdicts(kw, fits: bool, check) -> None:
    p = _plan(**kw)
    assert p.fits is fits and check(p), p.verdict


def test_h200_fp8_holds_two_or_three_full_sequences() -> None:
    p = _plan(mem=141, quantization="fp8", kv_cache_dtype="fp8")
    assert p.fits and 2 <= p.full_sequences <= 3


def test_too_few_gpus_and_unknown_memory() -> None:
    assert "needs 8 GPUs" in _plan(gpus=4, tensor_parallel_size=8).verdict
    assert not _plan(mem=None).fits


def test_plan_cli_on_the_tiny_profile() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "server.cli", "plan", "--config", "configs/tiny-cpu.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert (
        ok.returncode == 0
        and "verdict:                 fits" in ok.stdout
        and "KV capacity:             524,288 tokens" in ok.stdout
    )
    bad = subprocess.run(
        [sys.executable, "-m", "server.cli", "plan", "--config", "configs/tiny-cpu.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "HERMES_ENGINE__KV_CACHE_MEMORY_BYTES": "1048576"},
    )
    assert bad.returncode == 1 and "does not fit" in bad.stdout


def test_serve_refuses_a_profile_that_cannot_fit() -> None:
    """Before any engine starts: exit 2 with the planner's verdict."""
    r = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", "--config", "configs/tiny-cpu.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "HERMES_ENGINE__KV_CACHE_MEMORY_BYTES": "1048576"},
    )
    assert r.returncode == 2 and "does not fit" in r.stderr and "max_model_len <= 1024" in r.stderr


# Every profile written for GPUs (it names its target machine).
GPU_PROFILES = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml") if "hardware:" in p.read_text())


@pytest.mark.parametrize("name", GPU_PROFILES)
def test_every_profile_passes_the_planner_on_its_hardware(name: str) -> None:
    s = load_settings(ROOT / "configs" / f"{name}.yaml")
    e = s.engine
    assert s.auth_required and s.hardware.gpus == e.tensor_parallel_size * e.pipeline_parallel_size * e.data_parallel_size
    p = plan(s, gpus=s.hardware.gpus, gpu_mem_gib=s.hardware.gpu_mem_gib, config=HERMES_70B)
    assert p.fits, p.verdict
    # the comment's arithmetic is the planner's
    text = (ROOT / "configs" / f"{name}.yaml").read_text()
    assert f"{p.weight_bytes_per_gpu / GIB:.1f} GiB" in text and f"{p.kv_budget_bytes_per_gpu / GIB:.1f} GiB" in text
    assert f"{p.full_sequences} full sequence" in text or name == "h100x1-fp8"


def _fake_nvidia_smi(tmp_path, mib: list[int]):
    """A stand-in nvidia-smi on PATH that reports these GPUs (memory.total in MiB)."""
    exe = tmp_path / "bin" / "nvidia-smi"
    exe.parent.mkdir()
    lines = "\n".join(str(m) for m in mib)
    gpus = "\n".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})" for i in range(len(mib)))
    exe.write_text(f'#!/bin/sh\nif [ "$1" = "-L" ]; then printf "%s\\n" "{gpus}"; else printf "%s\\n" "{lines}"; fi\n')
    exe.chmod(0o755)
    return {**os.environ, "PATH": f"{exe.parent}:{os.environ['PATH']}"}


H100_MIB, H200_MIB = 81_559, 143_771  # what nvidia-smi reports for an H100 80GB and an H200


@pytest.mark.parametrize(
    ("mib", "expected"),
    [
        ([H100_MIB] * 8, "h100x8-bf16"),
        ([H100_MIB] * 4, "h100x4-bf16"),
        ([H100_MIB] * 2, "h100x2-fp8"),
        ([H100_MIB], "h100x1-fp8"),
        ([H200_MIB], "h200x1-fp8"),
        ([H100_MIB] * 3, "h100x2-fp8"),  # TP must divide the KV heads: 3 GPUs run the 2-GPU profile
    ],
)
def test_pick_profile_from_nvidia_smi(tmp_path, mib, expected) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "server.cli", "pick-profile"], env=_fake_nvidia_smi(tmp_path, mib), capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == expected


def test_pick_profile_says_why_nothing_fits(tmp_path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "server.cli", "pick-profile"],
        env=_fake_nvidia_smi(tmp_path, [24_576]),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert "no profile fits" in r.stderr and "weights alone (67.7 GiB per GPU) leave no room" in r.stderr


def test_ray_profile_preflight(monkeypatch) -> None:
    import types

    from server.ray_check import ray_problem

    s = load_settings(ROOT / "configs" / "multinode-2x8-bf16.yaml")
    assert ray_problem(load_settings(ROOT / "configs" / "h100x8-bf16.yaml")) is None  # not a Ray profile
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    assert "Ray is not installed" in (ray_problem(s) or "")

    # A stand-in ray module (unit test only): a cluster with one node of 8 GPUs joined.
    fake = types.SimpleNamespace(init=lambda **kw: None, shutdown=lambda: None, cluster_resources=lambda: {"GPU": 8.0})
    monkeypatch.setitem(sys.modules, "ray", fake)
    assert "has 8 GPUs, the profile needs 16" in (ray_problem(s) or "")
    fake.cluster_resources = lambda: {"GPU": 16.0}
    assert ray_problem(s) is None

    def no_cluster(**kw):
        raise ConnectionError("Could not find any running Ray instance")

    fake.init = no_cluster
    assert "no Ray cluster reachable" in (ray_problem(s) or "")


def test_capacity_sheet_is_current() -> None:
    """benchmarks/CAPACITY.md is the planner's output for the committed profiles."""
    r = subprocess.run([sys.executable, "scripts/capacity_sheet.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = (ROOT / "benchmarks" / "CAPACITY.md").read_text()
    assert "computed and modelled, not measured here" in text and "| `h100x2-fp8` |" in text
    assert "~55 tok/s | ~1,742 tok/s at 59 |" in text  # the decode model, 8k-token sequences


def _draft_checkpoint(folder: Path) -> Path:
    """A two-layer draft: 100x64 FP32 (served as BF16: 2 bytes each) and 64 FP16 parameters."""
    from safetensors.numpy import save_file

    folder.mkdir()
    config = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"a": np.zeros((100, 64), np.float32), "b": np.zeros(64, np.float16)}, str(folder / "model.safetensors"))
    return folder


def test_a_draft_model_adds_its_weights_and_kv_cache(tmp_path: Path) -> None:
    draft = str(_draft_checkpoint(tmp_path / "draft"))
    base = _plan(tensor_parallel_size=2)
    spec = _plan(
        tensor_parallel_size=2, speculative_config={"method": "draft_model", "model": draft, "num_speculative_tokens": 4}
    )
    weights = (100 * 64 + 64) * 2
    assert spec.weight_bytes_per_gpu - base.weight_bytes_per_gpu == weights / 2  # split over TP 2
    assert spec.hermes_weight_bytes_per_gpu == base.weight_bytes_per_gpu  # what decode reads, what the checkpoint holds
    assert spec.kv_bytes_per_token - base.kv_bytes_per_token == 2 * 2 * 2 * 16 * 2  # K and V, 2 layers, 2 KV heads, BF16
    assert spec.kv_bytes_per_token_per_gpu - base.kv_bytes_per_token_per_gpu == 2 * 2 * 1 * 16 * 2
    assert spec.kv_capacity_tokens < base.kv_capacity_tokens
    assert any("speculative draft" in line and "counted below" in line for line in report(spec, "x"))
    whole = _plan(tensor_parallel_size=2, speculative_config={"model": draft, "draft_tensor_parallel_size": 1})
    assert whole.weight_bytes_per_gpu - base.weight_bytes_per_gpu == weights  # one GPU holds it all: every rank has a copy


def test_a_draft_not_on_disk_or_prompt_lookup(tmp_path: Path) -> None:
    base = _plan(tensor_parallel_size=2)
    missing = _plan(tensor_parallel_size=2, speculative_config={"method": "eagle3", "model": str(tmp_path / "nowhere")})
    assert missing.weight_bytes_per_gpu == base.weight_bytes_per_gpu and "NOT counted" in missing.draft
    lookup = _plan(tensor_parallel_size=2, speculative_config={"method": "ngram", "num_speculative_tokens": 3})
    assert lookup.weight_bytes_per_gpu == base.weight_bytes_per_gpu and lookup.draft == ""
    assert not any("speculative draft" in line for line in report(lookup, "x"))


def test_kv_offload_is_counted_per_node_and_refused_on_the_cpu_build() -> None:
    from server import doctor

    s = load_settings(ROOT / "configs" / "h100x8-fp8-dp4.yaml", engine={"kv_offload_gib": 100})
    p = plan(s, gpus=8, gpu_mem_gib=79.6)
    assert p.kv_offload_bytes_per_node == 4 * 100 * GIB  # four replicas on the node, 100 GiB each
    assert p.kv_offload_tokens_per_replica == int(100 * GIB // p.kv_bytes_per_token)
    assert any(line.startswith("KV offload (host RAM):   400 GiB per node") for line in report(p, "x"))
    assert doctor.check_host_memory(s, 1024 * GIB).status == "OK"
    tight = doctor.check_host_memory(s, 512 * GIB)  # 400 of 512 GiB is over the 70 % allowed
    assert tight.status == "FAIL" and "lower engine.kv_offload_gib to 89 or less" in tight.fix
    assert doctor.check_host_memory(load_settings(None), 512 * GIB).status == "SKIP"
    r = subprocess.run(  # the CPU build (this machine's): refused before any engine starts
        [sys.executable, "-m", "server.cli", "serve", "--config", "configs/tiny-cpu.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HERMES_ENGINE__KV_OFFLOAD_GIB": "1"},
    )
    assert r.returncode == 2 and "kv_offload_gib needs a GPU build of vLLM" in r.stderr
