"""vLLM implementation of the engine seam: ``AsyncLLM`` in this process, no HTTP hop.

The engine core runs in its own process (vLLM spawns it); detokenization and output handling
run in ours, exactly as in vLLM's own server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

from server.engine.base import (
    EngineDelta,
    EngineError,
    EngineRequestRejected,
    GenerationOptions,
)
from server.engine.vllm_convert import engine_timing, logprobs_of, to_sampling_params
from server.settings import Settings

log = logging.getLogger("hermes.engine")


def engine_args(settings: Settings) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs

    e = settings.engine
    kwargs: dict[str, Any] = {
        "model": settings.model.resolved_path(),
        "served_model_name": [settings.model.served_name],
        "tokenizer": settings.model.tokenizer,
        "revision": settings.model.revision,
        "max_model_len": e.max_model_len,
        "tensor_parallel_size": e.tensor_parallel_size,
        "pipeline_parallel_size": e.pipeline_parallel_size,
        "data_parallel_size": e.data_parallel_size,
        "nnodes": e.nnodes if e.nnodes > 1 else None,
        "node_rank": e.node_rank if e.nnodes > 1 else None,
        "master_addr": e.master_addr,
        "master_port": e.master_port,
        "distributed_executor_backend": e.distributed_executor_backend,
        "dtype": e.dtype,
        "quantization": e.quantization,
        "kv_cache_dtype": e.kv_cache_dtype,
        "gpu_memory_utilization": e.gpu_memory_utilization,
        "kv_cache_memory_bytes": e.kv_cache_memory_bytes,
        "max_num_seqs": e.max_num_seqs,
        "max_num_batched_tokens": e.max_num_batched_tokens,
        "stream_interval": e.stream_interval,
        "speculative_config": e.speculative_config,
        "enable_prefix_caching": e.enable_prefix_caching,
        "scheduling_policy": e.scheduling_policy,
        "kv_offloading_size": e.kv_offload_gib,  # per replica, over its ranks (vLLM's unit too)
        "enforce_eager": e.enforce_eager,
        "seed": e.seed,
        # Structured output must be able to finish: a random or hesitant model would otherwise
        # be allowed unbounded whitespace inside JSON.
        "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
        "enable_log_requests": False,
        # Lets requests carry thinking_token_budget: when a request's reasoning reaches its
        # budget the engine forces </think>. Start/end are judged on output tokens (and on the
        # prompt's last tag: the thinking system prompt's literal "<think> </think>" reads as
        # "closed", which is right).
        "reasoning_config": {"reasoning_start_str": "<think>", "reasoning_end_str": "</think>"},
    }
    kwargs.update(e.extra_args)
    return AsyncEngineArgs(**{k: v for k, v in kwargs.items() if v is not None})


def server_usage_context() -> Any:
    from vllm.usage.usage_lib import UsageContext

    return UsageContext.OPENAI_API_SERVER


def run_headless_worker(settings: Settings) -> None:
    """This node's share of the ranks in vLLM's native multi-node mode (node_rank > 0): the same
    headless multiprocessing executor `vllm serve --headless` starts. Blocks until the head node
    shuts down or the process is signalled."""
    from vllm.v1.executor.multiproc_executor import MultiprocExecutor

    if settings.engine.cpu_omp_threads_bind:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = settings.engine.cpu_omp_threads_bind
    config = engine_args(settings).create_engine_config(usage_context=server_usage_context(), headless=True)
    executor = MultiprocExecutor(config, monitor_workers=False)

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    # SIGTERM/Ctrl-C end this node's ranks cleanly (as `vllm serve --headless` does).
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        executor.start_worker_monitor(inline=True)
    finally:
        executor.shutdown()  # type: ignore[no-untyped-call]


class VLLMEngine:
    def __init__(self, settings: Settings, engine_core: dict[str, Any] | None = None) -> None:
        """``engine_core``: the addresses vLLM's process manager hands an API process when the
        engine core runs apart, shared by several API processes (see server/api_processes.py);
        None: this process starts its own engine core."""
        self._settings = settings
        self._engine_core = engine_core
        self._engine: Any = None
        self._ready = False
        self._max_model_len = settings.engine.max_model_len

    @property
    def ready(self) -> bool:
        return self._ready and self._engine is not None and not self._engine.errored

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    async def start(self) -> None:
        from vllm.v1.engine.async_llm import AsyncLLM

        bind = self._settings.engine.cpu_omp_threads_bind
        if bind:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = bind
        args = engine_args(self._settings)
        # Building the engine blocks for tens of seconds (process spawn, weight load, warm-up):
        # keep the event loop free so /health answers meanwhile.
        # The server usage context, as `vllm serve` uses: vLLM sizes batch defaults by it, and
        # a multi-node worker must agree with the head on them.
        if self._engine_core is None:
            self._engine = await asyncio.to_thread(AsyncLLM.from_engine_args, args, usage_context=server_usage_context())
        else:
            self._engine = await asyncio.to_thread(self._attach, args)
        self._max_model_len = int(self._engine.model_config.max_model_len)
        await self._warm_up()
        # The startup heap (torch, transformers, vLLM: millions of objects that live as long as
        # the process) is moved out of the collector's sight, as vLLM's own server does after
        # startup: otherwise every full collection walks it again, on the serving thread.
        from vllm.utils.gc_utils import freeze_gc_heap

        freeze_gc_heap()
        self._ready = True

    def _attach(self, args: Any) -> Any:
        """A client of the engine core another process launched: what vLLM's own API server
        processes do with the same addresses (entrypoints/launchers/api_server/entry.py)."""
        from vllm.v1.engine.async_llm import AsyncLLM

        assert self._engine_core is not None
        addresses = dict(self._engine_core)
        count, index = addresses.pop("client_count"), addresses.pop("client_index")
        addresses.pop("api_server_loads", None)  # vLLM's own accept balancing; uvicorn accepts here
        args._api_process_count, args._api_process_rank = count, index
        config = args.create_engine_config(usage_context=server_usage_context())
        return AsyncLLM.from_vllm_config(
            vllm_config=config,
            usage_context=server_usage_context(),
            enable_log_requests=False,
            disable_log_stats=args.disable_log_stats,
            client_addresses=addresses,
            client_count=count,
            client_index=index,
        )

    async def _warm_up(self) -> None:
        """Readiness means the engine generated a token, not merely that it was built."""
        opts = GenerationOptions(max_tokens=1, temperature=0.0)
        async for _ in self.generate([1], opts, "warmup-ready-check"):
            pass

    async def shutdown(self) -> None:
        self._ready = False
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await asyncio.to_thread(engine.shutdown)

    def num_unfinished_requests(self) -> int:
        if self._engine is None:
            return 0
        return int(self._engine.output_processor.get_num_unfinished_requests())

    def kv_cache_usage(self) -> float | None:
        """vLLM's own figure, over its replicas (their mean): its Prometheus logger keeps
        ``vllm:kv_cache_usage_perc`` (0-1) per engine in the process-wide registry; read it
        rather than reach into the scheduler."""
        values = _vllm_gauge("vllm:kv_cache_usage_perc")
        return sum(values) / len(values) if values else None

    def queue_counts(self) -> tuple[int, int] | None:
        """(running, waiting) over every replica: the counts vLLM's DP coordinator publishes (all
        API processes' requests) when there is one, else vLLM's own scheduler gauges."""
        loads = self._coordinator_counts()
        if loads is not None:
            return sum(running for _, running in loads), sum(waiting for waiting, _ in loads)
        running, waiting = _vllm_gauge("vllm:num_requests_running"), _vllm_gauge("vllm:num_requests_waiting")
        if not running and not waiting:
            return None
        return int(sum(running)), int(sum(waiting))

    def _coordinator_counts(self) -> list[tuple[int, int]] | None:
        """(waiting, running) per replica from vLLM's DP coordinator, which publishes them to its
        clients every 100 ms (what its own balancer reads); None without one or before its first report."""
        if self._engine is None or self.replicas < 2:
            return None
        counts = getattr(self._engine.engine_core, "lb_engines", None)
        if not counts or len(counts) != self.replicas:
            return None
        return [(int(waiting), int(running)) for waiting, running, *_ in counts]

    @property
    def replicas(self) -> int:
        return self._settings.engine.data_parallel_size

    def replica_loads(self) -> list[int] | None:
        """Waiting + running per replica, from vLLM's DP coordinator."""
        counts = self._coordinator_counts()
        return [waiting + running for waiting, running in counts] if counts is not None else None

    def _render(self, prompt_token_ids: list[int], cache_salt: str | None) -> Any:
        # The renderer is the non-deprecated way to hand token ids to AsyncLLM in 0.32.
        prompt: dict[str, Any] = {"prompt_token_ids": prompt_token_ids}
        if cache_salt is not None:
            prompt["cache_salt"] = cache_salt
        (engine_input,) = self._engine.renderer.render_cmpl([prompt])
        return engine_input

    async def generate(
        self, prompt_token_ids: list[int], options: GenerationOptions, request_id: str
    ) -> AsyncIterator[EngineDelta]:
        from vllm.exceptions import VLLMValidationError
        from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

        if self._engine is None:
            raise EngineError("engine is not running")
        if self._settings.engine.speculative_config and (options.logit_bias or options.min_p):
            # vLLM would drop them with a warning in its log: say so to the caller instead.
            raise EngineRequestRejected(
                "logit_bias and min_p are not supported on this deployment: it runs speculative decoding "
                "(engine.speculative_config), under which vLLM ignores them"
            )
        try:
            params = to_sampling_params(options)
            prompt = self._render(prompt_token_ids, options.cache_salt)
        except (ValueError, TypeError, VLLMValidationError) as exc:
            raise EngineRequestRejected(str(exc)) from exc
        try:
            async for out in self._engine.generate(
                prompt,
                params,
                request_id,
                priority=options.priority,
                data_parallel_rank=options.replica if self.replicas > 1 else None,
                reasoning_ended=options.reasoning_ended,
            ):
                c = out.outputs[0]
                delta = EngineDelta(
                    text=c.text,
                    token_ids=list(c.token_ids),
                    logprobs=logprobs_of(c.logprobs, c.token_ids) if options.logprobs is not None else None,
                    finished=out.finished,
                    finish_reason=c.finish_reason,
                    stop_reason=c.stop_reason,
                )
                if out.finished or out.num_cached_tokens:
                    delta.num_cached_tokens = out.num_cached_tokens
                if out.finished:
                    delta.timing = engine_timing(out.metrics)
                yield delta
        except (ValueError, VLLMValidationError) as exc:
            raise EngineRequestRejected(str(exc)) from exc
        except (EngineDeadError, EngineGenerateError) as exc:
            raise EngineError(f"engine failure: {type(exc).__name__}") from exc


def _vllm_gauge(name: str) -> list[float]:
    """Every engine's sample of one of vLLM's gauges in the process-wide registry."""
    from prometheus_client import REGISTRY

    for metric in REGISTRY.collect():
        if metric.name == name:
            return [float(sample.value) for sample in metric.samples]
    return []
