"""``hermes-server``: serve | plan | pick-profile | download | keys | usage | bench."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from server.cli_common import ConfigOpt, configs_dir, load_or_exit, profile_from_env
from server.constants import HF_REPO, HF_REPO_FP8
from server.settings import REPO_ROOT
from server.supervisor import SUPERVISED, supervise

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Self-hosted OpenRouter-compatible server for Hermes 4 70B.")


@app.callback()
def _root() -> None:
    """Self-hosted OpenRouter-compatible server for Hermes 4 70B."""


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="bind address (overrides the profile)")] = None,
    port: Annotated[int | None, typer.Option(help="port (overrides the profile)")] = None,
) -> None:
    """Start the engine and serve the OpenRouter-compatible API."""
    from server.app import create_app
    from server.doctor import offload_problem
    from server.drain import serve_app
    from server.logs import setup_logging
    from server.planner import check_before_serve
    from server.ray_check import ray_problem
    from server.tracing import exporter_from_env

    settings = load_or_exit(config or profile_from_env(), host=host, port=port)
    supervised = os.environ.get(SUPERVISED) == "1"
    if not supervised:  # the supervisor checks the profile once, before the server starts
        problem = check_before_serve(settings) or ray_problem(settings) or offload_problem(settings)
        if settings.engine.nnodes > 1 and not settings.engine.master_addr:
            problem = "a native multi-node profile needs this node's address in engine.master_addr (HERMES_ENGINE__MASTER_ADDR)"
        if problem is not None:
            typer.echo(f"hermes-server: this profile does not fit: {problem} (see `hermes-server plan`)", err=True)
            raise typer.Exit(2)
        try:
            exporter_from_env()
        except ValueError as exc:  # a tracing variable it cannot honour: said in one line
            typer.echo(f"hermes-server: tracing: {exc}", err=True)
            raise typer.Exit(2) from exc
    _use_local_weights(settings)
    if not supervised:  # checks passed: run the server itself in its own process group
        flags = {"--config": config, "--host": host, "--port": port}
        argv = [sys.executable, "-m", "server.cli", "serve", *(x for k, v in flags.items() if v is not None for x in (k, str(v)))]
        raise typer.Exit(supervise(argv))

    setup_logging(settings.log_level, settings.log_format)
    if settings.api_processes > 1:
        from server.api_processes import serve_api_processes

        raise typer.Exit(serve_api_processes(settings))
    raise typer.Exit(serve_app(create_app(settings)))


@app.command()
def config(
    config: ConfigOpt = None,
    show: Annotated[bool, typer.Option("--show", help="print every effective setting and where it came from")] = True,
    host: Annotated[str | None, typer.Option(help="as for serve")] = None,
    port: Annotated[int | None, typer.Option(help="as for serve")] = None,
) -> None:
    """The effective settings of a profile: value, source (flag, environment, profile, default)
    and what each one does."""
    from rich.console import Console
    from rich.table import Table

    from server.config_report import setting_rows

    profile = config or profile_from_env()
    settings = load_or_exit(profile, host=host, port=port)
    path = None if profile is None else _existing(profile)
    table = Table("setting", "value", "from", "what it does")
    for row in setting_rows(settings, path, {"host": host, "port": port}):
        table.add_row(row.key, row.value, row.source, row.description)
    Console(width=200).print(table)


def _existing(profile: Path) -> Path:
    return profile if profile.exists() else REPO_ROOT / profile


@app.command()
def worker(
    config: ConfigOpt = None,
    node_rank: Annotated[int | None, typer.Option(help="this node's rank (1 .. nnodes-1); node 0 runs `serve`")] = None,
    master_addr: Annotated[str | None, typer.Option(help="address of node 0")] = None,
) -> None:
    """Run this node's engine ranks for a native multi-node profile (vLLM mp backend, no Ray)."""
    from server.engine.vllm_engine import run_headless_worker

    settings = load_or_exit(config or profile_from_env())
    e = settings.engine
    if node_rank is not None:
        e.node_rank = node_rank
    if master_addr is not None:
        e.master_addr = master_addr
    if e.nnodes < 2 or not 0 < e.node_rank < e.nnodes or not e.master_addr:
        typer.echo(
            f"hermes-server: `worker` needs a multi-node profile (engine.nnodes >= 2, got {e.nnodes}), "
            f"a node rank between 1 and nnodes-1 (got {e.node_rank}) and the head's address (--master-addr)",
            err=True,
        )
        raise typer.Exit(2)
    _use_local_weights(settings)
    run_headless_worker(settings)


@app.command()
def plan(
    config: ConfigOpt = None,
    gpus: Annotated[int | None, typer.Option(help="what if: this many GPUs")] = None,
    gpu_mem_gib: Annotated[float | None, typer.Option(help="what if: GiB per GPU (default: nvidia-smi)")] = None,
    context: Annotated[int, typer.Option(help="tokens per sequence (prompt + output) for the decode table")] = 8192,
    layer_us_per_token: Annotated[
        float | None, typer.Option(help="API CPU µs per streamed token, from `scripts/bench_layer.py --vs-vllm` on this host")
    ] = None,
) -> None:
    """What the profile's hardware carries: weights and KV cache per GPU, capacity, verdict, the
    decode rate by concurrency and whether the API layer keeps up."""
    from server import planner

    settings = load_or_exit(config)
    if gpu_mem_gib is None or gpus is None:
        found = planner.detect_gpus()
        if found is not None:  # this node's GPUs; a multi-node profile's other nodes are assumed alike
            found = (found[0] * planner.nodes(settings), found[1])
        elif settings.hardware.gpus is not None:
            found = (settings.hardware.gpus, settings.hardware.gpu_mem_gib or 0.0)  # the profile's target machine
        if found is not None:
            gpus = gpus if gpus is not None else found[0]
            gpu_mem_gib = gpu_mem_gib if gpu_mem_gib is not None else (found[1] or None)
    cfg, source = planner.model_config(settings)
    result = planner.plan(settings, gpus=gpus, gpu_mem_gib=gpu_mem_gib, config=cfg)
    for line in planner.report(result, source):
        typer.echo(line)
    if not result.fits:
        raise typer.Exit(1)
    from server.capacity import LAYER_US_PER_TOKEN

    lines, _ = planner.throughput_report(settings, result, context, layer_us_per_token or LAYER_US_PER_TOKEN)
    for line in lines:
        typer.echo(line)


@app.command()
def download(
    repo: Annotated[str, typer.Option(help=f"Hugging Face repo: {HF_REPO} or {HF_REPO_FP8}")] = HF_REPO,
    revision: Annotated[str | None, typer.Option(help="branch, tag or commit (default: main)")] = None,
    dir: Annotated[
        Path | None, typer.Option("--dir", help="target folder (default: $HERMES_MODELS_DIR or ~/.cache/hermes-server/models)")
    ] = None,
    workers: Annotated[int, typer.Option(help="files fetched at once")] = 4,
) -> None:
    """Fetch the files serving needs (weights, configs, tokenizer, template); resumable, verified.
    HF_TOKEN is used for gated repos; HF_ENDPOINT points at a hub mirror."""
    import os

    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    from server.download import DownloadError, plan_download, repo_dir
    from server.download import download as fetch

    dest = dir or repo_dir(repo)
    token = os.environ.get("HF_TOKEN") or None
    try:
        needed = plan_download(repo, revision, dest, token)
        typer.echo(
            f"{repo} @ {needed.commit[:12]}: {len(needed.files)} files, {needed.total_bytes / 1e9:.2f} GB; "
            f"{needed.to_fetch_bytes / 1e9:.2f} GB left to fetch into {dest}"
        )
        columns = ("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        with Progress(*columns, transient=False) as progress:
            done = sum(f.size for f in needed.files if f.complete_in(dest))
            # Partial files report their bytes when their transfer resumes.
            task = progress.add_task("download", total=needed.total_bytes, completed=done)
            path = fetch(repo, revision, dest, token, workers, lambda n: progress.advance(task, n), needed)
    except DownloadError as exc:
        typer.echo(f"hermes-server: {exc}", err=True)
        raise typer.Exit(1) from exc
    except Exception as exc:  # hub errors (gated repo, unknown revision, network): one line, not a traceback
        typer.echo(f"hermes-server: download failed: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"complete and verified: {path}")
    typer.echo(f"serve it: model.path: {path}" if dir else f"serve it: model.path: {repo} (found in {path.parent})")


@app.command()
def doctor(config: ConfigOpt = None) -> None:
    """Check this GPU host for the profile before downloading anything: GPUs, driver, NVLink,
    /dev/shm, the vLLM build, the profile's fit, disk for the weights, the hub. Exit 1 when
    something blocks serving."""
    from rich.console import Console
    from rich.table import Table

    from server.doctor import diagnose

    settings = load_or_exit(config or profile_from_env())
    checks = diagnose(settings)
    table = Table("check", "status", "found", "what to do")
    colour = {"OK": "green", "WARN": "yellow", "FAIL": "red", "SKIP": "dim"}
    for c in checks:
        table.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", c.detail, c.fix)
    Console(width=220).print(table)
    if any(c.status == "FAIL" for c in checks):
        raise typer.Exit(1)


@app.command("pick-profile")
def pick_profile(
    gpus: Annotated[int | None, typer.Option(help="what if: this many GPUs (default: nvidia-smi)")] = None,
    gpu_mem_gib: Annotated[float | None, typer.Option(help="what if: GiB per GPU (default: nvidia-smi)")] = None,
    configs: Annotated[Path, typer.Option(help="profiles folder")] = Path("configs"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="say why each profile does or does not fit")] = False,
    concurrency: Annotated[int, typer.Option(help="streams you expect at once")] = 64,
    context: Annotated[int, typer.Option(help="tokens per stream (prompt + output) you expect")] = 8192,
) -> None:
    """Print the profile that serves the expected load fastest on this machine's GPUs (predicted
    from measured GPU figures; used by `make serve`); exit 2 and say why when none fits."""
    from server import planner

    if gpus is None or gpu_mem_gib is None:
        found = planner.detect_gpus()
        if found is None:
            typer.echo("hermes-server: no NVIDIA GPU found (nvidia-smi); without GPUs use PROFILE=tiny-cpu", err=True)
            raise typer.Exit(2)
        gpus = gpus if gpus is not None else found[0]
        gpu_mem_gib = gpu_mem_gib if gpu_mem_gib is not None else found[1]
    name, lines, why = planner.pick_profile(configs_dir(configs), gpus, gpu_mem_gib, concurrency, context)
    if name is not None:
        typer.echo(why, err=True)
    if name is None or verbose:
        typer.echo(f"{gpus} GPU(s) x {gpu_mem_gib:.0f} GiB:", err=True)
        for line in lines:
            typer.echo("  " + line, err=True)
    if name is None:
        typer.echo(
            "hermes-server: no profile fits this machine. Hermes 4 70B needs at least one 80 GB GPU with FP8 weights "
            "(h100x1-fp8, reduced context); copy the nearest profile and lower engine.max_model_len, "
            "or check `hermes-server plan --config configs/<profile>.yaml --gpus N --gpu-mem-gib M`",
            err=True,
        )
        raise typer.Exit(2)
    typer.echo(name)


from server.cli_bench import bench  # noqa: E402
from server.cli_keys import keys_app, usage  # noqa: E402

app.command()(bench)
app.add_typer(keys_app, name="keys")
app.command()(usage)


def _use_local_weights(settings: Any) -> None:
    """Weights first: a missing or half-downloaded checkpoint is reported here, in one line,
    instead of as an engine traceback minutes later; found weights are served from disk (no hub
    call at start-up)."""
    from server.download import locate

    local, missing = locate(settings.model.resolved_path(), settings.model.revision)
    if local is None:
        typer.echo(f"hermes-server: {missing}", err=True)
        raise typer.Exit(2)
    settings.model.path = str(local)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
