"""Schema-driven fuzzing of every route from the app's own OpenAPI document (schemathesis, fake
engine, fixed seed, a bounded number of examples): no 5xx, and every body — streamed or not — is
JSON with only finite numbers."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from server.app import create_app
from server.engine.fake import FakeEngine
from server.hermes.prompt import PromptRenderer, load_tokenizer
from server.settings import load_settings
from tests.conftest import TINY
from tests.shared import finite, strict_json

_tokenizer = load_tokenizer(str(TINY))
_engine = FakeEngine(_tokenizer, reply="<think>\nhm\n</think>\nFine. 3.5 < 4", max_model_len=4096)
_engine._ready = True
_app = create_app(load_settings("configs/tiny-cpu.yaml"), engine=_engine, renderer=PromptRenderer(_tokenizer))


async def _without_lifespan(scope: dict, receive: Any, send: Any) -> None:
    """The app, its lifespan skipped: schemathesis opens and closes one per call, and a closing
    lifespan drains the server. The fake engine is up already."""
    if scope["type"] != "lifespan":
        await _app(scope, receive, send)
        return
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


schema = schemathesis.openapi.from_asgi("/openapi.json", _without_lifespan)


@pytest.mark.filterwarnings("ignore")
@schema.parametrize()
@settings(max_examples=25, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_only_finite_json(case: schemathesis.Case) -> None:
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])
    text = response.text
    content_type = response.headers.get("content-type") or [""]  # schemathesis keeps header values as lists
    if content_type[0].startswith("text/event-stream"):
        bodies = [line[6:] for line in text.splitlines() if line.startswith("data: {")]
    elif text:
        bodies = [text]
    else:
        bodies = []
    for body in bodies:
        assert finite(strict_json(body)), body[:500]
