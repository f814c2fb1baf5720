from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests never write the default database file in the working tree: in-memory unless a test
# (the gateway's end-to-end tests) points a server at a file of its own.
os.environ.setdefault("HERMES_DATABASE_URL", "sqlite://")
# Every server the tests start runs vLLM in eager mode: it starts about 19 s sooner (no
# torch.compile of the model) and the suite starts some fifteen servers. The engine, its scheduler
# and its sampler are the same; decoding on this CPU build is about a tenth slower. Profiles (and
# the benchmarks) keep the compiled default.
os.environ.setdefault("HERMES_ENGINE__ENFORCE_EAGER", "1")

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    if not shutil.which("initdb") or not shutil.which("pg_ctl"):
        pytest.skip("PostgreSQL binaries not found: PostgreSQL test not run")
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a postgres user: PostgreSQL test not run")
        as_user = ["runuser", "-u", "postgres", "--"]
    tmp = tempfile.mkdtemp(prefix="hermes-pg-")
    if as_user:
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
    data, port = os.path.join(tmp, "data"), _free_port()
    subprocess.run([*as_user, "initdb", "-A", "trust", "-U", "hermes", "-D", data], check=True, capture_output=True)
    subprocess.run(
        [*as_user, "pg_ctl", "-D", data, "-l", os.path.join(tmp, "log"), "-o", f"-p {port} -k {tmp} -h 127.0.0.1", "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://hermes@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, "pg_ctl", "-D", data, "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
