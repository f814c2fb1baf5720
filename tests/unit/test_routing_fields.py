"""OpenRouter's routing fields on a one-model, one-provider server: model variants, ``models``
fallbacks, ``provider`` preferences, and the fixed model paths beside the model-id route."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.engine.fake import FakeEngine
from server.gateway.db import Database
from server.hermes.prompt import PromptRenderer
from server.settings import load_settings

MSG = [{"role": "user", "content": "Hi"}]
MODEL = "nousresearch/hermes-4-70b"


@pytest.fixture()
def db() -> Database:
    return Database("sqlite://")


@pytest.fixture()
def client(tokenizer, db: Database) -> Iterator[TestClient]:
    app = create_app(
        load_settings("configs/tiny-cpu.yaml"), engine=FakeEngine(tokenizer), renderer=PromptRenderer(tokenizer), db=db
    )
    with TestClient(app) as c:
        yield c


def _chat(c: TestClient, **body: object):  # type: ignore[no-untyped-def]
    return c.post("/api/v1/chat/completions", json={"messages": MSG, "max_tokens": 4, **body})


@pytest.mark.parametrize("variant", ["nitro", "floor", "exacto"])
def test_routing_variants_resolve_to_the_model_and_are_recorded(client: TestClient, db: Database, variant: str) -> None:
    r = _chat(client, model=f"{MODEL}:{variant}")
    assert r.status_code == 200 and r.json()["model"] == MODEL
    client.portal.call(client.app.state.hermes.usage.flush)  # type: ignore[attr-defined]
    record = db.record(r.json()["id"])
    assert record is not None and record.variant == variant
    assert client.get(f"/v1/models/{MODEL}:{variant}").json()["id"] == MODEL


def test_catalog_variants_and_other_models_are_not_served(client: TestClient) -> None:
    for model in (f"{MODEL}:free", f"{MODEL}:thinking", "openai/gpt-4o:nitro"):
        r = _chat(client, model=model)
        assert r.status_code == 400 and r.json()["error"]["message"] == f"{model} is not a valid model ID"


def test_models_fallbacks_use_the_first_served(client: TestClient) -> None:
    assert _chat(client, model="openai/gpt-4o", models=["anthropic/claude-3", f"{MODEL}:nitro"]).status_code == 200
    assert _chat(client, models=["x/y", MODEL]).status_code == 200  # no model: the list alone
    r = _chat(client, model="openai/gpt-4o", models=["anthropic/claude-3"])
    assert r.status_code == 400 and "openai/gpt-4o is not a valid model ID" in r.json()["error"]["message"]
    r = client.post("/v1/responses", json={"input": "hi", "model": "x/y", "models": [MODEL], "max_output_tokens": 4})
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("provider", "ok"),
    [
        ({"only": ["hermes-server"]}, True),
        ({"only": ["Hermes-Server", "together"]}, True),
        ({"only": ["together"]}, False),
        ({"ignore": ["hermes-server"]}, False),
        ({"ignore": ["together"]}, True),
        ({"order": ["together"]}, True),  # fallbacks allowed: this server is the fallback
        ({"order": ["together"], "allow_fallbacks": False}, False),
        ({"sort": "throughput", "data_collection": "deny", "zdr": True}, True),
        ({"quantizations": ["fp32", "bf16"]}, True),  # the tiny profile's float32
        ({"quantizations": ["fp8"]}, False),
        ({"max_price": {"prompt": 1, "completion": 1}}, True),  # USD per million tokens
        ({"max_price": {"completion": 0.1}}, False),
    ],
)
def test_provider_preferences_this_server_cannot_meet_are_a_404(client: TestClient, provider: dict, ok: bool) -> None:
    r = _chat(client, provider=provider)
    if ok:
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == 404 and "No" in error["message"]
    if "only" in provider or "ignore" in provider or "order" in provider:
        assert error["message"] == "No allowed providers are available for the selected model."
        assert error["metadata"]["available_providers"] == ["hermes-server"]


def test_fixed_model_paths_are_not_model_ids(client: TestClient) -> None:
    assert client.get("/api/v1/models/count").json() == {"data": {"count": 1}}
    listed = client.get("/api/v1/models/user").json()
    assert [m["id"] for m in listed["data"]] == [MODEL]
    assert client.get("/api/v1/models/nobody/nothing").status_code == 404
