"""A key's limits (and how its requests are served), as one value: what ``keys create`` sets, the database stores (one
``api_keys`` column per field, same name), the gateway enforces (one rule per field,
``limit_rules.py``) and ``/api/v1/key`` reports."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class KeyLimits:
    """What a key may use; None: no limit. Field names are the ``api_keys`` columns."""

    credit_limit: float | None = None  # USD, in all
    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens (prompt + completion) per minute

    @classmethod
    def of(cls, row: Any) -> KeyLimits:
        """From an ``api_keys`` row."""
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})

    def columns(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def any(self) -> bool:
        return any(v is not None for v in self.columns().values())


@dataclass(frozen=True)
class KeyServing:
    """How a key's requests are served; field names are ``api_keys`` columns (NULL: the default)."""

    service_tier: str | None = None  # the tier its requests get when they name none (or "auto")
    shared_cache: bool | None = None  # True: no per-key cache salt (it shares prefixes with others on purpose)
    max_tokens: int | None = None  # completion tokens for its requests that set none (the profile's otherwise)

    @classmethod
    def of(cls, row: Any) -> KeyServing:
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})

    def columns(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
