"""JSON out, through orjson: several times faster than the standard library on the per-token
path, and it writes a non-finite float (which JSON has no way to spell) as null instead of
emitting ``-Infinity``. (Request bodies are parsed by FastAPI from the request models.)"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
