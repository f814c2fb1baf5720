"""`hermes-server config --show`: every setting, its value and where it came from."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from server.cli import app
from server.config_report import setting_rows
from server.settings import load_settings

PROFILE = Path("configs/tiny-cpu.yaml")


def test_each_source_is_named(monkeypatch) -> None:
    monkeypatch.setenv("HERMES_ENGINE__MAX_NUM_SEQS", "7")
    settings = load_settings(PROFILE, port=9)
    rows = {r.key: r for r in setting_rows(settings, PROFILE, {"port": 9, "host": None})}
    assert rows["port"].source == "flag" and rows["port"].value == "9"
    assert rows["engine.max_num_seqs"].source == "environment" and rows["engine.max_num_seqs"].value == "7"
    assert rows["model.path"].source == "profile"
    assert rows["gateway.drain_timeout_seconds"].source == "default"
    assert all(r.description for r in rows.values()), [k for k, r in rows.items() if not r.description]


def test_cli_prints_the_table(monkeypatch) -> None:
    monkeypatch.delenv("HERMES_ENGINE__MAX_NUM_SEQS", raising=False)
    result = CliRunner().invoke(app, ["config", "--show", "--config", str(PROFILE)])
    assert result.exit_code == 0, result.output
    assert "engine.max_model_len" in result.output and "profile" in result.output
