"""JSON out, through orjson: several times faster than the standard library on the per-token
path, and it writes a non-finite float (which JSON has no way to spell) as null instead of
emitting ``-Infinity``. (Request bodies are parsed by FastAPI from the request models.)"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
from starlette.responses import Response


def dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:
        # orjson refuses integers beyond 64 bits, which a body can only hold where it echoes a
        # client's own value (a tool_choice, metadata …): the standard library writes them.
        return json.dumps(_finite(obj), separators=(",", ":"), ensure_ascii=False).encode()


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)
