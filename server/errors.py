"""One error type and one error writer.

Every failure leaves the server as an :class:`APIError`, written either by the exception handlers
that :func:`install_error_handlers` puts on the app or, on the pure-ASGI paths (body limit,
gateway), by :meth:`ErrorShapes.send`; a client never sees an HTML page or a stack trace. The
body is the path's API's shape (:class:`ErrorShapes`), by default OpenRouter's, ``{"error": {"code": <status>, "message": str, "metadata": {...}}}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.jsonio import JSONResponse, dumps

log = logging.getLogger("hermes.errors")


class APIError(Exception):
    """An error with an HTTP status, sent to the client in OpenRouter's shape. ``reason`` labels
    gateway refusals in the metrics (``auth``, ``capacity``, …)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        metadata: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.metadata = metadata
        self.headers = headers or {}
        self.reason = reason

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.metadata)

    @property
    def client_mistake(self) -> bool:
        """The request was wrong (not a timeout, overload or failure of ours)."""
        return self.status < 500 and self.status not in (408, 429)


def error_body(status: int, message: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": status, "message": message}
    if metadata:
        err["metadata"] = metadata
    return {"error": err}


ErrorShape = Callable[[APIError], dict[str, Any]]


class ErrorShapes:
    """Which error body each path gets: an API with its own shape (OpenAI's Responses on /v1,
    Anthropic's Messages) declares it for its path prefixes (``routes/adapter.py``); everything
    else gets OpenRouter's. One instance per app, used by the exception handlers and by the
    pure-ASGI refusals (body limit, gateway) alike."""

    def __init__(self, shapes: Iterable[tuple[str, ErrorShape]] = ()) -> None:
        self._shapes = list(shapes)

    def body(self, path: str, exc: APIError) -> dict[str, Any]:
        for prefix, shape in self._shapes:
            if path.startswith(prefix):
                return shape(exc)
        return exc.body()

    def response(self, exc: APIError, path: str) -> JSONResponse:
        return JSONResponse(self.body(path, exc), status_code=exc.status, headers=exc.headers or None)

    async def send(self, send: Any, exc: APIError, path: str) -> None:
        """The same response as :meth:`response`, written on a raw ASGI ``send``."""
        body = dumps(self.body(path, exc))
        headers = [(b"content-type", b"application/json"), *((k.lower().encode(), v.encode()) for k, v in exc.headers.items())]
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


# OpenRouter's ``metadata.error_type`` for a prompt that does not fit the context (and OpenAI's
# error ``code`` for the same refusal, which Codex CLI reads to know its context is full).
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"


def context_error(max_model_len: int, prompt_tokens: int, max_tokens: int | None) -> APIError:
    """A prompt (with ``max_tokens`` of output, if given) over the context, in OpenRouter's words
    and metadata; each API may word it as its clients parse it (:func:`prompt_overflow`)."""
    if max_tokens is None:
        msg = (
            f"This endpoint's maximum context length is {max_model_len} tokens. However, you requested "
            f"about {prompt_tokens} tokens of text input, which leaves no room for output. "
            "Please reduce the length of the input."
        )
    else:
        msg = (
            f"This endpoint's maximum context length is {max_model_len} tokens. However, you requested "
            f"about {prompt_tokens + max_tokens} tokens ({prompt_tokens} of text input, {max_tokens} in the "
            'output). Please reduce the length of either one, or use the "middle-out" transform to compress '
            "your prompt automatically."
        )
    return APIError(
        400,
        msg,
        metadata={
            "error_type": CONTEXT_LENGTH_EXCEEDED,
            "max_context_length": max_model_len,
            "prompt_tokens": prompt_tokens,
            "requested_output_tokens": max_tokens,
        },
    )


def exceeds_context(error: APIError) -> bool:
    return (error.metadata or {}).get("error_type") == CONTEXT_LENGTH_EXCEEDED


def prompt_overflow(error: APIError) -> tuple[int, int] | None:
    """(prompt tokens, context length) when ``error`` refuses a prompt that alone leaves no room
    for output; None for any other error."""
    if not exceeds_context(error) or error.metadata is None or error.metadata["requested_output_tokens"] is not None:
        return None
    return int(error.metadata["prompt_tokens"]), int(error.metadata["max_context_length"])


def bad_request(message: str, **metadata: Any) -> APIError:
    return APIError(400, message, metadata=metadata or None)


def describe_validation_error(exc: ValidationError | RequestValidationError) -> str:
    """One line per problem, each naming the field (``messages.0.role: ...``)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI, shapes: ErrorShapes) -> None:
    def error_response(exc: APIError, path: str) -> JSONResponse:
        return shapes.response(exc, path)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(bad_request(describe_validation_error(exc)), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        messages = {404: "Not found", 405: "Method not allowed"}
        message = exc.detail if isinstance(exc.detail, str) and exc.detail else messages.get(exc.status_code, "error")
        if exc.status_code == 404:
            message = "Not found"
        return error_response(APIError(exc.status_code, message, headers=dict(exc.headers or {})), request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the log, never to the client.
        log.exception("unhandled error", exc_info=exc)
        return error_response(APIError(500, "Internal server error"), request.url.path)
