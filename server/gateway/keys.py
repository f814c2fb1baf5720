"""Who gets in: API keys looked up by hash in the database, cached for a few seconds; and the
prefix-cache salt each key's requests carry."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

from server.gateway.db import Database
from server.gateway.key_limits import KeyLimits, KeyServing
from server.gateway.tables import ApiKey, usable

_KEY_TTL_S = 5.0  # a revoked key stops working within this many seconds
_CACHE_MAX = 10_000


@dataclass(frozen=True)
class KeyInfo:
    id: int
    label: str
    hint: str
    limits: KeyLimits = field(default_factory=KeyLimits)
    serving: KeyServing = field(default_factory=KeyServing)
    cache_salt: str | None = None
    limit_reset: str | None = None  # the credit limit counts spend since the last daily/weekly/monthly reset
    management: bool = False  # manages keys, reads activity; generates nothing

    @classmethod
    def of(cls, row: ApiKey, salt_secret: bytes) -> KeyInfo:
        serving = KeyServing.of(row)
        salt = None if serving.shared_cache else cache_salt(salt_secret, row.id)
        return cls(row.id, row.label, row.hint, KeyLimits.of(row), serving, salt, row.limit_reset, bool(row.management))


def cache_salt(secret: bytes, key_id: int) -> str:
    """The key's prefix-cache salt: vLLM shares cached blocks only between requests with the
    same salt, so one tenant cannot time another's prompts through the cache. Derived from a
    server secret every server on the database shares (same key, same salt, on every server), and
    never from anything the client sends."""
    return hmac.new(secret, f"cache-salt:{key_id}".encode(), hashlib.sha256).hexdigest()[:32]


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[float, KeyInfo | None]] = {}
        self._salt_secret: bytes | None = None

    def by_id(self, key_id: int) -> KeyInfo | None:
        """A usable key by its id (the batch runner acts for the key that made the batch)."""
        row = self.db.key_by_id(key_id)
        return KeyInfo.of(row, self._secret()) if row is not None and usable(row) else None

    def _secret(self) -> bytes:
        if self._salt_secret is None:
            self._salt_secret = self.db.server_secret("cache_salt", lambda: secrets.token_bytes(32))
        return self._salt_secret

    async def authenticate(self, token: str) -> KeyInfo | None:
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and now - hit[0] < _KEY_TTL_S:
            return hit[1]
        secret = await asyncio.to_thread(self._secret)
        row = await asyncio.to_thread(self.db.find_key, token)
        info = KeyInfo.of(row, secret) if row is not None else None
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
