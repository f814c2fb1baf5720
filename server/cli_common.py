"""What the CLI's commands share: the --config option and loading a profile (with HERMES_PROFILE)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from server.settings import REPO_ROOT, load_settings

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML profile, e.g. configs/tiny-cpu.yaml")]


def configs_dir(folder: Path = Path("configs")) -> Path:
    """A profiles folder as given, else relative to the checkout (a cwd outside the repo)."""
    return folder if folder.is_absolute() or folder.is_dir() else REPO_ROOT / folder


def profile_from_env() -> Path | None:
    """HERMES_PROFILE (a profile name in configs/ or a path) when --config is not given: the
    container and Kubernetes pick the profile by environment."""
    import os

    name = os.environ.get("HERMES_PROFILE")
    if not name:
        return None
    if name == "auto":
        from server import planner

        found = planner.detect_gpus()
        picked = planner.pick_profile(configs_dir(), *found)[0] if found else None
        if picked is None:
            typer.echo("hermes-server: HERMES_PROFILE=auto: no GPU profile fits (see `hermes-server pick-profile`)", err=True)
            raise typer.Exit(2)
        name = picked
    path = Path(name)
    # A bare name: configs/<name>.yaml, found from the working directory or the checkout.
    return path if path.suffix in (".yaml", ".yml") else Path("configs") / f"{name}.yaml"


def load_or_exit(config: Path | None, **overrides: Any) -> Any:
    try:
        return load_settings(config, **overrides)
    except Exception as exc:  # a bad profile is reported in one line, not a traceback
        typer.echo(f"hermes-server: {exc}", err=True)
        raise typer.Exit(2) from exc


def database(config: Path | None) -> Any:
    from server.gateway.db import Database

    return Database(load_or_exit(config).database_url)
