"""One Settings object: YAML profile (configs/) < ``HERMES_*`` environment < CLI flags.

Nested sections are overridden from the environment with a double underscore, e.g.
``HERMES_ENGINE__TENSOR_PARALLEL_SIZE=2`` or ``HERMES_SAMPLING__TEMPERATURE=0.2``; top-level
fields directly, e.g. ``HERMES_PORT=9000`` or ``HERMES_AUTH_REQUIRED=1``.
"""

from __future__ import annotations

import contextvars
import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from server.constants import HF_REPO, OPENROUTER_MODEL_ID, OPENROUTER_PRICE_COMPLETION, OPENROUTER_PRICE_PROMPT

REPO_ROOT = Path(__file__).resolve().parent.parent

_profile_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("profile_path", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSettings(_Section):
    # A local checkpoint folder, or a Hugging Face repo id resolved through the local HF cache.
    path: str = HF_REPO
    revision: str | None = None
    tokenizer: str | None = None
    # The id clients send; OpenRouter's id by default so clients need no change.
    served_name: str = OPENROUTER_MODEL_ID
    aliases: list[str] = Field(default_factory=lambda: [HF_REPO])

    def resolved_path(self) -> str:
        p = Path(self.path)
        if not p.is_absolute() and (REPO_ROOT / p).exists():
            return str(REPO_ROOT / p)
        return self.path


class EngineSettings(_Section):
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    data_parallel_size: int = Field(1, ge=1)
    distributed_executor_backend: Literal["mp", "ray", "uni"] | None = None
    # vLLM's native multi-node mode (mp backend, no Ray): the ranks are split evenly over nnodes
    # machines; node 0 runs `serve`, the others `hermes-server worker` with their node_rank.
    nnodes: int = Field(1, ge=1)
    node_rank: int = Field(0, ge=0)
    master_addr: str | None = None
    master_port: int | None = Field(None, ge=1, le=65535)
    max_model_len: int = Field(131072, ge=16)
    dtype: str = "auto"
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    gpu_memory_utilization: float = Field(0.92, gt=0, le=1)
    # Fixed KV-cache size; required on the CPU build (its memory fraction is of host RAM).
    kv_cache_memory_bytes: int | None = Field(None, ge=1)
    max_num_seqs: int = Field(256, ge=1)
    max_num_batched_tokens: int | None = None
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    seed: int = 0
    # CPU build only: one core list per tensor-parallel rank, e.g. "0|1".
    cpu_omp_threads_bind: str | None = None
    # Anything else AsyncEngineArgs accepts, passed through unchanged.
    extra_args: dict[str, Any] = Field(default_factory=dict)


class SamplingDefaults(_Section):
    """Used for fields a request leaves out. Hermes 4 card: temperature 0.6, top_p 0.95, top_k 20."""

    temperature: float = Field(0.6, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int = Field(20, ge=0)
    min_p: float = Field(0.0, ge=0, le=1)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    repetition_penalty: float = Field(1.0, gt=0, le=2)
    # None: whatever room the context leaves after the prompt.
    max_tokens: int | None = Field(None, ge=1)


class Pricing(_Section):
    """USD per token, as OpenRouter lists them (default: its listed price for this model)."""

    prompt: float = Field(OPENROUTER_PRICE_PROMPT, ge=0)
    completion: float = Field(OPENROUTER_PRICE_COMPLETION, ge=0)


class ReasoningSettings(_Section):
    # Reasoning when a request says nothing about it (OpenRouter: off for Hermes 4).
    default_enabled: bool = False
    # Keep earlier assistant turns' reasoning in the prompt (Hermes' keep_cots; off by default).
    keep_cots: bool = False


class GatewaySettings(_Section):
    # Generation requests running at once; None: the engine's max_num_seqs (what it can batch).
    max_in_flight: int | None = Field(None, ge=1)
    # Requests allowed to wait for a slot; beyond them an immediate 429. None: 2 x max_in_flight.
    max_queue: int | None = Field(None, ge=0)
    # A generation (queueing included) running longer than this ends with 408.
    request_timeout_seconds: float = Field(600.0, gt=0)
    # On SIGTERM, in-flight requests get this long to finish before they are ended.
    drain_timeout_seconds: float = Field(30.0, ge=0)
    metrics_require_auth: bool = False


class HardwareSettings(_Section):
    """The machine a profile is written for; `plan` uses it when nvidia-smi is not there."""

    gpus: int | None = Field(None, ge=1)
    gpu_mem_gib: float | None = Field(None, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HERMES_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    profile: str = "custom"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # Keys are required unless a profile turns auth off; then only loopback binds are allowed.
    auth_required: bool = True
    allow_insecure_no_auth: bool = False
    provider_name: str = "hermes-server"
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    log_level: str = "info"
    # "json" (one object per line, for log pipelines) or "text".
    log_format: Literal["json", "text"] = "json"
    # SSE comment lines ": OPENROUTER PROCESSING" while waiting, and as keep-alives this often.
    stream_keepalive_seconds: float = Field(5.0, gt=0)

    model: ModelSettings = Field(default_factory=ModelSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)
    reasoning: ReasoningSettings = Field(default_factory=ReasoningSettings)
    pricing: Pricing = Field(default_factory=Pricing)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    hardware: HardwareSettings = Field(default_factory=HardwareSettings)
    # SQLAlchemy URL for keys and usage records (PostgreSQL: postgresql+psycopg://user:pw@host/db).
    database_url: str = "sqlite:///hermes-server.db"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _profile_path.get()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    @model_validator(mode="after")
    def _secure_default(self) -> Settings:
        if not self.auth_required and not self.allow_insecure_no_auth and not is_loopback(self.host):
            raise ValueError(
                f"auth is off but host {self.host!r} is not a loopback address: bind 127.0.0.1, "
                "turn auth on (HERMES_AUTH_REQUIRED=1) or set allow_insecure_no_auth: true"
            )
        return self

    @property
    def model_names(self) -> list[str]:
        names = [self.model.served_name, *self.model.aliases, OPENROUTER_MODEL_ID, HF_REPO]
        return list(dict.fromkeys(names))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Profile file, then environment, then explicit overrides (CLI flags); None values skipped."""
    path = None
    if config is not None:
        path = Path(config)
        if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
            path = REPO_ROOT / path
        if not path.exists():
            raise FileNotFoundError(f"profile not found: {config}")
    token = _profile_path.set(path)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _profile_path.reset(token)
