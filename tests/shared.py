"""Test helpers more than one test module uses."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

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


@contextlib.contextmanager
def after_statement(engine: Engine, needle: str, then: Callable[[], None]) -> Iterator[None]:
    """Call ``then`` in whichever thread has just run a statement containing ``needle``, inside
    that statement's transaction: how a test holds one side of a database race at the point it is
    about."""

    def hook(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if needle in statement:
            then()

    event.listen(engine, "after_cursor_execute", hook)
    try:
        yield
    finally:
        event.remove(engine, "after_cursor_execute", hook)
