"""The one SSE writer every stream goes through: frames in, a streaming response out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

SSE_DONE = "data: [DONE]\n\n"


def sse(payload: dict[str, Any], event: str | None = None) -> str:
    """One server-sent event; ``event`` names it (Responses and Anthropic streams do)."""
    data = "data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n\n"
    return f"event: {event}\n{data}" if event else data


def sse_comment(text: str) -> str:
    return f": {text}\n\n"


def sse_response(frames: AsyncIterator[str], headers: dict[str, str]) -> StreamingResponse:
    return StreamingResponse(
        frames, media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
