"""The app's middleware, pure ASGI (not BaseHTTPMiddleware, which would break streaming and
client-disconnect detection): the gateway in front of the routes — keys, then limits and
admission for generation routes, then the request counter — and the request-body limit.

App wiring, not a gateway part: it puts the gateway's parts (``server/gateway/``) in order on
the app's state."""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import Span

from server.errors import APIError, ErrorShapes
from server.gateway.keys import KeyInfo, bearer_token
from server.routes.adapter import label_for
from server.state import AppState
from server.tracing import NO_TRACE, RequestTrace, end_request

_ALWAYS_OPEN = ("/health", "/ready")
_MODEL_LISTINGS = ("/v1/models", "/api/v1/models")


class GatewayMiddleware:
    def __init__(
        self, app: Any, state: AppState, errors: ErrorShapes, generation_paths: frozenset[str], labels: list[tuple[str, str]]
    ) -> None:
        self.app, self.state, self.errors = app, state, errors
        self.generation_paths, self.labels = generation_paths, labels

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
        method: str = scope["method"]
        if self._open(method, path):
            await self.app(scope, receive, send)
            return
        status = [0]
        key: KeyInfo | None = None
        route = label_for(self.labels, path)
        generation = method == "POST" and path in self.generation_paths
        rt = self._trace(scope, f"{method} {path if generation else route}", route)
        responding: list[Span] = []

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                responding.append(rt.start_child("respond"))  # ends with the response's last byte
            await send(message)

        try:
            internal = scope.get("hermes_batch")  # the batch runner's own call (batches/runner.py)
            if internal is not None:
                key = internal["key"]
            else:
                with rt.span("gateway.auth"):
                    key = await self._authenticate(scope)
            scope["state"]["api_key"] = key
            if key is not None:
                rt.root.set_attributes({"hermes.key.id": key.id, "hermes.key.label": key.label})
            if state.admission.draining:
                raise APIError(503, "Server is shutting down", reason="draining")
            if not generation:
                await self.app(scope, receive, counting_send)
                return
            if key is not None and key.management:
                raise APIError(403, "A management key manages keys; it cannot be used for generations", reason="auth")
            with rt.span("gateway.limits"):
                headers = await state.limits.check(key) if key is not None else {}
            with rt.span("gateway.queue"):
                await state.admission.admit()
            try:
                await self.app(scope, receive, _with_headers(counting_send, headers))
            finally:
                await state.admission.release()
        except APIError as exc:
            state.metrics.rejected.labels(reason=exc.reason or "other").inc()
            await self.errors.send(send, exc, path)
            status[0] = exc.status
        finally:
            for span in responding:
                span.end()
            end_request(rt, status[0])
            if status[0]:
                key_label = key.label if key is not None and state.settings.gateway.metrics_per_key else ""
                state.metrics.requests.labels(route=route, status=str(status[0]), key=key_label).inc()

    def _trace(self, scope: Any, name: str, route: str) -> RequestTrace:
        """The request's root span (a child of the caller's ``traceparent``), kept on the scope
        for the routes and the serving core."""
        tracing = self.state.tracing
        if not tracing.enabled:
            rt = NO_TRACE
        else:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []}
            attributes = {"http.request.method": scope["method"], "url.path": scope["path"], "hermes.api": route}
            rt = tracing.start(name, headers, attributes)
        scope.setdefault("state", {})["trace"] = rt
        return rt

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


class BodySizeLimit:
    """Refuse bodies over the limit with 413 before reading them whole."""

    def __init__(self, app: Any, max_bytes: int, errors: ErrorShapes) -> None:
        self.app, self.max_bytes, self.errors = app, max_bytes, errors

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.errors.send(send, self._error(), scope["path"])
            return
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self.errors.send(send, self._error(), scope["path"])

    def _error(self) -> APIError:
        return APIError(413, f"Request body larger than {self.max_bytes} bytes")


class _TooLarge(Exception):
    pass
