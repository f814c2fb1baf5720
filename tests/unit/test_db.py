"""Keys and usage records in a real database: a SQLite file always, PostgreSQL when this machine
can start one (initdb/pg_ctl on PATH; as root they run as the ``postgres`` user)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from server.gateway.db import Database, hash_key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
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


def _exercise(db: Database) -> None:
    row, key = db.create_key("team", credit_limit=5.0, rpm=10)
    assert key.startswith("sk-hermes-") and row.key_hash == hash_key(key) and key not in row.hint + row.key_hash
    assert db.find_key(key) is not None and db.find_key(key + "x") is None
    rec = {
        "id": f"gen-{time.time_ns()}",
        "key_id": row.id,
        "model": "m",
        "route": "/v1/chat/completions",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "reasoning_tokens": 2,
        "cached_tokens": 0,
        "cost": 0.25,
        "cancelled": True,
    }
    db.add_records([rec, {**rec, "id": rec["id"] + "b", "cancelled": False}])
    assert db.spend(row.id) == pytest.approx(0.5)
    got = db.record(rec["id"])
    assert got is not None and got.cancelled and got.completion_tokens == 5
    (day,) = [r for r in db.daily_summary() if r["key_id"] == row.id]
    assert day["requests"] == 2 and day["cancelled"] == 1 and day["prompt"] == 20
    assert db.revoke(row.id) and db.find_key(key) is None and not db.revoke(row.id)


def test_sqlite_file(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    _exercise(Database(url))
    assert Database(url).record("nope") is None  # reopened: schema and rows persist


def test_postgres(postgres_url: str) -> None:
    _exercise(Database(postgres_url))
