"""vLLM's native multi-node mode (mp backend, no Ray) with two "nodes" on loopback: node 0 runs
`hermes-server serve`, node 1 `hermes-server worker`, tensor parallel 2 split across them. The
greedy output must be the single-node output. (Ray, the GPU multi-node path, is refused by the
CPU build: "current platform cpu does not support ray".)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import RunningServer, free_port, start_server, stop_server
from tests.e2e.test_tensor_parallel import PROMPTS, _greedy


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("nodes")
    common = {
        "HERMES_ENGINE__TENSOR_PARALLEL_SIZE": "2",
        "HERMES_ENGINE__NNODES": "2",
        "HERMES_ENGINE__MASTER_ADDR": "127.0.0.1",
        "HERMES_ENGINE__MASTER_PORT": str(free_port()),
    }
    log = (tmp / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "worker", "--config", "configs/tiny-cpu.yaml", "--node-rank", "1"],
        env={**os.environ, **common, "HERMES_ENGINE__CPU_OMP_THREADS_BIND": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        process_group=0,  # its own group (killpg below), in the test run's session
    )
    head = start_server(tmp, "node0", env={**common, "HERMES_ENGINE__NODE_RANK": "0", "HERMES_ENGINE__CPU_OMP_THREADS_BIND": "0"})
    yield head
    stop_server(head)
    worker.send_signal(signal.SIGTERM)
    try:
        assert worker.wait(timeout=60) == 0, "the worker did not end cleanly on SIGTERM"
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        log.close()


def test_two_nodes_match_one(server: RunningServer, two_nodes: RunningServer) -> None:
    for prompt in PROMPTS:
        one = _greedy(server.v1, prompt)
        assert len(one) > 20
        assert _greedy(two_nodes.v1, prompt) == one


def test_worker_refuses_a_single_node_profile() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "server.cli", "worker", "--config", "configs/tiny-cpu.yaml", "--node-rank", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "needs a multi-node profile" in r.stderr
