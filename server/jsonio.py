"""JSON in and out, through orjson: several times faster than the standard library on the
per-token path, and it writes a non-finite float (which JSON has no way to spell) as null instead
of emitting ``-Infinity``; inbound, it refuses ``NaN``/``Infinity`` literals as invalid JSON."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def loads(raw: bytes | str) -> Any:
    return orjson.loads(raw)


JSONDecodeError = orjson.JSONDecodeError


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
