"""Affinity routing over data-parallel replicas, per-key cache salts and service tiers: the router
alone (a fake clock), then through the app over a two-replica fake engine whose prefix cache is
kept per replica and salt (so cached tokens say where a request ran)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.engine.fake import FakeEngine
from server.gateway.db import Database
from server.gateway.key_limits import KeyServing
from server.hermes.prompt import PromptRenderer
from server.serving.affinity import KV_BLOCK_TOKENS, AffinityKey, ReplicaRouter, affinity_key
from server.settings import load_settings

SYSTEM = "You are a careful assistant. " * 40  # well over the four blocks prefix affinity needs


def _ids(n: int, start: int = 1000) -> list[int]:
    return list(range(start, start + n))


# ---- the router alone -------------------------------------------------------------------------
def test_a_session_keeps_its_replica_and_new_sessions_spread_evenly() -> None:
    router = ReplicaRouter(2)
    homes = {}
    for s in range(6):  # six sessions open one after another, each turn finishing before the next
        route = router.route(AffinityKey(session=f"s{s}"))
        router.release(route.replica)
        homes[s] = route.replica
    assert sorted(homes.values()) == [0, 0, 0, 1, 1, 1]  # placed by what each replica was given lately
    for _turn in range(3):
        for s in range(6):
            route = router.route(AffinityKey(session=f"s{s}"))
            assert (route.replica, route.reason) == (homes[s], "session")
            router.release(route.replica)


def test_a_hot_home_spills_the_request_but_keeps_the_home() -> None:
    router = ReplicaRouter(2, load_factor=1.25, spill_floor=1)
    first = router.route(AffinityKey(session="hot"))
    second = router.route(AffinityKey(session="hot"))  # loads 1+1 of a bound ceil(1.25 x 2 / 2) = 2: fits
    assert second.replica == first.replica
    third = router.route(AffinityKey(session="hot"))  # 3 of ceil(1.25 x 3 / 2) = 2: over, spills
    assert third.reason == "spill" and third.replica != first.replica
    for r in (first, second, third):
        router.release(r.replica)
    again = router.route(AffinityKey(session="hot"))
    assert (again.replica, again.reason) == (first.replica, "session")


def test_the_engines_reported_load_counts_when_it_is_higher() -> None:
    reported = [0, 0]
    router = ReplicaRouter(2, spill_floor=4, engine_loads=lambda: reported)
    home = router.route(AffinityKey(session="a"))
    router.release(home.replica)
    reported[home.replica] = 10  # other API processes' requests, as the engine reports them
    assert router.route(AffinityKey(session="a")).reason == "spill"
    assert router.loads()[home.replica] == 10


def test_below_the_floor_a_home_keeps_its_requests() -> None:
    router = ReplicaRouter(2, load_factor=1.25, spill_floor=4)
    routes = [router.route(AffinityKey(session="busy")) for _ in range(5)]
    assert [r.reason for r in routes] == ["new", "session", "session", "session", "spill"]


def test_prompts_find_the_replica_of_their_longest_known_prefix() -> None:
    router = ReplicaRouter(4, prefix_blocks=8, min_prefix_blocks=2)
    system = _ids(6 * KV_BLOCK_TOKENS)
    first = router.route(router.key_for(system + _ids(20, 9000), None, None))
    router.release(first.replica)
    # Turn two without a session: the same system prompt, then more conversation.
    follow = router.route(router.key_for(system + _ids(200, 5000), None, None))
    assert (follow.replica, follow.reason) == (first.replica, "prefix")
    router.release(follow.replica)
    other = router.route(router.key_for(_ids(6 * KV_BLOCK_TOKENS, 50_000), None, None))
    assert other.reason == "new" and other.replica != first.replica  # the least loaded lately


def test_short_prompts_have_no_prefix_key_and_salts_part_tenants() -> None:
    assert affinity_key(_ids(3 * KV_BLOCK_TOKENS), None, None, blocks=32, min_blocks=4) == AffinityKey()
    long = _ids(10 * KV_BLOCK_TOKENS)
    a, b = (affinity_key(long, None, salt, blocks=32, min_blocks=4) for salt in ("tenant-a", "tenant-b"))
    assert len(a.prefix) == 10 - 4 + 1 and not set(a.prefix) & set(b.prefix)
    assert affinity_key(long, "s", "tenant-a", 32, 4).session != affinity_key(long, "s", "tenant-b", 32, 4).session


def test_homes_are_forgotten_after_the_ttl() -> None:
    now = [0.0]
    router = ReplicaRouter(2, ttl_seconds=60, clock=lambda: now[0])
    router.release(router.route(AffinityKey(session="a")).replica)
    now[0] = 61
    assert router.route(AffinityKey(session="a")).reason == "new"


# ---- through the app, on a two-replica fake engine --------------------------------------------
@pytest.fixture()
def fake(tokenizer) -> FakeEngine:
    return FakeEngine(tokenizer, reply="Sure.", max_model_len=8192, replicas=2)


def _app(tokenizer, fake: FakeEngine, db: Database, **overrides: object) -> TestClient:
    settings = load_settings("configs/tiny-cpu.yaml", auth_required=True, **overrides)
    return TestClient(create_app(settings, engine=fake, renderer=PromptRenderer(tokenizer), db=db))


@pytest.fixture()
def db() -> Database:
    return Database("sqlite://")


@pytest.fixture()
def keyed(tokenizer, fake: FakeEngine, db: Database) -> Iterator[tuple[TestClient, dict[str, str]]]:
    _, key = db.create_key("agent")
    with _app(tokenizer, fake, db, pricing={"input_cache_read": 1e-8}) as c:
        yield c, {"Authorization": f"Bearer {key}"}


def _chat(c: TestClient, headers: dict[str, str], turns: list[str], **extra: object) -> dict:
    messages = [{"role": "system", "content": SYSTEM}] + [{"role": "user", "content": t} for t in turns]
    r = c.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 4, **extra}, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_named_session_stays_on_one_replica_and_is_recorded(keyed, fake: FakeEngine) -> None:
    c, headers = keyed
    turns: list[str] = []
    replicas = set()
    for n in range(4):
        turns.append(f"turn {n} " * 30)
        body = _chat(c, headers, turns, session_id="session-one")
        replicas.add(fake.replica_of[body["id"]])
        if n:  # everything before this turn's new text was cached on that replica
            assert body["usage"]["prompt_tokens_details"]["cached_tokens"] > body["usage"]["prompt_tokens"] // 2
    assert len(replicas) == 1
    other = _chat(c, {**headers, "x-session-id": "session-two"}, ["hello " * 30])
    assert fake.replica_of[other["id"]] not in replicas  # a new session goes to the other replica
    c.portal.call(c.app.state.hermes.usage.flush)  # type: ignore[attr-defined]
    record = c.get("/api/v1/generation", params={"id": body["id"]}, headers=headers).json()["data"]
    assert record["session_id"] == "session-one" and record["service_tier"] == "default"
    assert record["native_tokens_cached"] == body["usage"]["prompt_tokens_details"]["cached_tokens"]
    metrics = c.get("/metrics").text
    home = next(iter(replicas))
    assert f'hermes_replica_requests_total{{replica="{home}",route="session"}} 3.0' in metrics


def test_cached_tokens_are_priced_at_the_cache_read_price(keyed, fake: FakeEngine) -> None:
    c, headers = keyed
    _chat(c, headers, ["first"], session_id="priced")
    body = _chat(c, headers, ["first"], session_id="priced")  # the same prompt again: cached
    u = body["usage"]
    cached = u["prompt_tokens_details"]["cached_tokens"]
    assert cached > 0
    prompt_price = load_settings("configs/tiny-cpu.yaml").pricing.prompt
    expected = (u["prompt_tokens"] - cached) * prompt_price + cached * 1e-8
    assert u["cost_details"]["upstream_inference_prompt_cost"] == pytest.approx(expected)
    c.portal.call(c.app.state.hermes.usage.flush)  # type: ignore[attr-defined]
    record = c.get("/api/v1/generation", params={"id": body["id"]}, headers=headers).json()["data"]
    assert record["cache_discount"] == pytest.approx(cached * (prompt_price - 1e-8))
    listed = c.get("/api/v1/models").json()["data"][0]["pricing"]
    assert float(listed["input_cache_read"]) == pytest.approx(1e-8)


def test_each_key_has_its_own_cache_unless_it_shares(tokenizer, fake: FakeEngine, db: Database) -> None:
    keys = {name: db.create_key(name)[1] for name in ("alice", "bob")}
    keys["shared-1"] = db.create_key("shared-1", serving=KeyServing(shared_cache=True))[1]
    keys["shared-2"] = db.create_key("shared-2", serving=KeyServing(shared_cache=True))[1]
    with _app(tokenizer, fake, db) as c:

        def cached(name: str) -> int:
            body = _chat(c, {"Authorization": f"Bearer {keys[name]}"}, ["the same question " * 10], session_id="same")
            return int(body["usage"]["prompt_tokens_details"]["cached_tokens"])

        assert cached("alice") == 0
        assert cached("bob") == 0  # alice's identical prompt is not bob's to reuse
        assert cached("alice") > 0  # her own is
        assert cached("shared-1") == 0 and cached("shared-2") > 0  # opted out: one shared pool
    salts = {o.cache_salt for o in [fake.last_options] if o is not None}
    assert salts == {None}  # shared keys carry no salt


def test_service_tiers_map_to_engine_priorities_and_are_echoed(tokenizer, fake: FakeEngine, db: Database) -> None:
    _, key = db.create_key("batchy", serving=KeyServing(service_tier="flex"))
    headers = {"Authorization": f"Bearer {key}"}
    with _app(tokenizer, fake, db, engine={"scheduling_policy": "priority"}) as c:
        assert _chat(c, headers, ["hi"])["service_tier"] == "flex"  # the key's default
        assert fake.last_options is not None and fake.last_options.priority == 2
        assert _chat(c, headers, ["hi"], service_tier="priority")["service_tier"] == "priority"
        assert fake.last_options.priority == 0
        assert _chat(c, headers, ["hi"], service_tier="auto")["service_tier"] == "flex"
        r = c.post("/v1/responses", json={"input": "hi", "service_tier": "default", "max_output_tokens": 4}, headers=headers)
        assert r.json()["service_tier"] == "default" and fake.last_options.priority == 1
        msg = {"model": "nousresearch/hermes-4-70b", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
        r = c.post("/v1/messages", json=msg, headers=headers)
        assert r.json()["usage"]["service_tier"] == "standard"  # flex is no Anthropic tier: standard
        bad = c.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "service_tier": "gold"}, headers=headers
        )
        assert bad.status_code == 400 and "service_tier" in bad.json()["error"]["message"]
    with _app(tokenizer, fake, db) as c:  # first come, first served: every request at default
        assert _chat(c, headers, ["hi"], service_tier="priority")["service_tier"] == "default"
        assert fake.last_options is not None and fake.last_options.priority == 1


@pytest.mark.parametrize(
    ("user_id", "session"),
    [
        (json.dumps({"device_id": "d1", "account_uuid": "", "session_id": "3f1c-77"}), "3f1c-77"),
        ("user_abc_account_def_session_9a8b", "9a8b"),
        ("plain-user", "plain-user"),  # no session in it: the user itself
    ],
)
def test_messages_and_responses_name_their_sessions(keyed, fake: FakeEngine, user_id: str, session: str) -> None:
    c, headers = keyed
    msg = {"model": "nousresearch/hermes-4-70b", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    r = c.post("/v1/messages", json={**msg, "metadata": {"user_id": user_id}}, headers=headers)
    assert r.status_code == 200
    r2 = c.post("/v1/responses", json={"input": "hi", "prompt_cache_key": "pck-1", "max_output_tokens": 4}, headers=headers)
    assert r2.json()["prompt_cache_key"] == "pck-1"
    c.portal.call(c.app.state.hermes.usage.flush)  # type: ignore[attr-defined]
    for gen_id, expected in ((r.headers["X-Generation-Id"], session), (r2.headers["X-Generation-Id"], "pck-1")):
        record = c.get("/api/v1/generation", params={"id": gen_id}, headers=headers).json()["data"]
        assert record["session_id"] == expected
