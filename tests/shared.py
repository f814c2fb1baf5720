"""Test helpers more than one test module uses."""

from __future__ import annotations

import json
import math
from typing import Any

# A JSON schema a random-weight model can always finish (an enum and a bounded integer).
CITY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Oslo"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
# Ends the prompt inside <think>: the output starts as reasoning, and the thinking budget closes it.
THINKING = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "<think>\n"}]


def strict_json(text: str) -> Any:
    """Parse as JavaScript's JSON.parse would: NaN and Infinity are errors."""

    def refuse(constant: str) -> object:
        raise ValueError(f"non-finite number {constant} in JSON")

    return json.loads(text, parse_constant=refuse)


def finite(obj: object) -> bool:
    """No non-finite float anywhere in a parsed JSON value."""
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(finite(v) for v in obj)
    return True
