"""`hermes-server doctor` against stand-in machines: nvidia-smi answers from a script on PATH,
/dev/shm and the disk report chosen sizes, the hub is a local HTTP server (or a closed port)."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from server import doctor
from server.settings import load_settings
from tests.conftest import ROOT

NVLINK_TOPO = """\tGPU0\tGPU1\tCPU Affinity
GPU0\t X \tNV18\t0-51
GPU1\tNV18\t X \t0-51
"""
PCIE_TOPO = """\tGPU0\tGPU1\tCPU Affinity
GPU0\t X \tPHB\t0-51
GPU1\tPHB\t X \t0-51
"""


def fake_nvidia_smi(tmp_path: Path, driver: str, topo: str, count: int = 2) -> dict[str, str]:
    exe = tmp_path / "bin" / "nvidia-smi"
    exe.parent.mkdir(exist_ok=True)
    (tmp_path / "topo.txt").write_text(topo)
    query = "\\n".join(f"NVIDIA H100 80GB HBM3, 81559, {driver}" for _ in range(count))
    exe.write_text(f'#!/bin/sh\nif [ "$1" = "topo" ]; then cat {tmp_path / "topo.txt"}; else printf "{query}\\n"; fi\n')
    exe.chmod(0o755)
    return {"PATH": f"{exe.parent}:{os.environ['PATH']}", "HERMES_MODELS_DIR": str(tmp_path / "models")}


@pytest.fixture()
def hub() -> Iterator[str]:
    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _machine(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], shm_gib: float, disk_gb: float) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(doctor.os, "statvfs", lambda _p: SimpleNamespace(f_blocks=int(shm_gib * 2**30 / 4096), f_frsize=4096))
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda _p: SimpleNamespace(free=int(disk_gb * 1e9)))


def _by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


def test_a_healthy_gpu_host_with_the_cpu_build_of_vllm(tmp_path, monkeypatch, hub) -> None:
    _machine(monkeypatch, fake_nvidia_smi(tmp_path, "580.95.05", NVLINK_TOPO), shm_gib=16, disk_gb=500)
    checks = _by_name(doctor.diagnose(load_settings(ROOT / "configs" / "h100x2-fp8.yaml"), hub_probe=hub))
    assert {n: c.status for n, c in checks.items()} == {
        "GPUs": "OK",
        "driver": "OK",
        "interconnect": "OK",
        "shared memory": "OK",
        "vLLM": "FAIL",  # this test machine has the CPU build
        "profile fit": "OK",
        "host memory": "SKIP",  # no KV offload in this profile
        "weights": "OK",
        "hub": "OK",
    }
    assert "CPU build on a GPU host" in checks["vLLM"].detail and "gpu" in checks["vLLM"].fix
    assert "~73 GB needed" in checks["weights"].detail  # the FP8 checkpoint


def test_what_blocks_serving_is_named_with_its_fix(tmp_path, monkeypatch) -> None:
    _machine(monkeypatch, fake_nvidia_smi(tmp_path, "535.104.05", PCIE_TOPO), shm_gib=0.0625, disk_gb=40)
    closed = "http://127.0.0.1:9"  # nothing listens on the discard port
    checks = _by_name(doctor.diagnose(load_settings(ROOT / "configs" / "h100x2-fp8.yaml"), hub_probe=closed))
    assert checks["driver"].status == "FAIL" and "580" in checks["driver"].fix
    assert checks["interconnect"].status == "WARN" and "PHB" in checks["interconnect"].detail
    assert checks["shared memory"].status == "FAIL" and "--ipc=host" in checks["shared memory"].fix
    assert checks["weights"].status == "FAIL" and "HERMES_MODELS_DIR" in checks["weights"].fix
    assert checks["hub"].status == "FAIL" and "HF_ENDPOINT" in checks["hub"].fix


def test_too_few_gpus_and_no_gpu(tmp_path, monkeypatch) -> None:
    _machine(monkeypatch, fake_nvidia_smi(tmp_path, "580.95.05", NVLINK_TOPO, count=1), shm_gib=16, disk_gb=500)
    settings = load_settings(ROOT / "configs" / "h100x8-fp8-dp4.yaml")
    checks = _by_name(doctor.diagnose(settings, hub_probe="http://127.0.0.1:9"))
    assert checks["GPUs"].status == "FAIL" and "needs 8" in checks["GPUs"].detail
    assert checks["profile fit"].status == "FAIL"
    monkeypatch.setenv("PATH", "/nonexistent")
    assert _by_name(doctor.diagnose(settings, hub_probe="http://127.0.0.1:9"))["GPUs"].status == "FAIL"


def test_cli_exits_non_zero_when_something_blocks(tmp_path) -> None:
    env = {**os.environ, **fake_nvidia_smi(tmp_path, "580.95.05", NVLINK_TOPO), "HF_ENDPOINT": "http://127.0.0.1:9"}
    r = subprocess.run(
        [sys.executable, "-m", "server.cli", "doctor", "--config", "configs/h100x2-fp8.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL" in r.stdout and "interconnect" in r.stdout and "NVLink" in r.stdout
