"""Who gets in: API keys looked up by hash in the database, cached for a few seconds."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from server.gateway.db import ApiKey, Database
from server.gateway.key_limits import KeyLimits

_KEY_TTL_S = 5.0  # a revoked key stops working within this many seconds
_CACHE_MAX = 10_000


@dataclass(frozen=True)
class KeyInfo:
    id: int
    label: str
    hint: str
    limits: KeyLimits = field(default_factory=KeyLimits)

    @classmethod
    def of(cls, row: ApiKey) -> KeyInfo:
        return cls(row.id, row.label, row.hint, KeyLimits.of(row))


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[float, KeyInfo | None]] = {}

    async def authenticate(self, token: str) -> KeyInfo | None:
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and now - hit[0] < _KEY_TTL_S:
            return hit[1]
        row = await asyncio.to_thread(self.db.find_key, token)
        info = KeyInfo.of(row) if row is not None else None
        if len(self._cache) > _CACHE_MAX:
            self._cache.clear()
        self._cache[token] = (now, info)
        return info


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key from ``Authorization: Bearer …``, or from ``x-api-key`` (what Anthropic's SDKs send)."""
    api_key = None
    for name, value in headers:
        if name == b"authorization":
            text = value.decode("latin-1")
            if text.lower().startswith("bearer "):
                return text[7:].strip() or None
        elif name == b"x-api-key":
            api_key = value.decode("latin-1").strip() or None
    return api_key
