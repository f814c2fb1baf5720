"""The Batch API over the fake engine: OpenAI's shape through the official ``openai`` SDK (files,
batches, output and error files), OpenRouter's shape checked with the ``openrouter`` SDK's models,
cancel, a restart mid-batch (every custom_id answered exactly once), the batch price."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from openai import OpenAI
from openrouter.components.batchlistresponse import BatchListResponse
from openrouter.components.batchobject import BatchObject
from sqlalchemy import create_engine, text

from server.app import create_app
from server.batches.runner import next_pause
from server.batches.store import BatchStore
from server.engine.fake import FakeEngine
from server.gateway.db import Database
from server.gateway.key_admin import KeyAdmin
from server.gateway.tables import BatchRow
from server.hermes.prompt import PromptRenderer
from server.settings import load_settings
from tests.shared import after_statement

MODEL = "nousresearch/hermes-4-70b"


def _app(tokenizer, db: Database, fake: FakeEngine) -> TestClient:
    settings = load_settings("configs/tiny-cpu.yaml", auth_required=True)
    return TestClient(create_app(settings, engine=fake, renderer=PromptRenderer(tokenizer), db=db))


@pytest.fixture()
def db() -> Database:
    return Database("sqlite://")


@pytest.fixture()
def key(db: Database) -> str:
    return KeyAdmin(db).create("batcher")[1]


@pytest.fixture()
def client(tokenizer, db: Database) -> Iterator[TestClient]:
    with _app(tokenizer, db, FakeEngine(tokenizer, reply="Batch answer.")) as c:
        yield c


def _jsonl(n: int, url: str = "/v1/chat/completions", bad: int | None = None) -> bytes:
    lines = []
    for i in range(n):
        body: dict = {"model": MODEL, "messages": [{"role": "user", "content": f"Question {i}"}], "max_tokens": 8}
        if i == bad:
            body["temperature"] = 7  # out of range: this request's answer is a 400
        lines.append(json.dumps({"custom_id": f"q-{i}", "method": "POST", "url": url, "body": body}))
    return ("\n".join(lines) + "\n").encode()


def _wait(get, done=("completed", "cancelled", "expired", "failed"), timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        obj = get()
        status = obj["status"] if isinstance(obj, dict) else obj.status
        if status in done or time.monotonic() > deadline:
            return obj
        time.sleep(0.1)


def test_openai_sdk_batch_round_trip(client: TestClient, key: str, db: Database) -> None:
    sdk = OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)
    upload = sdk.files.create(file=("in.jsonl", _jsonl(5, bad=3)), purpose="batch")
    assert upload.purpose == "batch" and upload.bytes > 0
    batch = sdk.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.status in ("validating", "in_progress") and batch.request_counts.total == 5
    done = _wait(lambda: sdk.batches.retrieve(batch.id))
    assert done.status == "completed" and done.request_counts.completed == 4 and done.request_counts.failed == 1
    out = [json.loads(line) for line in sdk.files.content(done.output_file_id).text.splitlines()]
    errors = [json.loads(line) for line in sdk.files.content(done.error_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in out) == ["q-0", "q-1", "q-2", "q-4"]
    assert all(o["response"]["status_code"] == 200 and o["error"] is None for o in out)
    assert out[0]["response"]["body"]["choices"][0]["message"]["content"] == "Batch answer."
    assert [e["custom_id"] for e in errors] == ["q-3"] and errors[0]["response"]["status_code"] == 400
    assert [b.id for b in sdk.batches.list()] == [batch.id]
    # Billed at the batch discount (half), recorded with the batch's id, at the batch tier.
    client.portal.call(client.app.state.hermes.usage.flush)  # type: ignore[attr-defined]
    record = db.record(out[0]["response"]["request_id"])
    assert record is not None and record.batch_id == batch.id
    body = out[0]["response"]["body"]
    full = load_settings("configs/tiny-cpu.yaml").pricing
    expected = body["usage"]["prompt_tokens"] * full.prompt + body["usage"]["completion_tokens"] * full.completion
    assert body["usage"]["cost"] == pytest.approx(expected / 2)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"endpoint": "/v1/embeddings"}, "endpoint"),
        ({"completion_window": "0h"}, "completion_window"),
        ({"input_file_id": "file-nope"}, "input_file_id"),
    ],
)
def test_bad_batches_are_400s(client: TestClient, key: str, kwargs: dict, needle: str) -> None:
    sdk = OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)
    upload = sdk.files.create(file=("in.jsonl", _jsonl(1)), purpose="batch")
    args = {"input_file_id": upload.id, "endpoint": "/v1/chat/completions", "completion_window": "24h", **kwargs}
    r = client.post("/v1/batches", json=args, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 400 and needle in r.json()["error"]["message"]
    dup = sdk.files.create(file=("d.jsonl", _jsonl(2).replace(b"q-1", b"q-0")), purpose="batch")
    r = client.post(
        "/v1/batches",
        json={**args, "input_file_id": dup.id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 400 and "appears twice" in r.json()["error"]["message"]


def test_openrouter_batch_shape(client: TestClient, key: str) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    requests = [
        {"custom_id": f"r{i}", "body": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}} for i in range(3)
    ]
    made = client.post(
        "/api/beta/batches", json={"endpoint": "/v1/chat/completions", "model": MODEL, "requests": requests}, headers=auth
    )
    assert made.status_code == 202
    first = BatchObject.model_validate(made.json())
    assert first.status == "validating" and first.results is None
    done = BatchObject.model_validate(_wait(lambda: client.get(f"/api/v1/batches/{first.id}", headers=auth).json()))
    assert done.status == "completed" and done.request_counts.completed == 3 and done.results is not None
    assert sorted(r.custom_id for r in done.results) == ["r0", "r1", "r2"]
    assert all(r.response is not None and r.error is None and r.response.status_code == 200 for r in done.results)
    assert done.usage is not None and done.usage.prompt_tokens > 0
    listed = BatchListResponse.model_validate(client.get("/api/v1/batches", headers=auth).json())
    assert [b.id for b in listed.data] == [first.id]
    msgs = {
        "endpoint": "/v1/messages",
        "model": MODEL,
        "requests": [{"custom_id": "m", "body": {"max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}}],
    }
    anthropic = client.post("/api/v1/batches", json=msgs, headers=auth).json()
    result = _wait(lambda: client.get(f"/api/v1/batches/{anthropic['id']}", headers=auth).json())["results"][0]
    assert result["response"]["body"]["type"] == "message"
    assert client.delete(f"/api/v1/batches/{first.id}", headers=auth).json()["deletion"] == {"openrouter": "deleted"}


def test_cancel_stops_what_has_not_started(tokenizer, db: Database, key: str) -> None:
    slow = FakeEngine(tokenizer, reply="Slow.")
    slow.first_token_delay = 0.3
    with _app(tokenizer, db, slow) as c:
        sdk = OpenAI(base_url="http://testserver/v1", api_key=key, http_client=c, max_retries=0)
        upload = sdk.files.create(file=("in.jsonl", _jsonl(40)), purpose="batch")
        batch = sdk.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
        time.sleep(0.5)
        assert sdk.batches.cancel(batch.id).status == "cancelling"
        done = _wait(lambda: sdk.batches.retrieve(batch.id))
        assert done.status == "cancelled" and done.request_counts.completed < 40
        answered = (
            [json.loads(x)["custom_id"] for x in sdk.files.content(done.output_file_id).text.splitlines()]
            if done.output_file_id
            else []
        )
        unrun = [json.loads(x) for x in sdk.files.content(done.error_file_id).text.splitlines()]
        assert len(answered) + len(unrun) == 40 and not set(answered) & {u["custom_id"] for u in unrun}
        assert all(u["error"]["code"] == "batch_cancelled" for u in unrun)


def test_a_restart_mid_batch_answers_every_request_once(tokenizer, db: Database, key: str) -> None:
    slow = FakeEngine(tokenizer, reply="Slow.")
    slow.first_token_delay = 1.0  # the runner takes 16 at a time (a quarter of 64 slots)
    with _app(tokenizer, db, slow) as c:
        sdk = OpenAI(base_url="http://testserver/v1", api_key=key, http_client=c, max_retries=0)
        upload = sdk.files.create(file=("in.jsonl", _jsonl(30)), purpose="batch")
        batch_id = sdk.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h").id
        deadline = time.monotonic() + 20
        while sdk.batches.retrieve(batch_id).request_counts.completed == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        # The first wave is answered, the rest not: the server stops now.

    with _app(tokenizer, db, FakeEngine(tokenizer, reply="Fast.")) as c:
        sdk = OpenAI(base_url="http://testserver/v1", api_key=key, http_client=c, max_retries=0)
        done = _wait(lambda: sdk.batches.retrieve(batch_id))
        assert done.status == "completed" and done.request_counts.completed == 30
        ids = [json.loads(x)["custom_id"] for x in sdk.files.content(done.output_file_id).text.splitlines()]
        assert sorted(ids) == sorted(f"q-{i}" for i in range(30))  # each once
        texts = {
            json.loads(x)["response"]["body"]["choices"][0]["message"]["content"]
            for x in sdk.files.content(done.output_file_id).text.splitlines()
        }
        assert texts == {"Slow.", "Fast."}  # answered partly before the restart, the rest after


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"endpoint": "/v1/chat/completions", "model": MODEL, "requests": []}, "requests"),
        ({"endpoint": "/v1/embeddings", "model": MODEL, "requests": [{"custom_id": "a", "body": {}}]}, "endpoint"),
        ({"endpoint": "/v1/chat/completions", "model": "x/y", "requests": [{"custom_id": "a", "body": {}}]}, "x/y"),
        ({"endpoint": "/v1/chat/completions", "model": MODEL, "requests": [{"body": {}}]}, "custom_id"),
    ],
)
def test_bad_openrouter_batches_are_400s(client: TestClient, key: str, body: dict, needle: str) -> None:
    r = client.post("/api/beta/batches", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text


def test_a_batch_is_never_seen_finished_without_its_files() -> None:
    """The final status and the output and error files are written in one transaction: a client
    polling the batch saw "cancelled" with no error file while the runner still wrote it."""
    from server.batches.store import BatchStore

    store = BatchStore(Database("sqlite://"))
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
    row = store.create(
        key_id=None,
        shape="openai",
        endpoint="/v1/chat/completions",
        model=None,
        window_hours=1,
        requests=[("a", body), ("b", body)],
    )
    (claimed,) = store.claim(1, 30)
    assert store.finish(claimed, 200, {"ok": True}, "gen-1")
    store.cancel(row.id, None)  # the other request never runs
    (ended,) = store.settle()
    seen = store.get(ended.id, None)
    assert seen is not None and seen.status == "cancelled"
    assert seen.output_file_id is not None and seen.error_file_id is not None
    assert store.file(seen.error_file_id, None) is not None


def test_an_idle_runner_polls_slowly_and_a_new_batch_wakes_it(client: TestClient, key: str) -> None:
    """Nothing to run: the poll backs off to seconds (two transactions every half second were most
    of an idle server's CPU); a batch created meanwhile starts at once, not at the next poll."""
    pauses = [0.5]
    for _ in range(6):
        pauses.append(next_pause(pauses[-1], busy=False, poll_seconds=0.5))
    assert pauses == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert next_pause(4.0, busy=True, poll_seconds=0.5) == 0.5
    time.sleep(3.6)  # idle since the app started: the runner now waits 4 s between polls
    sdk = OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)
    upload = sdk.files.create(file=("in.jsonl", _jsonl(2)), purpose="batch")
    started = time.monotonic()
    batch = sdk.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    done = _wait(lambda: sdk.batches.retrieve(batch.id), timeout=10)
    assert done.status == "completed"
    assert time.monotonic() - started < 2.0  # woken: an unwoken runner would sleep out its 4 s


@pytest.fixture()
def pg_store(postgres_url: str) -> BatchStore:
    """A database of its own on the session's PostgreSQL server: a claim takes the oldest pending
    requests of any batch, so no other test's batch may be in it."""
    name = "batches_" + secrets.token_hex(6)
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return BatchStore(Database(postgres_url.rsplit("/", 1)[0] + "/" + name))


def _pg_batch(store: BatchStore, n: int) -> BatchRow:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    requests = [(f"q-{i}", body) for i in range(n)]
    return store.create(
        key_id=None, shape="openai", endpoint="/v1/chat/completions", model=MODEL, window_hours=24, requests=requests
    )


def test_a_cancel_while_a_runner_claims_does_not_deadlock(pg_store: BatchStore) -> None:
    """A cancel that arrives while a runner's claim holds some of the batch's requests waits for
    the claim and then stops the rest. It must not lock the batch's row first: the claim holds
    the requests and then marks their batch in progress, so the other order is a lock cycle that
    PostgreSQL breaks by aborting one side (a 500 on the cancel, or a lost runner step)."""
    batch = _pg_batch(pg_store, 10)
    locked, cancel_started = threading.Event(), threading.Event()

    def hold_the_claim() -> None:  # the claim's requests are locked, their batch's row not yet
        locked.set()
        cancel_started.wait(10)
        time.sleep(1.0)  # time for the cancel to take what locks it can and wait on the rest

    with ThreadPoolExecutor(2) as pool, after_statement(pg_store.db.engine, "SKIP LOCKED", hold_the_claim):
        claiming = pool.submit(pg_store.claim, 4, 30.0)
        assert locked.wait(10)
        cancelling = pool.submit(pg_store.cancel, batch.id, None)
        cancel_started.set()
        claimed = claiming.result(timeout=30)  # a deadlock raises in one of the two
        cancelled = cancelling.result(timeout=30)
    assert len(claimed) == 4 and cancelled is not None and cancelled.status == "cancelling"
    assert Counter(item.state for item in pg_store.items(batch.id)) == Counter({"running": 4, "cancelled": 6})


def test_two_runners_settling_one_batch_end_it_once(pg_store: BatchStore) -> None:
    """Every server's runner settles every batch: two that find the same batch finished at the
    same moment must end it once, with one output file, not once each."""
    batch = _pg_batch(pg_store, 2)
    for c in pg_store.claim(2, 30.0):
        assert pg_store.finish(c, 200, {"id": c.custom_id}, None)
    both_looked = threading.Barrier(2, timeout=10)
    # Both have read the batch and counted no open requests; neither has written yet.
    with ThreadPoolExecutor(2) as pool, after_statement(pg_store.db.engine, "SELECT count(*)", both_looked.wait):
        ended = [row for rows in pool.map(lambda _: pg_store.settle(), range(2)) for row in rows]
    assert [row.status for row in ended] == ["completed"]
    outputs = [f for f in pg_store.files(None, "batch_output") if f.filename == f"{batch.id}_output.jsonl"]
    assert len(outputs) == 1
    row = pg_store.get(batch.id, None)
    assert row is not None and row.status == "completed" and row.output_file_id == outputs[0].id
