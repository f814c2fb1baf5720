"""``hermes-server``: serve (and, as they land, plan | download | keys | usage | bench)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from server.settings import load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Self-hosted OpenRouter-compatible server for Hermes 4 70B.")


@app.callback()
def _root() -> None:
    """Self-hosted OpenRouter-compatible server for Hermes 4 70B."""


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML profile, e.g. configs/tiny-cpu.yaml")]


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="bind address (overrides the profile)")] = None,
    port: Annotated[int | None, typer.Option(help="port (overrides the profile)")] = None,
) -> None:
    """Start the engine and serve the OpenRouter-compatible API."""
    import uvicorn

    from server.app import create_app
    from server.logs import setup_logging
    from server.planner import check_before_serve

    settings = _settings(config, host=host, port=port)
    problem = check_before_serve(settings)
    if problem is not None:
        typer.echo(f"hermes-server: this profile does not fit: {problem} (see `hermes-server plan`)", err=True)
        raise typer.Exit(2)

    setup_logging(settings.log_level, settings.log_format)
    api = create_app(settings)
    server = _draining_server_class()(
        uvicorn.Config(
            api,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            timeout_graceful_shutdown=30,
            log_config=None,
        ),
        api,
        settings.gateway.drain_timeout_seconds,
    )
    failed = False

    def on_engine_failure() -> None:
        nonlocal failed
        failed = True
        server.should_exit = True

    api.state.on_engine_failure = on_engine_failure
    server.run()
    if failed:
        typer.echo(f"hermes-server: {api.state.engine_error}", err=True)
        sys.exit(1)


@app.command()
def plan(
    config: ConfigOpt = None,
    gpus: Annotated[int | None, typer.Option(help="what if: this many GPUs")] = None,
    gpu_mem_gib: Annotated[float | None, typer.Option(help="what if: GiB per GPU (default: nvidia-smi)")] = None,
) -> None:
    """What the profile's hardware carries: weights and KV cache per GPU, capacity, verdict."""
    from server import planner

    settings = _settings(config)
    if gpu_mem_gib is None or gpus is None:
        found = planner.detect_gpus()
        if found is None and settings.hardware.gpus is not None:
            found = (settings.hardware.gpus, settings.hardware.gpu_mem_gib or 0.0)  # the profile's target machine
        if found is not None:
            gpus = gpus if gpus is not None else found[0]
            gpu_mem_gib = gpu_mem_gib if gpu_mem_gib is not None else (found[1] or None)
    cfg, source = planner.model_config(settings)
    result = planner.plan(settings, gpus=gpus, gpu_mem_gib=gpu_mem_gib, config=cfg)
    for line in planner.report(result, source):
        typer.echo(line)
    if not result.fits:
        raise typer.Exit(1)


keys_app = typer.Typer(no_args_is_help=True, help="API keys (stored hashed in the database).")
app.add_typer(keys_app, name="keys")


def _draining_server_class() -> Any:
    import asyncio

    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn, but the first SIGTERM/SIGINT drains instead of closing the listener: /ready
        and new requests get 503 while in-flight work finishes (up to the drain timeout; the
        rest is ended with the mid-stream error chunk and recorded). A second signal exits now."""

        def __init__(self, config: Any, api: Any, drain_timeout: float) -> None:
            super().__init__(config)
            self.api, self.drain_timeout = api, drain_timeout
            self._loop: asyncio.AbstractEventLoop | None = None
            self._draining = False

        async def startup(self, sockets: Any = None) -> None:
            self._loop = asyncio.get_running_loop()
            await super().startup(sockets)

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self._draining or self._loop is None or self.api.state.gateway is None:
                super().handle_exit(sig, frame)
                return
            self._draining = True
            self.api.state.draining = True
            logging.getLogger("hermes.app").info("signal %s: draining (up to %ss)", sig, self.drain_timeout)
            self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._drain()))

        async def _drain(self) -> None:
            try:
                await self.api.state.gateway.drain(self.drain_timeout)
            finally:
                self.should_exit = True

    return DrainingServer


def _settings(config: Path | None, **overrides: Any) -> Any:
    try:
        return load_settings(config, **overrides)
    except Exception as exc:  # a bad profile is reported in one line, not a traceback
        typer.echo(f"hermes-server: {exc}", err=True)
        raise typer.Exit(2) from exc


def _database(config: Path | None) -> Any:
    from server.gateway.db import Database

    return Database(_settings(config).database_url)


@keys_app.command("create")
def keys_create(
    label: Annotated[str, typer.Option(help="who or what the key is for")],
    credit_limit: Annotated[float | None, typer.Option(help="USD this key may spend in all")] = None,
    rpm: Annotated[int | None, typer.Option(help="requests per minute")] = None,
    tpm: Annotated[int | None, typer.Option(help="tokens (prompt + completion) per minute")] = None,
    config: ConfigOpt = None,
) -> None:
    """Create a key. It is shown once, as the last line; only its hash is stored."""
    row, key = _database(config).create_key(label, credit_limit, rpm, tpm)
    typer.echo(f"created key {row.id} ({label}); store it now, it cannot be shown again:")
    typer.echo(key)


@keys_app.command("list")
def keys_list(config: ConfigOpt = None) -> None:
    """Keys with their limits and spend (never the keys themselves)."""
    from rich.console import Console
    from rich.table import Table

    db = _database(config)
    table = Table("id", "label", "key", "created", "revoked", "credit limit", "rpm", "tpm", "spent USD")
    for k in db.list_keys():
        table.add_row(
            str(k.id),
            k.label,
            k.hint + "…",
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "",
            "" if k.credit_limit is None else f"{k.credit_limit:g}",
            "" if k.rpm is None else str(k.rpm),
            "" if k.tpm is None else str(k.tpm),
            f"{db.spend(k.id):.6f}",
        )
    Console(width=160).print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[int, typer.Argument(help="the id shown by `keys list`")], config: ConfigOpt = None) -> None:
    """Revoke a key (it stops working within seconds; its usage records stay)."""
    if not _database(config).revoke(key_id):
        typer.echo(f"hermes-server: no active key with id {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked key {key_id}")


@app.command()
def usage(config: ConfigOpt = None) -> None:
    """Usage per key and day, with what the same traffic would cost at OpenRouter's listed prices."""
    from rich.console import Console
    from rich.table import Table

    from server.protocol.models import OPENROUTER_PRICES

    db = _database(config)
    labels = {k.id: k.label for k in db.list_keys()}
    table = Table(
        "day", "key", "requests", "cancelled", "prompt tok", "completion tok", "reasoning tok", "cost USD", "at OpenRouter USD"
    )
    total = at_or = 0.0
    for r in db.daily_summary():
        prompt, completion = int(r["prompt"] or 0), int(r["completion"] or 0)
        openrouter = prompt * OPENROUTER_PRICES["prompt"] + completion * OPENROUTER_PRICES["completion"]
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
