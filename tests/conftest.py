from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never write the default database file in the working tree: in-memory unless a test
# (the gateway's end-to-end tests) points a server at a file of its own.
os.environ.setdefault("HERMES_DATABASE_URL", "sqlite://")

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "models" / "tiny-hermes"
TINY_PLAIN = ROOT / "models" / "tiny-hermes-plain"


def _need(path: Path) -> Path:
    if not (path / "config.json").exists():
        pytest.exit(f"{path} is missing: run `make tiny-model` (make test does it)", returncode=2)
    return path


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    return _need(TINY)


@pytest.fixture(scope="session")
def tiny_plain_dir() -> Path:
    return _need(TINY_PLAIN)


@pytest.fixture(scope="session")
def tokenizer(tiny_dir: Path):
    from server.hermes.prompt import load_tokenizer

    return load_tokenizer(str(tiny_dir))


@pytest.fixture(scope="session")
def plain_tokenizer(tiny_plain_dir: Path):
    from server.hermes.prompt import load_tokenizer

    return load_tokenizer(str(tiny_plain_dir))
