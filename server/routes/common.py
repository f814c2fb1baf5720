"""What every API adapter does the same way: name the request, and the OpenRouter response base.

Bodies are parsed by FastAPI from the request models (so the OpenAPI document describes them);
a validation error is a 400 naming the field, in the route's own error shape."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from fastapi import Request

from server.protocol.fields import SamplingFields, TraceFields
from server.protocol.models import quantization
from server.protocol.openrouter import generation_id
from server.protocol.routing_fields import ProviderPreferences, check_provider
from server.serving.plan import GenerationPlan
from server.serving.planning import BATCH_TIER
from server.state import AppState, app_state
from server.task import RequestInfo, Task
from server.tracing import RequestTrace

# Names the tools a request offered that the server left out (hosted tools it cannot run).
DROPPED_TOOLS_HEADER = "X-Hermes-Dropped-Tools"


# Longest session id kept (routing hashes it; the record keeps it).
_SESSION_MAX = 256


def request_info(
    request: Request,
    model: str | None,
    api: str,
    streamed: bool,
    user: str | None = None,
    *,
    session_id: str | None = None,
    session_hint: str | None = None,
    service_tier: str | None = None,
    fallbacks: list[str] | None = None,
    provider: ProviderPreferences | None = None,
    trace: TraceFields | None = None,
) -> RequestInfo:
    """A new generation id and who is asking: for the usage record, the response ids and routing.

    The session is the first of: the body's ``session_id`` (OpenRouter's), the ``x-session-id``
    header, the API's own hint (Responses ``prompt_cache_key``, the session in Anthropic's
    ``metadata.user_id``, Codex's ``session-id`` header), then the end ``user``."""
    state = app_state(request)
    served, variant = state.resolve_model(model, fallbacks)
    s = state.settings
    check_provider(provider, s.provider_name, quantization(s), (s.pricing.prompt, s.pricing.completion))
    key = getattr(request.state, "api_key", None)
    h = request.headers
    session = session_id or h.get("x-session-id") or session_hint or user
    tier = service_tier if service_tier not in (None, "auto") else (key.serving.service_tier if key is not None else None)
    batch = request.scope.get("hermes_batch")  # set only by the batch runner, never by a client
    rt: RequestTrace | None = getattr(request.state, "trace", None)
    if rt is not None and rt.recording and trace is not None:  # tracing off: not even built
        rt.root.set_attributes(trace.attributes())
    if batch is not None:
        tier = BATCH_TIER
    return RequestInfo(
        gen_id=generation_id(),
        model=served,
        api=api,
        route=request.url.path,
        streamed=streamed,
        key_id=key.id if key is not None else None,
        credit_limit=key.limits.credit_limit if key is not None else None,
        referer=h.get("http-referer") or h.get("referer"),
        title=h.get("x-title") or h.get("x-openrouter-title"),
        user=user[:200] if user is not None else None,
        user_agent=(h.get("user-agent") or "")[:500] or None,
        created=int(time.time()),
        session_id=session[:_SESSION_MAX] if session else None,
        cache_salt=key.cache_salt if key is not None else None,
        service_tier=tier,
        variant=variant,
        batch_id=batch["batch_id"] if batch is not None else None,
        default_max_tokens=key.serving.max_tokens if key is not None else None,
        trace=rt,
    )


def openrouter_info(request: Request, req: SamplingFields, api: str, session_header: str | None = None) -> RequestInfo:
    """``request_info`` for the OpenRouter-shaped bodies (chat, legacy completions, Responses);
    ``session_header``: a header that names the session when ``prompt_cache_key`` does not."""
    return request_info(
        request,
        req.model,
        api,
        req.stream,
        req.user,
        session_id=req.session_id,
        session_hint=req.prompt_cache_key or (request.headers.get(session_header) if session_header else None),
        service_tier=req.service_tier,
        fallbacks=req.models,
        provider=req.provider,
        trace=req.trace,
    )


async def client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body has been read: the next ASGI message is the
    disconnect). A non-streamed answer passes it to ``replay``/``collect`` so a client that gave
    up does not leave the engine generating for nobody."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def response_base(state: AppState, plan: GenerationPlan) -> dict[str, Any]:
    """The fields every chat or completion body and chunk repeats."""
    info = plan.info
    return {
        "id": info.gen_id,
        "created": info.created,
        "model": info.model,
        "provider": state.settings.provider_name,
        "system_fingerprint": state.fingerprint,
        "service_tier": plan.service_tier,
    }


def dropped_tools_header(task: Task) -> dict[str, str]:
    """The tools left out, by name: percent-encoded (a header is ASCII) and at most 1,000
    characters (the log has them all)."""
    if not task.dropped_tools:
        return {}
    names = ", ".join(quote(name, safe=" _-.:/@+") for name in task.dropped_tools)
    return {DROPPED_TOOLS_HEADER: names if len(names) <= 1000 else names[:997] + "..."}
