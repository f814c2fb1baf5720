"""What every API adapter does the same way: parse the body, name the request, build options."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from server.errors import bad_request, describe_validation_error
from server.jsonio import JSONDecodeError, loads
from server.protocol.openrouter import generation_id
from server.serving.plan import GenerationPlan, RequestInfo
from server.state import AppState, app_state

M = TypeVar("M", bound=BaseModel)


async def parse_body(request: Request, model: type[M]) -> M:
    raw = await request.body()
    try:
        data = loads(raw)
    except (JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise bad_request("Request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise bad_request(describe_validation_error(exc)) from exc


def request_info(request: Request, model: str | None, api: str, streamed: bool, user: object = None) -> RequestInfo:
    """A new generation id and who is asking: for the usage record and the response ids."""
    key = getattr(request.state, "api_key", None)
    h = request.headers
    return RequestInfo(
        gen_id=generation_id(),
        model=app_state(request).resolve_model(model),
        api=api,
        route=request.url.path,
        streamed=streamed,
        key_id=key.id if key is not None else None,
        referer=h.get("http-referer") or h.get("referer"),
        title=h.get("x-title") or h.get("x-openrouter-title"),
        user=str(user)[:200] if user is not None else None,
        user_agent=(h.get("user-agent") or "")[:500] or None,
        created=RequestInfo.now(),
    )


def response_base(state: AppState, plan: GenerationPlan) -> dict[str, Any]:
    """The fields every chat or completion body and chunk repeats."""
    info = plan.info
    return {
        "id": info.gen_id,
        "created": info.created,
        "model": info.model,
        "provider": state.settings.provider_name,
        "system_fingerprint": state.fingerprint,
    }
