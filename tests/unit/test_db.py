"""Keys and usage records in a real database: a SQLite file always, PostgreSQL when this machine
can start one (initdb/pg_ctl on PATH; as root they run as the ``postgres`` user)."""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import select

from server.gateway.db import Database, hash_key, purge
from server.gateway.key_admin import KeyAdmin
from server.gateway.key_limits import KeyLimits
from server.gateway.limits import Limits
from server.gateway.tables import RateEvent
from tests.shared import after_statement


def _record(key_id: int) -> dict[str, object]:
    return {
        "id": f"gen-{time.time_ns()}",
        "key_id": key_id,
        "model": "m",
        "route": "/v1/chat/completions",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "reasoning_tokens": 2,
        "cached_tokens": 0,
        "cost": 0.25,
        "cancelled": True,
    }


def _exercise(db: Database) -> None:
    row, key = db.create_key("team", KeyLimits(credit_limit=5.0, rpm=10))
    assert key.startswith("sk-hermes-") and row.key_hash == hash_key(key) and key not in row.hint + row.key_hash
    assert db.find_key(key) is not None and db.find_key(key + "x") is None
    rec = _record(row.id)
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


def test_two_usage_writers_sharing_keys_do_not_deadlock(postgres_url: str) -> None:
    """Two servers write usage batches that name the same two keys in opposite orders. Each adds
    the batch's spend to the keys' rows in one transaction; were the rows locked in the batch's
    order, each would hold one key the other waits for, and PostgreSQL would abort one of them."""
    db = Database(postgres_url)
    limits = Limits(db)
    (first, _), (second, _) = db.create_key("one"), db.create_key("two")

    def usage(key_id: int, n: int) -> dict[str, object]:
        return {**_record(key_id), "id": f"gen-{time.time_ns()}-{key_id}-{n}", "cost": 0.5}

    one_key_each = threading.Barrier(2, timeout=2)

    def after_a_key_update() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):  # the other waits on this row
            one_key_each.wait()

    with ThreadPoolExecutor(2) as pool, after_statement(db.engine, "UPDATE api_keys", after_a_key_update):
        batches = [[usage(first.id, 0), usage(second.id, 0)], [usage(second.id, 1), usage(first.id, 1)]]
        list(pool.map(limits.record, batches))  # a deadlock raises here
    assert KeyAdmin(db).spend(first.id)["usage"] == pytest.approx(1.0)
    assert KeyAdmin(db).spend(second.id)["usage"] == pytest.approx(1.0)


def test_a_purge_never_waits_on_rows_another_purge_holds(postgres_url: str) -> None:
    """Every server purges the same stale rows (old rate events, expired stored responses). While
    one purge's transaction is open, another deletes the stale rows it does not hold and returns
    at once, instead of waiting on (and possibly cycling with) the first."""
    db = Database(postgres_url)
    key_id = db.create_key("purge")[0].id
    with db.session() as s:
        s.add_all([RateEvent(key_id=key_id, at=float(i), requests=1, tokens=0) for i in range(4)])
        s.add(RateEvent(key_id=key_id, at=1e12, requests=1, tokens=0))  # far in the future: not stale
    mine = (RateEvent.key_id == key_id, RateEvent.at < 100)
    with ThreadPoolExecutor(1) as pool, db.session() as first:  # on a failure, the first rolls back first
        held = first.scalars(select(RateEvent.id).where(*mine, RateEvent.at < 2).with_for_update()).all()
        assert len(held) == 2  # two stale rows, held by the open transaction
        second = pool.submit(lambda: _purge_in_own_transaction(db, *mine))
        second.result(timeout=5)  # a plain DELETE would wait here until the first commits
        purge(first, RateEvent.id, *mine)
    with db.session() as s:
        assert s.scalars(select(RateEvent.at).where(RateEvent.key_id == key_id)).all() == [1e12]


def _purge_in_own_transaction(db: Database, *where: Any) -> None:
    with db.session() as s:
        purge(s, RateEvent.id, *where)
