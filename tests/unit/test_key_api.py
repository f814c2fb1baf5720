"""OpenRouter's key API, credits and activity over the fake engine, each response parsed with the
official ``openrouter`` SDK's own models (what its client would accept)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from openrouter.components.activityresponse import ActivityResponse
from openrouter.operations.createkeys import CreateKeysResponse
from openrouter.operations.getcredits import GetCreditsResponse
from openrouter.operations.getkey import GetKeyResponse
from openrouter.operations.list import ListResponse
from openrouter.operations.updatekeys import UpdateKeysResponse

from server.app import create_app
from server.engine.fake import FakeEngine
from server.gateway.db import Database
from server.gateway.key_admin import KeyAdmin, KeyChange
from server.gateway.key_limits import KeyLimits
from server.gateway.limits import Limits
from server.hermes.prompt import PromptRenderer
from server.settings import load_settings
from server.timeutil import period_start, utcnow

CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}


@pytest.fixture()
def db() -> Database:
    return Database("sqlite://")


@pytest.fixture()
def app(tokenizer, db: Database) -> Iterator[tuple[TestClient, dict[str, str]]]:
    _, admin = KeyAdmin(db).create("ops", management=True)
    settings = load_settings("configs/tiny-cpu.yaml", auth_required=True)
    with TestClient(create_app(settings, engine=FakeEngine(tokenizer), renderer=PromptRenderer(tokenizer), db=db)) as c:
        yield c, {"Authorization": f"Bearer {admin}"}


def _flush(c: TestClient) -> None:
    c.portal.call(c.app.state.hermes.usage.flush)  # type: ignore[attr-defined]


def test_a_management_key_creates_lists_changes_and_deletes_keys(app) -> None:
    c, admin = app
    made = c.post("/api/v1/keys", json={"name": "team-a", "limit": 5, "limit_reset": "daily"}, headers=admin)
    assert made.status_code == 201
    created = CreateKeysResponse.model_validate(made.json())
    key, key_hash = created.key, created.data.hash
    assert created.data.limit == 5 and created.data.limit_reset == "daily" and created.data.name == "team-a"
    user = {"Authorization": f"Bearer {key}"}
    assert c.post("/v1/chat/completions", json=CHAT, headers=user).status_code == 200
    _flush(c)
    got = GetKeyResponse.model_validate(c.get(f"/api/v1/keys/{key_hash}", headers=admin).json())
    assert got.data.usage > 0 and got.data.usage_daily == got.data.usage
    assert got.data.limit_remaining == pytest.approx(5 - got.data.usage)
    listed = ListResponse.model_validate(c.get("/api/v1/keys", headers=admin).json())
    assert [k.hash for k in listed.data] == [key_hash]  # the management key itself is not listed
    changed = c.patch(f"/api/v1/keys/{key_hash}", json={"disabled": True, "limit": None, "name": "team-a2"}, headers=admin)
    updated = UpdateKeysResponse.model_validate(changed.json())
    assert updated.data.disabled and updated.data.limit is None and updated.data.name == "team-a2"
    c.app.state.hermes.keys._cache.clear()  # type: ignore[attr-defined]  (a change is seen within 5 s)
    assert c.post("/v1/chat/completions", json=CHAT, headers=user).status_code == 401
    assert c.get("/api/v1/keys", headers=admin).json()["data"] == []  # disabled: listed only when asked
    assert len(c.get("/api/v1/keys", params={"include_disabled": "true"}, headers=admin).json()["data"]) == 1
    assert c.delete(f"/api/v1/keys/{key_hash}", headers=admin).json() == {"deleted": True}
    assert c.get(f"/api/v1/keys/{key_hash}", headers=admin).status_code == 404
    assert c.delete(f"/api/v1/keys/{key_hash}", headers=admin).status_code == 404


def test_only_management_keys_manage_and_they_generate_nothing(app, db: Database) -> None:
    c, admin = app
    _, plain = KeyAdmin(db).create("plain")
    user = {"Authorization": f"Bearer {plain}"}
    for call in (lambda h: c.get("/api/v1/keys", headers=h), lambda h: c.post("/api/v1/keys", json={"name": "x"}, headers=h)):
        r = call(user)
        assert r.status_code == 401 and "management key" in r.json()["error"]["message"]
    r = c.post("/v1/chat/completions", json=CHAT, headers=admin)
    assert r.status_code == 403 and "cannot be used for generations" in r.json()["error"]["message"]
    assert c.get("/api/v1/key", headers=admin).json()["data"]["is_management_key"] is True


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"name": "x", "limit_reset": "hourly"}, "limit_reset"),
        ({"name": "x", "limit": -1}, "limit"),
        ({"name": ""}, "name"),
        ({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ],
)
def test_bad_key_requests_are_400s(app, body: dict, needle: str) -> None:
    c, admin = app
    r = c.post("/api/v1/keys", json=body, headers=admin)
    assert r.status_code == 400 and needle in r.json()["error"]["message"]


def test_an_expired_key_is_refused(app, db: Database) -> None:
    c, _ = app
    soon = utcnow() + dt.timedelta(hours=1)
    row, key = KeyAdmin(db).create("temp", expires_at=soon)
    assert c.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    KeyAdmin(db).update(row.key_hash, KeyChange(expires_at=utcnow()))
    c.app.state.hermes.keys._cache.clear()  # type: ignore[attr-defined]
    assert c.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_a_resetting_limit_counts_spend_since_the_reset(db: Database) -> None:
    """Spend before today's reset does not count against a daily limit; all of it counts
    against a limit that never resets."""
    admin = KeyAdmin(db)
    daily, _ = admin.create("daily", KeyLimits(credit_limit=1.0), limit_reset="daily")
    forever, _ = admin.create("forever", KeyLimits(credit_limit=1.0))
    yesterday = period_start("daily", utcnow()) - dt.timedelta(hours=1)
    base = {"model": "m", "route": "/r", "prompt_tokens": 1, "completion_tokens": 1, "reasoning_tokens": 0, "cached_tokens": 0}
    rows = [
        {"id": f"g-{k.id}-{n}", "key_id": k.id, "created_at": when, "cost": 0.6, **base}
        for k in (daily, forever)
        for n, when in enumerate((yesterday, utcnow()))
    ]
    Limits(db).record(rows)
    with db.locked_key(daily.id) as s:
        assert db.committed(s, daily.id, time.time()) == pytest.approx(0.6)
    with db.locked_key(forever.id) as s:
        assert db.committed(s, forever.id, time.time()) == pytest.approx(1.2)


def test_credits_and_activity(app, db: Database) -> None:
    c, admin = app
    limited, limited_key = KeyAdmin(db).create("limited", KeyLimits(credit_limit=2.5))
    _, other_key = KeyAdmin(db).create("other")
    for key, n in ((limited_key, 2), (other_key, 1)):
        for _ in range(n):
            assert c.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    _flush(c)
    own = {"Authorization": f"Bearer {limited_key}"}
    credits = GetCreditsResponse.model_validate(c.get("/api/v1/credits", headers=own).json()).data
    assert credits.total_credits == 2.5 and 0 < credits.total_usage < 2.5
    mine = ActivityResponse.model_validate(c.get("/api/v1/activity", headers=own).json()).data
    assert [(a.requests, a.model) for a in mine] == [(2, "nousresearch/hermes-4-70b")]
    assert mine[0].usage == pytest.approx(credits.total_usage) and mine[0].date_ == str(utcnow().date())
    everyone = ActivityResponse.model_validate(c.get("/api/v1/activity", headers=admin).json()).data
    assert sum(a.requests for a in everyone) == 3
    one = c.get("/api/v1/activity", params={"api_key_hash": limited.key_hash}, headers=admin).json()["data"]
    assert sum(a["requests"] for a in one) == 2
    assert c.get("/api/v1/activity", params={"date": "2001-01-01"}, headers=admin).status_code == 400
    assert c.get("/api/v1/activity", params={"date": str(utcnow().date())}, headers=admin).json()["data"]


def test_completion_token_defaults_from_the_profile_and_the_key(tokenizer, db: Database) -> None:
    from server.gateway.key_limits import KeyServing

    _, plain = KeyAdmin(db).create("plain")
    _, short = KeyAdmin(db).create("short", serving=KeyServing(max_tokens=3))
    fake = FakeEngine(tokenizer, reply="word " * 50)
    settings = load_settings("configs/tiny-cpu.yaml", auth_required=True, sampling={"max_tokens": 7})
    with TestClient(create_app(settings, engine=fake, renderer=PromptRenderer(tokenizer), db=db)) as c:

        def used(key: str, **extra: object) -> int:
            body = {"messages": [{"role": "user", "content": "Hi"}], **extra}
            r = c.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200, r.text
            return int(r.json()["usage"]["completion_tokens"])

        assert used(plain) == 7  # the profile's ceiling for requests that set none
        assert used(short) == 3  # the key's own
        assert used(short, max_tokens=10) == 10  # a request's own max_tokens wins
        listed = c.get("/api/v1/models").json()["data"][0]
        assert listed["top_provider"]["max_completion_tokens"] == 7
