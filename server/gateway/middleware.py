"""The gateway in front of the routes, as one pure ASGI middleware (not BaseHTTPMiddleware, which
would break streaming and client-disconnect detection): keys, then limits and admission for
generation routes, then the request counter."""

from __future__ import annotations

from typing import Any

from server.errors import APIError, send_error
from server.gateway.keys import KeyInfo, bearer_token
from server.state import AppState

_ALWAYS_OPEN = ("/health", "/ready")
_MODEL_LISTINGS = ("/v1/models", "/api/v1/models")


class GatewayMiddleware:
    def __init__(self, app: Any, state: AppState, generation_paths: frozenset[str]) -> None:
        self.app, self.state, self.generation_paths = app, state, generation_paths

    def _open(self, method: str, path: str) -> bool:
        """Paths answered without a key: probes, and by default metrics and the model listings."""
        g = self.state.settings.gateway
        if path in _ALWAYS_OPEN or (path == "/metrics" and not g.metrics_require_auth):
            return True
        return method == "GET" and path.startswith(_MODEL_LISTINGS) and not g.models_require_auth

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        path: str = scope["path"]
        status = [0]

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self._open(scope["method"], path):
                await self.app(scope, receive, send)
                return
            key = await self._authenticate(scope)
            scope.setdefault("state", {})["api_key"] = key
            if state.admission.draining:
                raise APIError(503, "Server is shutting down", reason="draining")
            if not (scope["method"] == "POST" and path in self.generation_paths):
                await self.app(scope, receive, counting_send)
                return
            headers = await state.limits.check(key) if key is not None else {}
            await state.admission.admit()
            try:
                await self.app(scope, receive, _with_headers(counting_send, headers))
            finally:
                await state.admission.release()
        except APIError as exc:
            state.metrics.rejected.labels(reason=exc.reason or "other").inc()
            await send_error(send, exc, path)
            status[0] = exc.status
        finally:
            if status[0]:
                state.metrics.requests.labels(route=_route_label(path), status=str(status[0])).inc()

    async def _authenticate(self, scope: Any) -> KeyInfo | None:
        if not self.state.settings.auth_required:
            return None
        token = bearer_token(scope.get("headers") or [])
        if not token:
            raise APIError(401, "No auth credentials found", reason="auth")
        key = await self.state.keys.authenticate(token)
        if key is None:
            raise APIError(401, "User not found.", reason="auth")
        return key


def _route_label(path: str) -> str:
    # Bounded label values: model ids and generation ids must not become label values.
    if "/models" in path:
        return "models"
    if "/responses/" in path:
        return "responses"
    if path.endswith("/messages/count_tokens"):
        return "count_tokens"
    for known in ("chat/completions", "completions", "responses", "messages", "generation", "key"):
        if path.endswith("/" + known):
            return known
    return "other"


def _with_headers(send: Any, headers: dict[str, str]) -> Any:
    if not headers:
        return send

    async def wrapped(message: Any) -> None:
        if message["type"] == "http.response.start":
            message = {
                **message,
                "headers": [*message.get("headers", []), *((k.lower().encode(), v.encode()) for k, v in headers.items())],
            }
        await send(message)

    return wrapped
