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

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from server.constants import HF_REPO, OPENROUTER_MODEL_ID, OPENROUTER_PRICE_COMPLETION, OPENROUTER_PRICE_PROMPT
from server.settings_sections import (
    BatchSettings,
    GatewaySettings,
    HardwareSettings,
    MessagesSettings,
    ReasoningSettings,
    ResponsesSettings,
    RoutingSettings,
    Section,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

_profile_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("profile_path", default=None)


class ModelSettings(Section):
    path: str = Field(
        HF_REPO, description="A local checkpoint folder, or a Hugging Face repo id resolved through the local HF cache."
    )
    revision: str | None = Field(None, description="Branch, tag or commit of the checkpoint (default: main).")
    tokenizer: str | None = Field(None, description="Tokenizer folder or repo when it is not the checkpoint's own.")
    served_name: str = Field(
        OPENROUTER_MODEL_ID, description="The id clients send; OpenRouter's id by default so clients need no change."
    )
    aliases: list[str] = Field(default_factory=lambda: [HF_REPO], description="Other model ids accepted for this model.")

    def resolved_path(self) -> str:
        p = Path(self.path)
        if not p.is_absolute() and (REPO_ROOT / p).exists():
            return str(REPO_ROOT / p)
        return self.path


class EngineSettings(Section):
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model replica is split across (vLLM tensor parallelism).")
    pipeline_parallel_size: int = Field(1, ge=1, description="Pipeline stages (vLLM pipeline parallelism; multi-node).")
    data_parallel_size: int = Field(
        1, ge=1, description="Model replicas in one engine; the server routes each request to one (see `routing`)."
    )
    distributed_executor_backend: Literal["mp", "ray", "uni"] | None = Field(
        None, description="vLLM's executor: mp (one node or native multi-node), ray (multi-node through Ray) or uni."
    )
    nnodes: int = Field(
        1,
        ge=1,
        description="vLLM's native multi-node mode (mp backend, no Ray): the ranks are split evenly over nnodes machines; node 0 runs `serve`, the others `hermes-server worker` with their node_rank.",
    )
    node_rank: int = Field(0, ge=0, description="This node's rank in a native multi-node profile (0 runs `serve`).")
    master_addr: str | None = Field(None, description="Address of node 0 in a native multi-node profile.")
    master_port: int | None = Field(
        None, ge=1, le=65535, description="Port of node 0 in a native multi-node profile (vLLM's default when unset)."
    )
    max_model_len: int = Field(131072, ge=16, description="Longest prompt + output served, in tokens (Hermes 4: up to 131072).")
    dtype: str = Field("auto", description="Weight and activation dtype (auto: the checkpoint's).")
    quantization: str | None = Field(None, description="vLLM quantization method, e.g. fp8 (None: the checkpoint's own).")
    kv_cache_dtype: str = Field("auto", description="KV-cache dtype (auto, or fp8 to double the cache).")
    gpu_memory_utilization: float = Field(
        0.92, gt=0, le=1, description="Share of each GPU's memory vLLM may take (weights + KV cache + activations)."
    )
    kv_cache_memory_bytes: int | None = Field(
        None, ge=1, description="Fixed KV-cache size; required on the CPU build (its memory fraction is of host RAM)."
    )
    max_num_seqs: int = Field(256, ge=1, description="Sequences the engine batches at once.")
    stream_interval: int = Field(
        1,
        ge=1,
        description="Streamed tokens go out in groups of this many (vLLM's stream_interval; the first token "
        "at once). Fewer, larger chunks cost the API process less CPU per token; 1 sends every token as made.",
    )
    speculative_config: dict[str, Any] | None = Field(
        None,
        description="Speculative decoding, vLLM's speculative_config: {method: ngram, num_speculative_tokens: 3, "
        "prompt_lookup_max: 4} (prompt lookup, no extra weights) or {method: draft_model | eagle3, model: <checkpoint>, "
        "num_speculative_tokens: N}. Requests with logit_bias or min_p are refused while it is on (vLLM ignores them).",
    )
    max_num_batched_tokens: int | None = Field(
        None, description="Tokens per engine step (chunked prefill budget); None: vLLM's default."
    )
    enable_prefix_caching: bool = Field(True, description="Reuse the KV cache of shared prompt prefixes.")
    scheduling_policy: Literal["fcfs", "priority"] = Field(
        "fcfs",
        description="vLLM's queue order: fcfs, or priority (a request's service_tier, or its key's default, "
        "orders the engine's queue: priority before default before flex).",
    )
    kv_offload_gib: float | None = Field(
        None,
        gt=0,
        description="Host RAM (GiB per replica, shared by its tensor-parallel ranks) that vLLM's native "
        "CPU offloading keeps evicted KV blocks in, so a session's prefix survives GPU cache pressure. "
        "GPU builds only; counted by `plan` and `doctor` against the host's memory.",
    )
    enforce_eager: bool = Field(False, description="Disable CUDA graphs (debugging; slower).")
    seed: int = Field(0, description="Engine seed (requests with their own seed are repeatable regardless).")
    cpu_omp_threads_bind: str | None = Field(
        None, description='CPU build only: one core list per tensor-parallel rank, e.g. "0|1".'
    )
    extra_args: dict[str, Any] = Field(
        default_factory=dict, description="Anything else AsyncEngineArgs accepts, passed through unchanged."
    )


class SamplingDefaults(Section):
    """Used for fields a request leaves out. Hermes 4 card: temperature 0.6, top_p 0.95, top_k 20."""

    temperature: float = Field(0.6, ge=0, le=2, description="Sampling temperature when a request sends none.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling when a request sends none.")
    top_k: int = Field(20, ge=0, description="Top-k sampling when a request sends none (0: off).")
    min_p: float = Field(0.0, ge=0, le=1, description="Min-p sampling when a request sends none.")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="Frequency penalty when a request sends none.")
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="Presence penalty when a request sends none.")
    repetition_penalty: float = Field(1.0, gt=0, le=2, description="Repetition penalty when a request sends none.")
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="Completion tokens for requests that set none (a key may have its own); published as /models "
        "top_provider.max_completion_tokens. None: whatever room the context leaves after the prompt.",
    )


class Pricing(Section):
    """USD per token, as OpenRouter lists them (default: its listed price for this model)."""

    prompt: float = Field(OPENROUTER_PRICE_PROMPT, ge=0, description="USD per prompt token (usage cost and credit limits).")
    completion: float = Field(
        OPENROUTER_PRICE_COMPLETION, ge=0, description="USD per completion token (usage cost and credit limits)."
    )
    input_cache_read: float | None = Field(
        None,
        ge=0,
        description="USD per prompt token served from the prefix cache (OpenRouter's input_cache_read); "
        "None: cached tokens cost what other prompt tokens cost (OpenRouter lists no discount for this model).",
    )

    def prompt_cost(self, prompt_tokens: int, cached_tokens: int) -> float:
        """What a prompt costs, its cached tokens at the cache-read price."""
        read = self.prompt if self.input_cache_read is None else self.input_cache_read
        return (prompt_tokens - cached_tokens) * self.prompt + cached_tokens * read

    def cache_discount(self, cached_tokens: int) -> float:
        """What the cached tokens saved against the full prompt price (OpenRouter's cache_discount)."""
        read = self.prompt if self.input_cache_read is None else self.input_cache_read
        return cached_tokens * (self.prompt - read)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HERMES_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    profile: str = Field("custom", description="The profile's name (shown in logs and `config --show`).")
    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8000, ge=0, le=65535, description="Port.")
    api_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="API server processes on the one port, in front of the one engine (vLLM's multi-API-server "
        "mode). Raise it when one process's CPU would cap the token rate: `hermes-server plan` says when.",
    )
    auth_required: bool = Field(
        True, description="Keys are required unless a profile turns auth off; then only loopback binds are allowed."
    )
    allow_insecure_no_auth: bool = Field(False, description="Allow auth off on a non-loopback address (not recommended).")
    provider_name: str = Field("hermes-server", description="The provider name responses carry (OpenRouter's `provider`).")
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 beyond).")
    log_level: str = Field("info", description="Log level (debug, info, warning, error).")
    log_format: Literal["json", "text"] = Field("json", description='"json" (one object per line, for log pipelines) or "text".')
    stream_keepalive_seconds: float = Field(
        5.0, gt=0, description='SSE comment lines ": OPENROUTER PROCESSING" while waiting, and as keep-alives this often.'
    )

    model: ModelSettings = Field(default_factory=ModelSettings, description="The checkpoint and the ids it is served under.")
    engine: EngineSettings = Field(default_factory=EngineSettings, description="vLLM engine settings.")
    sampling: SamplingDefaults = Field(
        default_factory=SamplingDefaults, description="Sampling defaults for fields a request leaves out."
    )
    reasoning: ReasoningSettings = Field(default_factory=ReasoningSettings, description="Reasoning defaults.")
    pricing: Pricing = Field(default_factory=Pricing, description="Prices used for usage cost and credit limits.")
    gateway: GatewaySettings = Field(default_factory=GatewaySettings, description="Admission, timeouts and drain.")
    batches: BatchSettings = Field(default_factory=BatchSettings, description="Batch API.")
    routing: RoutingSettings = Field(
        default_factory=RoutingSettings, description="Session and prefix affinity over data-parallel replicas."
    )
    responses: ResponsesSettings = Field(default_factory=ResponsesSettings, description="Responses API storage.")
    messages: MessagesSettings = Field(default_factory=MessagesSettings, description="Anthropic Messages API.")
    hardware: HardwareSettings = Field(default_factory=HardwareSettings, description="The machine the profile is written for.")
    database_url: str = Field(
        "sqlite:///hermes-server.db",
        description="SQLAlchemy URL for keys and usage records (PostgreSQL: postgresql+psycopg://user:pw@host/db).",
    )

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
