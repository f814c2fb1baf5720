"""The usage record every started generation leaves (finished, failed, timed out, cancelled,
drained): one typed record for the database, the metrics, the limits and the log line."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

from server.serving.plan import GenerationPlan


@dataclass(slots=True)
class UsageRecord:
    id: str
    created_at: dt.datetime  # UTC, naive (the database's convention)
    model: str
    route: str
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cached_tokens: int
    cost: float
    latency_ms: float
    ttft_ms: float | None
    finish_reason: str | None
    native_finish_reason: str | None
    streamed: bool
    cancelled: bool
    error: str | None
    api: str | None = None  # the adapter's declared name
    key_id: int | None = None
    referer: str | None = None
    title: str | None = None
    external_user: str | None = None
    user_agent: str | None = None
    session_id: str | None = None  # the session the request named (routing and /api/v1/generation)
    service_tier: str | None = None  # the tier it was served at
    cache_discount: float | None = None  # USD its cached tokens saved
    replica: int | None = None  # the data-parallel replica it ran on (None: the engine chose)
    variant: str | None = None  # the model id's routing variant (nitro, floor, exacto)
    batch_id: str | None = None  # the batch it ran for
    # Not stored: how the replica was chosen (session, prefix, new, spill), for the metrics.
    route_reason: str | None = None
    # Not stored: a failure that was the client's own mistake does not count against uptime.
    client_mistake: bool = False

    def row(self) -> dict[str, Any]:
        """The stored columns."""
        out = asdict(self)
        for name in _NOT_STORED:
            out.pop(name)
        return out

    @classmethod
    def stored_fields(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name not in _NOT_STORED]


_NOT_STORED = ("client_mistake", "route_reason")


class Stoppable(Protocol):
    def stop(self, reason: str) -> None: ...


class GenerationObserver(Protocol):
    """What the core tells the rest of the server about each generation (the gateway listens:
    credit is reserved before one opens, drain needs the running ones, limits and the database
    the records)."""

    async def reserve(self, plan: GenerationPlan) -> None:
        """Before a generation opens: hold what it may cost, or refuse it (raise APIError)."""
        ...

    def started(self, run: Stoppable) -> None: ...

    def finished(self, run: Stoppable, record: UsageRecord) -> None: ...
