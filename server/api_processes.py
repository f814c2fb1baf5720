"""``api_processes: N`` (N > 1): N API processes on one port in front of one engine.

The same arrangement as ``vllm serve --api-server-count N``, built from vLLM's own parts: this
process binds the port, launches the engine core once (``launch_core_engines``) and starts the N
API processes with vLLM's ``APIServerProcessManager``; each API process attaches its own
``AsyncLLM`` client to the engine core over ZMQ (``VLLMEngine(engine_core=…)``) and serves the
whole app on the shared listening socket, where the kernel hands each new connection to one of
them. There is no proxy hop of ours, so the layer's capacity grows with the processes' cores.

What must agree across the processes lives where all of them see it: the engine's admission
slots in shared memory (``SharedSlots``), keys' limits, spend and usage records in the database,
metrics in Prometheus's multiprocess directory. On SIGTERM/SIGINT this process stops the API
processes (each drains its own requests first, as a single server does) and then the engine.

These are vLLM-internal interfaces of the pinned version (0.32): if an upgrade moves them,
``tests/e2e/test_api_processes.py`` fails first.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from server.gateway.admission import SharedSlots
from server.gateway.db import Database
from server.settings import Settings

log = logging.getLogger("hermes.app")

_STOP_GRACE_S = 15.0  # on top of the drain timeout: an API process's own shutdown after draining


@dataclass
class ApiProcessArgs:
    """What each API process is given (pickled into it by the spawn start method)."""

    settings: Settings
    slots: SharedSlots


def serve_api_processes(settings: Settings) -> int:
    """Launch the engine core and ``settings.api_processes`` API processes; wait until they stop.
    Returns the exit status."""
    from vllm.entrypoints.launchers.launcher import create_server_socket

    sock = create_server_socket((settings.host, settings.port), reuse_port=False)
    args = ApiProcessArgs(settings, SharedSlots())
    return serve_front_ends(
        settings, settings.api_processes, sock, f"http://{settings.host}:{settings.port}", run_api_process, args
    )


def serve_front_ends(
    settings: Settings, n: int, sock: socket.socket, listen_address: str, target: Callable[..., None], args: Any
) -> int:
    """Launch the engine core of ``settings`` with ``n`` front-end processes attached to it: each
    runs ``target(listen_address, sock, args, engine_core)`` (``engine_core``: the addresses and
    ``client_index`` of that process's engine client). Waits until they stop; the exit status.

    ``scripts/bench_overhead.py --one-engine`` attaches vLLM's own API server as one of them."""
    from vllm.v1.engine.utils import bind_engine_zmq_listeners, launch_core_engines
    from vllm.v1.executor import Executor
    from vllm.v1.utils import APIServerProcessManager, wait_for_completion_or_failure

    from server.engine.vllm_engine import engine_args, server_usage_context

    if settings.engine.cpu_omp_threads_bind:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = settings.engine.cpu_omp_threads_bind
    # Before any API process starts: they inherit it and write their series there (a fresh
    # directory each start: files left by an earlier run would be counted again).
    metrics_dir = tempfile.mkdtemp(prefix="hermes-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            log.info("signal %s: stopping %d API processes (each drains first), then the engine", signum, n)
            raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    Database(settings.database_url)  # make (or bring up to date) the tables once, not N processes at once
    vllm_args = engine_args(settings)
    vllm_args._api_process_count, vllm_args._api_process_rank = n, -1
    config = vllm_args.create_engine_config(usage_context=server_usage_context())
    listeners = bind_engine_zmq_listeners(config, n)
    manager: Any = None
    engines: Any = None
    coordinator: Any = None
    try:
        with launch_core_engines(
            config, Executor.get_class(config), not vllm_args.disable_log_stats, listeners.addresses
        ) as launch:
            engines, coordinator = launch.engine_manager, launch.coordinator
            stats = coordinator.get_stats_publish_address() if coordinator else None
            manager = APIServerProcessManager(
                listen_address=listen_address,
                sock=sock,
                args=args,
                num_servers=n,
                input_listeners=listeners.inputs,
                output_listeners=listeners.outputs,
                target_server_fn=target,
                stats_update_address=stats,
                tensor_queue=launch.tensor_queue,
            )
            launch.watched_frontend_processes = manager.processes
            # The API processes hold their own copies of the listening socket. Without this
            # process's copy, the port stops taking connections when they stop (refused, as
            # with one server), instead of queueing them for no one.
            sock.close()
        log.info("%d API processes serving on %s", n, listen_address)
        wait_for_completion_or_failure(api_server_manager=manager, engine_manager=engines, coordinator=coordinator)
    except SystemExit:
        pass
    except Exception:
        log.exception("API processes or engine failed")
        return 1
    finally:
        timeout = settings.gateway.drain_timeout_seconds + _STOP_GRACE_S
        if manager is not None:
            manager.shutdown(timeout=timeout)
        if engines is not None:
            engines.shutdown(timeout=timeout)
        if coordinator is not None:
            coordinator.shutdown(timeout=timeout)
        sock.close()
        listeners.cleanup()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def run_api_process(listen_address: str, sock: socket.socket, args: ApiProcessArgs, engine_core: dict[str, Any]) -> None:
    """One API process (the target vLLM's process manager starts): the whole app, its engine a
    client of the shared engine core, serving on the shared socket."""
    from vllm.utils.system_utils import set_process_title

    from server.app import create_app
    from server.drain import serve_app
    from server.engine.vllm_engine import VLLMEngine
    from server.logs import setup_logging

    set_process_title("APIServer", str(engine_core.get("client_index", 0)))  # `ps` tells them apart
    settings = args.settings
    setup_logging(settings.log_level, settings.log_format)
    api = create_app(settings, engine=VLLMEngine(settings, engine_core=engine_core), shared_slots=args.slots)
    code = serve_app(api, sockets=[sock])
    if code:
        raise SystemExit(code)  # the parent sees the process fail and stops the rest
