"""Before `serve` starts a Ray profile: is there a Ray cluster reachable from here with the GPUs
the profile needs? vLLM's own failure would come minutes later, as a placement-group timeout."""

from __future__ import annotations

from server.settings import Settings


def ray_problem(settings: Settings) -> str | None:
    """For a Ray profile: None when a Ray cluster is reachable from here with the GPUs the profile
    needs, else what to do. Checked before `serve` loads anything (vLLM's own failure comes
    minutes later, as a placement-group timeout)."""
    e = settings.engine
    if e.distributed_executor_backend != "ray":
        return None
    steps = "start the head with scripts/ray_head.sh on this node and join the others with scripts/ray_worker.sh"
    try:
        import ray
    except ImportError:
        return f"this profile runs on a Ray cluster and Ray is not installed (pip install -e '.[multinode]'): {steps}"
    try:
        ray.init(address="auto", logging_level="error", log_to_driver=False)
    except (ConnectionError, RuntimeError) as exc:
        return f"no Ray cluster reachable from this node ({exc}): {steps}"
    try:
        gpus = float(ray.cluster_resources().get("GPU", 0))
    finally:
        ray.shutdown()
    need = e.tensor_parallel_size * e.pipeline_parallel_size
    if gpus < need:
        return f"the Ray cluster has {gpus:g} GPUs, the profile needs {need}: join the missing nodes with scripts/ray_worker.sh (check with `ray status`)"
    return None
