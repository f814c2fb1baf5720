"""Keys and usage records in a real database: a SQLite file always, PostgreSQL when this machine
can start one (initdb/pg_ctl on PATH; as root they run as the ``postgres`` user)."""

from __future__ import annotations

import time

import pytest

from server.gateway.db import Database, hash_key
from server.gateway.key_admin import KeyAdmin
from server.gateway.key_limits import KeyLimits


def _exercise(db: Database) -> None:
    row, key = db.create_key("team", KeyLimits(credit_limit=5.0, rpm=10))
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
    assert KeyAdmin(db).spend(row.id)["usage"] == pytest.approx(0.5)
    got = db.record(rec["id"])
    assert got is not None and got.cancelled and got.completion_tokens == 5
    (day,) = [r for r in db.daily_summary() if r["key_id"] == row.id]
    assert day["requests"] == 2 and day["cancelled"] == 1 and day["prompt"] == 20
    admin = KeyAdmin(db)
    assert admin.delete(row.key_hash) and db.find_key(key) is None and not admin.delete(row.key_hash)


def test_sqlite_file(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    _exercise(Database(url))
    assert Database(url).record("nope") is None  # reopened: schema and rows persist


def test_postgres(postgres_url: str) -> None:
    _exercise(Database(postgres_url))
