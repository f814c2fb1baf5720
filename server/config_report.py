"""Where each effective setting came from: flag, environment, profile or default
(``hermes-server config --show``)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from server.settings import Settings

ENV_PREFIX = "HERMES_"


@dataclass(frozen=True)
class SettingRow:
    key: str  # dotted, e.g. engine.max_model_len
    value: str  # as JSON
    source: str  # flag | environment | profile | default
    description: str


def _env_keys(environ: Mapping[str, str]) -> set[str]:
    """Dotted keys the environment sets (``HERMES_ENGINE__MAX_MODEL_LEN`` → engine.max_model_len);
    a nested section given whole as JSON marks every key under it."""
    return {k[len(ENV_PREFIX) :].lower().replace("__", ".") for k in environ if k.startswith(ENV_PREFIX)}


def _profile_keys(path: Path | None) -> set[str]:
    if path is None:
        return set()
    data = yaml.safe_load(path.read_text()) or {}
    keys: set[str] = set()
    for name, value in data.items():  # top-level fields, and one level of sections
        if isinstance(value, dict) and name in Settings.model_fields and name != "extra_args":
            keys.update(f"{name}.{k}" for k in value)
        else:
            keys.add(name)
    return keys


def _source(key: str, flags: set[str], env: set[str], profile: set[str]) -> str:
    parents = {key.split(".")[0]} if "." in key else set()
    for name, given in (("flag", flags), ("environment", env), ("profile", profile)):
        if key in given or parents & given:
            return name
    return "default"


def setting_rows(
    settings: Settings, profile: Path | None, flags: Mapping[str, Any], environ: Mapping[str, str] = os.environ
) -> list[SettingRow]:
    flag_keys = {k for k, v in flags.items() if v is not None}
    env, prof = _env_keys(environ), _profile_keys(profile)
    rows: list[SettingRow] = []

    def walk(model: BaseModel, prefix: str) -> None:
        for name, info in type(model).model_fields.items():
            value = getattr(model, name)
            key = prefix + name
            if isinstance(value, BaseModel):
                walk(value, key + ".")
                continue
            shown = json.dumps(value, default=str)
            rows.append(SettingRow(key, shown, _source(key, flag_keys, env, prof), info.description or ""))

    walk(settings, "")
    return rows
