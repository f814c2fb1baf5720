"""Managing keys, one implementation for the command line (``hermes-server keys``) and for
OpenRouter's key API (``/api/v1/keys``, routes/keys.py): create, list, read, change, delete, and
a key's record in OpenRouter's shape.

A key is named by its ``hash`` (the SHA-256 of the key, which is all the database keeps), as in
OpenRouter's API. Deleting revokes: the row and its usage records stay for the accounts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from server.gateway.db import Database
from server.gateway.key_limits import KeyLimits, KeyServing
from server.gateway.tables import ApiKey, GenerationRow
from server.timeutil import LIMIT_RESETS, period_start, utcnow

UNSET: Any = object()  # a KeyChange field left as it is


@dataclass(frozen=True)
class KeyChange:
    """Fields to change; ``UNSET`` leaves one as it is (None clears a limit)."""

    name: Any = UNSET
    credit_limit: Any = UNSET
    limit_reset: Any = UNSET
    disabled: Any = UNSET
    expires_at: Any = UNSET

    def columns(self) -> dict[str, Any]:
        names = {"name": "label"}
        return {names.get(k, k): v for k, v in self.__dict__.items() if v is not UNSET}


def check_reset(limit_reset: str | None) -> None:
    if limit_reset is not None and limit_reset not in LIMIT_RESETS:
        raise ValueError(f"limit_reset must be one of {', '.join(LIMIT_RESETS)} (or null)")


class KeyAdmin:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        name: str,
        limits: KeyLimits | None = None,
        serving: KeyServing | None = None,
        *,
        limit_reset: str | None = None,
        expires_at: dt.datetime | None = None,
        management: bool = False,
    ) -> tuple[ApiKey, str]:
        """A new key; the key itself is returned once."""
        check_reset(limit_reset)
        row, key = self.db.create_key(name, limits, serving)
        extra = {"limit_reset": limit_reset, "expires_at": expires_at, "management": management or None}
        if any(v is not None for v in extra.values()):
            changed = self._apply(row.key_hash, extra)
            assert changed is not None  # just made
            row = changed
        return row, key

    def list(self, include_disabled: bool = False, offset: int = 0, management: bool = False) -> list[ApiKey]:
        """Keys not deleted (disabled ones too when asked); inference keys unless ``management``."""
        with self.db.session() as s:
            q = select(ApiKey).where(ApiKey.revoked_at.is_(None)).order_by(ApiKey.id).offset(offset)
            rows = list(s.scalars(q))
        return [r for r in rows if (include_disabled or not r.disabled) and (management or not r.management)]

    def get(self, key_hash: str) -> ApiKey | None:
        with self.db.session() as s:
            return s.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)))

    def update(self, key_hash: str, change: KeyChange) -> ApiKey | None:
        columns = change.columns()
        if "limit_reset" in columns:
            check_reset(columns["limit_reset"])
        return self._apply(key_hash, columns)

    def delete(self, key_hash: str) -> bool:
        return self._apply(key_hash, {"revoked_at": utcnow()}) is not None

    def _apply(self, key_hash: str, columns: dict[str, Any]) -> ApiKey | None:
        with self.db.session() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)))
            if row is None:
                return None
            for name, value in columns.items():
                setattr(row, name, value)
            row.updated_at = utcnow()
            return row

    # ---- OpenRouter's key record -------------------------------------------------------------------
    def spend(self, key_id: int, pending: float = 0.0) -> dict[str, float]:
        """USD spent in all, today, this week and this month (UTC), plus ``pending`` (records not
        yet written) in each."""
        now = utcnow()
        starts = {f"usage_{p}": period_start(p, now) for p in LIMIT_RESETS}
        with self.db.session() as s:

            def since(start: dt.datetime | None) -> float:
                q = select(func.coalesce(func.sum(GenerationRow.cost), 0.0)).where(GenerationRow.key_id == key_id)
                if start is not None:
                    q = q.where(GenerationRow.created_at >= start)
                return float(s.scalar(q) or 0.0) + pending

            return {"usage": since(None), **{name: since(start) for name, start in starts.items()}}

    @staticmethod
    def counted(spent: dict[str, float], limit_reset: str | None) -> float:
        """Of ``spend``'s figures, what the credit limit counts: since the last reset, or in all."""
        return spent[f"usage_{limit_reset}"] if limit_reset else spent["usage"]

    def record(self, row: ApiKey, pending: float = 0.0) -> dict[str, Any]:
        """The key as OpenRouter's key API returns it (every field its SDK requires)."""
        spent = self.spend(row.id, pending)
        limit = row.credit_limit
        counted = self.counted(spent, row.limit_reset)
        return {
            "hash": row.key_hash,
            "name": row.label,
            "label": f"{row.hint}…",
            "disabled": bool(row.disabled),
            "limit": limit,
            "limit_remaining": None if limit is None else max(0.0, limit - counted),
            "limit_reset": row.limit_reset,
            "include_byok_in_limit": False,
            **spent,
            "byok_usage": 0.0,
            "byok_usage_daily": 0.0,
            "byok_usage_weekly": 0.0,
            "byok_usage_monthly": 0.0,
            "created_at": _iso(row.created_at),
            "updated_at": _iso(row.updated_at) if row.updated_at else None,
            "expires_at": _iso(row.expires_at) if row.expires_at else None,
            "last_used_at": None,
            "creator_user_id": None,
            "external_user": None,
            "workspace_id": "default",
        }


def _iso(value: dt.datetime) -> str:
    return value.replace(tzinfo=dt.UTC).isoformat()
