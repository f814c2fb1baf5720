"""``hermes-server keys`` and ``hermes-server usage``: the operator's view of the database."""

from __future__ import annotations

import datetime
import enum
from typing import Annotated

import typer

from server.cli_common import ConfigOpt, database
from server.gateway.key_admin import KeyAdmin
from server.gateway.key_limits import KeyLimits, KeyServing
from server.gateway.tables import ApiKey, usable


class LimitReset(enum.StrEnum):
    daily = "daily"
    weekly = "weekly"
    monthly = "monthly"


def _state(k: ApiKey) -> str:
    if k.revoked_at:
        return f"revoked {k.revoked_at:%Y-%m-%d}"
    if k.disabled:
        return "disabled"
    if k.expires_at and not usable(k):
        return f"expired {k.expires_at:%Y-%m-%d}"
    return "management" if k.management else "active"


class ServiceTierChoice(enum.StrEnum):
    priority = "priority"
    default = "default"
    flex = "flex"


keys_app = typer.Typer(no_args_is_help=True, help="API keys (stored hashed in the database).")


@keys_app.command("create")
def keys_create(
    label: Annotated[str, typer.Option(help="who or what the key is for")],
    credit_limit: Annotated[float | None, typer.Option(help="USD this key may spend in all")] = None,
    rpm: Annotated[int | None, typer.Option(help="requests per minute")] = None,
    tpm: Annotated[int | None, typer.Option(help="tokens (prompt + completion) per minute")] = None,
    service_tier: Annotated[
        ServiceTierChoice | None,
        typer.Option(help="tier for its requests that name none (applies under engine.scheduling_policy: priority)"),
    ] = None,
    shared_cache: Annotated[
        bool, typer.Option(help="share the prefix cache with other such keys (no per-key cache salt)")
    ] = False,
    limit_reset: Annotated[
        LimitReset | None, typer.Option(help="the credit limit counts spend since the last reset (UTC)")
    ] = None,
    expires_at: Annotated[
        datetime.datetime | None, typer.Option(help="the key stops working then (UTC)", formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"])
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(min=1, help="completion tokens for its requests that set none (default: the profile's)")
    ] = None,
    management: Annotated[
        bool, typer.Option(help="a management key: uses the key API (/api/v1/keys) and activity, generates nothing")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Create a key. It is shown once, as the last line; only its hash is stored."""
    limits = KeyLimits(credit_limit=credit_limit, rpm=rpm, tpm=tpm)
    serving = KeyServing(
        service_tier=service_tier.value if service_tier else None, shared_cache=shared_cache or None, max_tokens=max_tokens
    )
    reset = limit_reset.value if limit_reset else None
    row, key = KeyAdmin(database(config)).create(
        label, limits, serving, limit_reset=reset, expires_at=expires_at, management=management
    )
    typer.echo(f"created key {row.id} ({label}); store it now, it cannot be shown again:")
    typer.echo(key)


@keys_app.command("list")
def keys_list(config: ConfigOpt = None) -> None:
    """Keys with their limits and spend (never the keys themselves)."""
    from rich.console import Console
    from rich.table import Table

    db = database(config)
    limit_names = list(KeyLimits().columns())
    table = Table("id", "label", "key", "hash", "created", "state", *limit_names, "reset", "tier", "cache", "spent USD")
    admin = KeyAdmin(db)
    for k in db.list_keys():
        limits = KeyLimits.of(k).columns()
        table.add_row(
            str(k.id),
            k.label,
            k.hint + "…",
            k.key_hash[:12] + "…",
            f"{k.created_at:%Y-%m-%d %H:%M}",
            _state(k),
            *("" if limits[n] is None else f"{limits[n]:g}" for n in limit_names),
            k.limit_reset or "",
            k.service_tier or "",
            "shared" if k.shared_cache else "own",
            f"{admin.spend(k.id)['usage']:.6f}",
        )
    Console(width=160).print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[int, typer.Argument(help="the id shown by `keys list`")], config: ConfigOpt = None) -> None:
    """Revoke a key (it stops working within seconds; its usage records stay)."""
    db = database(config)
    row = next((k for k in db.list_keys() if k.id == key_id), None)
    if row is None or not KeyAdmin(db).delete(row.key_hash):
        typer.echo(f"hermes-server: no active key with id {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked key {key_id}")


def usage(config: ConfigOpt = None) -> None:
    """Usage per key and day, with what the same traffic would cost at OpenRouter's listed prices."""
    from rich.console import Console
    from rich.table import Table

    from server.constants import OPENROUTER_PRICE_COMPLETION, OPENROUTER_PRICE_PROMPT

    db = database(config)
    labels = {k.id: k.label for k in db.list_keys()}
    table = Table(
        "day", "key", "requests", "cancelled", "prompt tok", "completion tok", "reasoning tok", "cost USD", "at OpenRouter USD"
    )
    total = at_or = 0.0
    for r in db.daily_summary():
        prompt, completion = int(r["prompt"] or 0), int(r["completion"] or 0)
        openrouter = prompt * OPENROUTER_PRICE_PROMPT + completion * OPENROUTER_PRICE_COMPLETION
        total += float(r["cost"] or 0)
        at_or += openrouter
        who = labels.get(r["key_id"], "(no key)") if r["key_id"] is not None else "(auth off)"
        table.add_row(
            str(r["day"]),
            who,
            str(r["requests"]),
            str(r["cancelled"] or 0),
            str(prompt),
            str(completion),
            str(int(r["reasoning"] or 0)),
            f"{float(r['cost'] or 0):.6f}",
            f"{openrouter:.6f}",
        )
    Console(width=160).print(table)
    typer.echo(f"total: {total:.6f} USD at configured prices, {at_or:.6f} USD at OpenRouter's")
