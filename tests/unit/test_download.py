"""`hermes-server download` against a local stand-in for the Hugging Face Hub (HF_ENDPOINT): file
selection, HF_TOKEN, resuming a killed download, the completeness check, and `serve` refusing
missing weights with the command that fetches them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from server.cli import app
from server.download import DownloadError, check_disk, locate, safetensors_size, verify
from tests.hubstub import HubStub

REPO = "acme/tiny-repo"


def _make_repo(folder: Path) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for i, names in enumerate([["a.weight", "b.weight"], ["c.weight"]], start=1):
        shard = f"model-0000{i}-of-00002.safetensors"
        save_file({n: rng.standard_normal((64, 256)).astype(np.float32) for n in names}, str(folder / shard))
        weight_map |= dict.fromkeys(names, shard)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (folder / "tokenizer.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text("{}")
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    # Not needed for serving: must not be fetched.
    (folder / "README.md").write_text("# tiny")
    (folder / "pytorch_model.bin").write_bytes(b"\0" * 4096)
    (folder / "original").mkdir(exist_ok=True)
    (folder / "original" / "consolidated.00.pth").write_bytes(b"\0" * 4096)


def _cli(hub: HubStub, dest: Path, tmp: Path, **env: str) -> subprocess.Popen[str]:
    full = os.environ | {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp / "hf-home"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DOWNLOAD_TIMEOUT": "60",  # no in-process retry while a test holds a file back
        **env,
    }
    full.pop("HF_HUB_OFFLINE", None)
    cmd = [sys.executable, "-m", "server.cli", "download", "--repo", REPO, "--dir", str(dest)]
    return subprocess.Popen(cmd, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    _make_repo(tmp_path / "remote")
    return tmp_path / "remote"


def test_fetches_only_serving_files_with_token(repo_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "local"
    with HubStub(repo_dir, REPO) as hub:
        proc = _cli(hub, dest, tmp_path, HF_TOKEN="hf_testtoken")
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "complete and verified" in out
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert got == [
        "chat_template.jinja",
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    for name in got:
        assert (dest / name).read_bytes() == (repo_dir / name).read_bytes()
    assert "Bearer hf_testtoken" in hub.authorization
    assert verify(dest) == []


def test_killed_download_resumes_with_a_range_request(repo_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "local"
    shard = "model-00001-of-00002.safetensors"
    with HubStub(repo_dir, REPO) as hub:
        hub.stall_after[shard] = 40_000
        proc = _cli(hub, dest, tmp_path)
        assert hub.stalled.wait(60), "the downloader never reached the stalled shard"
        partial = dest / ".partial"
        deadline = time.time() + 20
        while time.time() < deadline and not any(p.stat().st_size >= 40_000 for p in partial.glob("*.part")):
            time.sleep(0.1)
        proc.kill()  # an interrupted download: power cut, Ctrl-C, OOM kill
        proc.communicate(timeout=30)
        assert not (dest / shard).exists()
        assert any(p.stat().st_size == 40_000 for p in partial.glob("*.part"))

        proc = _cli(hub, dest, tmp_path)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    gets = [r for r in hub.requests if r[0] == "GET" and r[1] == shard]
    assert gets[-1][2] == "bytes=40000-", gets  # the second run asked only for the rest
    assert (dest / shard).read_bytes() == (repo_dir / shard).read_bytes()
    assert verify(dest) == []


def test_missing_shard_is_reported(repo_dir: Path, tmp_path: Path) -> None:
    (repo_dir / "model-00002-of-00002.safetensors").unlink()  # the index still names it
    with HubStub(repo_dir, REPO) as hub:
        proc = _cli(hub, tmp_path / "local", tmp_path)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "incomplete" in err and "shard model-00002-of-00002.safetensors missing" in err


def test_verify_catches_truncation_and_missing_files(repo_dir: Path) -> None:
    shard = repo_dir / "model-00002-of-00002.safetensors"
    full = shard.stat().st_size
    assert safetensors_size(shard) == full
    shard.write_bytes(shard.read_bytes()[: full - 10])
    (repo_dir / "config.json").unlink()
    problems = verify(repo_dir)
    assert "config.json missing" in problems
    assert f"shard {shard.name} has {full - 10} bytes, its header says {full}" in problems


def test_disk_check_refuses_before_downloading(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="not enough disk space"):
        check_disk(tmp_path / "not" / "yet" / "there", 10**18)
    check_disk(tmp_path, 1024)


def test_serve_says_how_to_get_missing_weights(tmp_path: Path) -> None:
    where, why = locate("NousResearch/Hermes-4-70B-FP8")
    assert where is None and why is not None
    assert "hermes-server download --repo NousResearch/Hermes-4-70B-FP8" in why

    profile = tmp_path / "p.yaml"
    profile.write_text(f"model: {{path: {tmp_path / 'nowhere'}}}\nauth_required: false\n")
    result = CliRunner().invoke(app, ["serve", "--config", str(profile)])
    assert result.exit_code == 2
    assert "not on this machine" in result.output and "hermes-server download" in result.output


def test_local_folder_serves_offline(repo_dir: Path) -> None:
    where, why = locate(str(repo_dir))
    assert where == repo_dir and why is None
