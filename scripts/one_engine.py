"""One vLLM engine core with two front ends attached: vLLM's own OpenAI server and hermes-server,
each on its own port, so that both servers' requests are batched into the same engine steps.

    .venv/bin/python scripts/one_engine.py --hermes-port 8001 --vllm-port 8002 [--config configs/tiny-cpu.yaml]

For ``scripts/bench_overhead.py --one-engine``: with both front ends loaded at once, every token
of either comes out of the same forward pass, so the engine's speed (which drifts by ±15 % from
one half-minute to the next on a shared 2-core machine) falls on both alike and a throughput or
TTFT ratio between them is the layers' alone. It is the arrangement of ``api_processes: 2`` (and
of ``vllm serve --api-server-count 2``), with vLLM's API server process as one of the engine's two
clients and ours as the other (client 1 unless ``--hermes-client 0``). Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_overhead import vllm_command  # noqa: E402

from server.api_processes import ApiProcessArgs, run_api_process, serve_front_ends  # noqa: E402
from server.gateway.admission import SharedSlots  # noqa: E402
from server.settings import load_settings  # noqa: E402


@dataclass
class FrontEnds:
    """What each front-end process is given (pickled into it; sockets travel as file descriptors):
    vLLM's parsed server arguments, and our process's arguments, socket and address."""

    vllm_args: argparse.Namespace
    hermes: ApiProcessArgs
    hermes_sock: socket.socket
    hermes_address: str
    hermes_client: int  # which of the engine's two clients is ours


def run_front_end(listen_address: str, sock: socket.socket, fronts: FrontEnds, client_config: dict[str, Any]) -> None:
    """One of the engine's two clients: hermes-server on its own socket, or vLLM's own API server
    on ``sock``."""
    # vLLM's accept balancing between API processes that share one socket: these two do not.
    client_config.pop("api_server_loads", None)
    if client_config["client_index"] == fronts.hermes_client:
        sock.close()
        run_api_process(fronts.hermes_address, fronts.hermes_sock, fronts.hermes, client_config)
    else:
        from vllm.v1.utils import run_api_server_worker_proc

        fronts.hermes_sock.close()
        run_api_server_worker_proc(listen_address, sock, fronts.vllm_args, client_config)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/tiny-cpu.yaml")
    ap.add_argument("--hermes-port", type=int, required=True)
    ap.add_argument("--vllm-port", type=int, required=True)
    ap.add_argument(
        "--hermes-client",
        type=int,
        choices=(0, 1),
        default=1,
        help="which of the engine's two clients is hermes-server (run with each to check the order does not decide a result)",
    )
    args = ap.parse_args()

    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.entrypoints.launchers.launcher import create_server_socket
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    settings = load_settings(args.config).model_copy(update={"host": "127.0.0.1", "port": args.hermes_port})
    # vLLM's server reads the same command line bench_overhead.py gives it as a server of its own.
    vllm_args = make_arg_parser(FlexibleArgumentParser()).parse_args(vllm_command(settings, args.vllm_port)[3:])
    validate_parsed_serve_args(vllm_args)
    vllm_sock = create_server_socket(("127.0.0.1", args.vllm_port), reuse_port=False)
    hermes_sock = create_server_socket(("127.0.0.1", args.hermes_port), reuse_port=False)
    fronts = FrontEnds(
        vllm_args,
        ApiProcessArgs(settings, SharedSlots()),
        hermes_sock,
        f"http://127.0.0.1:{args.hermes_port}",
        args.hermes_client,
    )
    try:
        code = serve_front_ends(settings, 2, vllm_sock, f"http://127.0.0.1:{args.vllm_port}", run_front_end, fronts)
    finally:
        hermes_sock.close()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
