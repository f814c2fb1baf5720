"""The one SSE writer every stream goes through: frames in, a streaming response out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from server.jsonio import dumps

SSE_DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any], event: str | None = None) -> bytes:
    """One server-sent event; ``event`` names it (Responses and Anthropic streams do)."""
    data = b"data: " + dumps(payload) + b"\n\n"
    return b"event: " + event.encode() + b"\n" + data if event else data


def sse_comment(text: str) -> bytes:
    return b": " + text.encode() + b"\n\n"


def sse_response(frames: AsyncIterator[bytes], headers: dict[str, str]) -> StreamingResponse:
    return StreamingResponse(
        frames, media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
