"""The gateway's parts one by one, without an engine: keys, limits, admission and drain, usage."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from server.errors import APIError
from server.gateway import limits as limits_module
from server.gateway.admission import Admission, LocalSlots, SharedSlots
from server.gateway.db import Database
from server.gateway.key_limits import KeyLimits
from server.gateway.keys import KeyInfo, KeyStore, bearer_token
from server.gateway.limit_rules import RULES, Counts
from server.gateway.limits import Limits
from server.gateway.metrics import Metrics
from server.gateway.tables import RateEvent
from server.gateway.usage import UsageLog
from server.serving.record import UsageRecord
from server.timeutil import utcnow


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _key(**limits: float | int | None) -> KeyInfo:
    return KeyInfo(1, "test", "sk-hermes-ab", KeyLimits(limits.get("credit"), limits.get("rpm"), limits.get("tpm")))  # type: ignore[arg-type]


def _record(gen_id: str, key_id: int | None = 1, cost: float = 0.5) -> UsageRecord:
    return UsageRecord(
        id=gen_id,
        created_at=utcnow(),
        model="m",
        route="/v1/chat/completions",
        prompt_tokens=10,
        completion_tokens=5,
        reasoning_tokens=0,
        cached_tokens=0,
        cost=cost,
        latency_ms=12.0,
        ttft_ms=3.0,
        finish_reason="stop",
        native_finish_reason="stop",
        streamed=False,
        cancelled=False,
        error=None,
        key_id=key_id,
    )


async def test_keys_found_by_hash_only() -> None:
    db = Database("sqlite://")
    row, secret = db.create_key("ci", KeyLimits(rpm=5))
    store = KeyStore(db)
    found = await store.authenticate(secret)
    assert found is not None and found.id == row.id and found.limits.rpm == 5
    assert await store.authenticate(secret + "x") is None
    assert bearer_token([(b"authorization", b"Bearer " + secret.encode())]) == secret
    assert bearer_token([(b"authorization", b"Basic abc")]) is None


def _keyed(db: Database, **limits: float | int | None) -> KeyInfo:
    row, _ = db.create_key("ci", KeyLimits(limits.get("credit"), limits.get("rpm"), limits.get("tpm")))  # type: ignore[arg-type]
    return KeyInfo.of(row, b"test-secret")


def _limited(tmp_path: Path, **limits: float | int | None) -> tuple[Clock, Database, Limits, KeyInfo]:
    """A fresh database with one key holding ``limits``, and its limits on a fake clock."""
    clock, db = Clock(), Database(f"sqlite:///{tmp_path / 'u.db'}")
    return clock, db, Limits(db, clock), _keyed(db, **limits)


async def test_rpm_limit_counts_requests_in_a_sliding_minute(tmp_path: Path) -> None:
    clock, _, limits, key = _limited(tmp_path, rpm=2)
    first = await limits.check(key)
    assert first["X-RateLimit-Remaining"] == "1"
    await limits.check(key)
    with pytest.raises(APIError) as exc:
        await limits.check(key)
    assert exc.value.status == 429 and exc.value.headers["Retry-After"] == "60" and exc.value.reason == "rate_requests"
    clock.now += 60.5
    await limits.check(key)  # the first two left the window
    # A second Limits on the same database (another API process) counts in the same minute.
    await Limits(Database(f"sqlite:///{tmp_path / 'u.db'}"), clock).check(key)
    with pytest.raises(APIError):
        await limits.check(key)


async def test_tpm_limit_counts_finished_generations(tmp_path: Path) -> None:
    clock, _, limits, key = _limited(tmp_path, tpm=15)
    await limits.check(key)
    limits.record([_record("gen-a", key.id, cost=0.0).row()])  # 10 + 5 tokens
    with pytest.raises(APIError) as exc:
        await limits.check(key)
    assert exc.value.status == 429 and exc.value.reason == "rate_tokens"
    clock.now += 61
    await limits.check(key)


def _rate_events(db: Database) -> int:
    """How many rate events the table holds, every key's."""
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(RateEvent)) or 0)


async def test_events_past_the_minute_are_purged_when_usage_is_written(tmp_path: Path) -> None:
    """A check skips a key's events older than a minute; the usage writer deletes them (every
    key's, limited or not), so the table holds about a minute of events."""
    clock, db, limits, key = _limited(tmp_path, rpm=5)
    await limits.check(key)
    limits.record([_record("gen-a", key.id, cost=0.0).row()])
    assert _rate_events(db) == 2  # the admitted request and the generation's tokens
    clock.now += 61
    await limits.check(key)
    assert _rate_events(db) == 3  # the old two are past the window: not counted, not yet deleted
    limits.record([_record("gen-b", key.id, cost=0.0).row()])
    assert _rate_events(db) == 2  # the new request and its tokens


class _PerDayRule:
    """A rule that counts a day of events and enforces nothing (the key below sets no tpm)."""

    field = "tpm"
    window_s = 86_400.0

    def check(self, limit: Any, counts: Counts, now: float) -> dict[str, str]:
        return {}

    def admitted(self, s: Any, key_id: int, now: float) -> None:
        pass

    def settle(self, s: Any, keyed: list[dict[str, Any]], now: float) -> None:
        pass

    def report(self, limit: Any, usage: float) -> dict[str, Any]:
        return {}


async def test_events_are_kept_as_long_as_the_longest_rules_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule whose window is a day keeps a day of events: adding one needs no change to the
    purge (the worked example in docs/ARCHITECTURE.md)."""
    monkeypatch.setattr(limits_module, "RULES", (*RULES, _PerDayRule()))
    clock, db, limits, key = _limited(tmp_path, rpm=5)
    await limits.check(key)
    limits.record([_record("gen-a", key.id, cost=0.0).row()])
    clock.now += 3600
    limits.record([_record("gen-b", key.id, cost=0.0).row()])
    assert _rate_events(db) == 3  # an hour old, inside the day: kept
    clock.now += 86_401
    limits.record([_record("gen-c", key.id, cost=0.0).row()])
    assert _rate_events(db) == 1  # gen-b's tokens are a day and a second old: gone; gen-c's kept


async def test_credit_is_held_before_a_generation_and_settled_by_its_record(tmp_path: Path) -> None:
    """The most a request can cost is held first, so concurrent requests cannot overspend; the
    usage record replaces the hold with the real cost."""
    clock, _, limits, key = _limited(tmp_path, credit=1.0)
    limits.record([_record("gen-old", key.id, cost=0.6).row()])
    await limits.check(key)  # 0.6 < 1.0
    prices = (0.001, 0.01)  # USD per prompt / completion token
    await limits.hold_credit(key.id, 1.0, "gen-a", prompt_tokens=100, max_tokens=20, prices=prices, timeout_s=60)  # 0.3 held
    with pytest.raises(APIError) as exc:  # 0.6 + 0.3 + 0.3 > 1.0
        await limits.hold_credit(key.id, 1.0, "gen-b", prompt_tokens=100, max_tokens=20, prices=prices, timeout_s=60)
    assert exc.value.status == 402 and "can only afford 0" in exc.value.message
    with pytest.raises(APIError) as exc:
        await limits.hold_credit(key.id, 1.0, "gen-b", prompt_tokens=10, max_tokens=100, prices=prices, timeout_s=60)
    assert exc.value.message.endswith("can only afford 9.")  # (0.1 - 10 x 0.001) / 0.01
    limits.record([_record("gen-a", key.id, cost=0.05).row()])  # settled below its hold: 0.65 spent
    await limits.hold_credit(key.id, 1.0, "gen-b", prompt_tokens=100, max_tokens=20, prices=prices, timeout_s=60)
    with pytest.raises(APIError):  # 0.65 + 0.3 held: another 0.3 does not fit
        await limits.hold_credit(key.id, 1.0, "gen-c", prompt_tokens=100, max_tokens=20, prices=prices, timeout_s=60)
    clock.now += 60 + 600 + 1  # a hold whose process died lapses after its deadline
    await limits.hold_credit(key.id, 1.0, "gen-c", prompt_tokens=100, max_tokens=20, prices=prices, timeout_s=60)
    limits.record([_record("gen-c", key.id, cost=0.4).row()])  # 1.05 spent
    with pytest.raises(APIError) as exc:
        await limits.check(key)
    assert exc.value.status == 402 and exc.value.reason == "credit"


async def test_admission_slots_then_queue_then_429() -> None:
    adm = Admission(max_in_flight=1, max_queue=1)
    await adm.admit()
    waiter = asyncio.create_task(adm.admit())
    await asyncio.sleep(0)
    assert adm.waiting == 1 and not waiter.done()
    with pytest.raises(APIError) as exc:
        await adm.admit()
    assert exc.value.status == 429 and exc.value.headers["Retry-After"] and exc.value.reason == "capacity"
    await adm.release()
    await asyncio.wait_for(waiter, 1)
    assert adm.in_flight == 1 and adm.waiting == 0


def _admit_in_another_process(slots: SharedSlots, attempts: int, out: multiprocessing.Queue[tuple[int, int]]) -> None:
    """A second API process: tries ``attempts`` admissions against the same shared slots."""

    async def go() -> tuple[int, int]:
        adm = Admission(max_in_flight=3, max_queue=0, max_wait=0.05, slots=slots)
        admitted = refused = 0
        for _ in range(attempts):
            try:
                await adm.admit()
                admitted += 1
            except APIError:
                refused += 1
        return admitted, refused

    out.put(asyncio.run(go()))


async def test_shared_slots_are_exact_across_processes() -> None:
    """Two processes, one engine's three slots: together they get exactly three, and a slot
    freed in one process is taken by a waiter in the other."""
    ctx = multiprocessing.get_context("spawn")
    slots = SharedSlots()
    here = Admission(max_in_flight=3, max_queue=4, max_wait=5, slots=slots)
    await here.admit()
    await here.admit()
    out: multiprocessing.Queue[tuple[int, int]] = ctx.Queue()
    other = ctx.Process(target=_admit_in_another_process, args=(slots, 4, out))
    other.start()
    admitted, refused = await asyncio.to_thread(out.get, True, 60)
    other.join(10)
    assert (admitted, refused) == (1, 3)  # one slot was left; its queue was 0
    assert here.in_flight == 3
    waiter = asyncio.create_task(here.admit())  # queued: all three slots are taken
    await asyncio.sleep(0.02)
    assert not waiter.done() and here.waiting == 1
    with slots.lock():  # the other process frees its slot (it has exited; do it for it)
        slots.counts[0] -= 1
    await asyncio.wait_for(waiter, 1)  # found by polling, no notification crossed
    assert here.in_flight == 3 and here.waiting == 0


class _Run:
    def __init__(self, adm: Admission) -> None:
        self.adm = adm
        self.stopped: str | None = None

    def stop(self, reason: str) -> None:
        self.stopped = reason
        asyncio.get_running_loop().create_task(self.adm.release())


async def test_drain_waits_then_ends_what_is_left() -> None:
    adm = Admission(max_in_flight=4, max_queue=4)
    await adm.admit()
    run = _Run(adm)
    adm.started(run)
    await adm.drain(0.2)
    assert adm.draining and run.stopped == "shutdown" and adm.in_flight == 0
    adm.finished(run)
    assert adm.running == 0


async def test_drain_lets_finishing_work_finish() -> None:
    adm = Admission(max_in_flight=4, max_queue=4)
    await adm.admit()
    run = _Run(adm)
    adm.started(run)
    asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(adm.release()))
    await adm.drain(5)
    assert run.stopped is None and adm.in_flight == 0


async def test_usage_log_pending_until_written_once() -> None:
    db = Database("sqlite://")
    log = UsageLog(Metrics(), db)
    log.start()
    log.add(_record("gen-1", None))
    assert log.pending("gen-1") is not None  # answerable before the write
    for _ in range(100):
        if log.pending("gen-1") is None:
            break
        await asyncio.sleep(0.02)
    await log.flush()
    row = db.record("gen-1")
    assert row is not None and row.completion_tokens == 5 and row.cost == 0.5


def test_account_routes_parse_with_the_openrouter_sdk_models(tokenizer) -> None:
    """/api/v1/key and /api/v1/generation carry every field the official SDK requires."""
    from fastapi.testclient import TestClient
    from openrouter import components, operations

    from server.app import create_app
    from server.engine.fake import FakeEngine
    from server.hermes.prompt import PromptRenderer
    from server.settings import load_settings

    db = Database("sqlite://")
    _, secret = db.create_key("sdk", KeyLimits(5.0, 10, 1000))
    for auth in (True, False):
        settings = load_settings("configs/tiny-cpu.yaml", auth_required=auth)
        app = create_app(settings, engine=FakeEngine(tokenizer), renderer=PromptRenderer(tokenizer), db=db)
        headers = {"Authorization": f"Bearer {secret}", "User-Agent": "sdk-test/1.0"}
        with TestClient(app) as c:
            key = c.get("/api/v1/key", headers=headers).json()
            parsed = operations.GetCurrentKeyResponse.model_validate(key)
            assert parsed.data.rate_limit.note and parsed.data.is_management_key is False
            gen = c.post(
                "/api/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "Hi"}], "user": "end-user-7"},
                headers=headers,
            )
            record = c.get("/api/v1/generation", params={"id": gen.json()["id"]}, headers=headers).json()
            g = components.GenerationResponse.model_validate(record).data
            assert g.api_type == "completions" and g.external_user == "end-user-7" and g.user_agent == "sdk-test/1.0"
            assert g.tokens_completion and g.total_cost > 0


def test_old_database_gains_new_columns(tmp_path) -> None:
    import sqlalchemy

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:  # the generations table as an earlier version made it
        conn.execute(
            sqlalchemy.text(
                "CREATE TABLE generations (id VARCHAR(64) PRIMARY KEY, key_id INTEGER, created_at DATETIME, model VARCHAR(200), route VARCHAR(64), prompt_tokens INTEGER, completion_tokens INTEGER, reasoning_tokens INTEGER, cached_tokens INTEGER, cost FLOAT, latency_ms FLOAT, ttft_ms FLOAT, finish_reason VARCHAR(32), native_finish_reason VARCHAR(32), streamed BOOLEAN, cancelled BOOLEAN, error VARCHAR(500), referer VARCHAR(500), title VARCHAR(500))"
            )
        )
    db = Database(url)
    db.add_records([_record("gen-new", None).row() | {"external_user": "u1"}])
    row = db.record("gen-new")
    assert row is not None and row.external_user == "u1"


async def test_a_queued_request_gets_429_when_no_slot_comes_in_time() -> None:
    adm = Admission(max_in_flight=1, max_queue=8, max_wait=0.2)
    await adm.admit()
    started = asyncio.get_running_loop().time()
    with pytest.raises(APIError) as exc:
        await adm.admit()
    waited = asyncio.get_running_loop().time() - started
    assert exc.value.status == 429 and 0.15 < waited < 1.0 and "0.2 s" in exc.value.message
    assert adm.waiting == 0 and adm.in_flight == 1  # nothing leaked


async def test_retry_after_follows_the_observed_service_rate() -> None:
    clock, slots = Clock(), LocalSlots()
    adm = Admission(max_in_flight=2, max_queue=100, max_wait=30, clock=clock, slots=slots)
    assert adm.retry_after() == 30  # nothing finished yet: the wait bound is the best guess
    for _ in range(20):  # 20 slots freed over 10 s: 2 per second
        await adm.admit()
        await adm.release()
        clock.now += 0.5
    slots.counts[1] = 9  # as if nine requests were queued
    assert adm.retry_after() == 5  # (9 waiting + this one) / 2 per second
    clock.now += 120
    assert adm.retry_after() == 30  # the rate has aged out


async def test_a_flush_waits_for_the_write_under_way(tmp_path: Path) -> None:
    """A flush that stops the writer while it writes a batch returns only once that batch is in
    the database (before, the thread finished it unseen and the record was briefly nowhere)."""
    import time

    db = Database(f"sqlite:///{tmp_path / 'u.db'}")
    slow_add = db.add_records

    def add_slowly(records, settle=None):  # type: ignore[no-untyped-def]
        time.sleep(0.5)
        slow_add(records, settle)

    db.add_records = add_slowly  # type: ignore[method-assign]
    log = UsageLog(Metrics(), db)
    log.start()
    log.add(_record("gen-slow", key_id=None))
    await asyncio.sleep(0.1)  # the writer has taken it and is writing
    await log.flush()
    assert db.record("gen-slow") is not None and log.pending("gen-slow") is None
