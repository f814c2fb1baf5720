"""Model download and checks: what serving needs from a Hugging Face repo.

huggingface_hub resolves the repo (revision -> commit, file list and sizes, ``HF_TOKEN``,
``HF_ENDPOINT``, gated-repo errors) and builds the URLs and headers. The byte transfer is ours,
for one reason: since huggingface_hub 2.x every download goes to a process-unique temporary file
that is deleted when the process fails (huggingface_hub PR #4228), so a 141 GB download killed at
90 % starts again from zero. Here each file streams into ``<dir>/.partial/<file>.<etag>.part`` and
a later run continues it with an HTTP Range request. Around that: the file selection, a free-disk
check before anything is written, a completeness check afterwards, and finding the weights a
profile names before ``serve`` starts an engine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Serving needs weights, configs, tokenizer and chat template; not the original PyTorch
# checkpoints, GGUFs or READMEs' images a repo may also hold.
SERVING_PATTERNS = [
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.json",
    "*.jinja",
]
INDEX = "model.safetensors.index.json"
# Room left over after the download (logs, the SQLite file, pip caches), in bytes.
DISK_MARGIN = 1 * 1024**3
PARTIAL = ".partial"
RETRIES = 5


class DownloadError(RuntimeError):
    """A download that cannot start or did not complete; the message says what to do."""


@dataclass
class RemoteFile:
    name: str
    size: int

    def complete_in(self, dest: Path) -> bool:
        target = dest / self.name
        return target.is_file() and target.stat().st_size == self.size


@dataclass
class Needed:
    commit: str
    files: list[RemoteFile]
    total_bytes: int
    to_fetch_bytes: int


def default_models_dir() -> Path:
    """Where `download` puts a repo when no --dir is given: HERMES_MODELS_DIR, else
    ~/.cache/hermes-server/models. ``locate`` looks there for a profile's repo id."""
    return Path(os.environ.get("HERMES_MODELS_DIR") or Path.home() / ".cache" / "hermes-server" / "models")


def repo_dir(repo: str, base: Path | None = None) -> Path:
    return (base or default_models_dir()) / repo.replace("/", "--")


def plan_download(repo: str, revision: str | None, dest: Path, token: str | None) -> Needed:
    """The files serving needs (sizes from the hub's tree listing, via huggingface_hub's dry run)
    and how many bytes are still to fetch into ``dest`` (complete files and partial ones count)."""
    from huggingface_hub import snapshot_download

    infos = snapshot_download(repo, revision=revision, allow_patterns=SERVING_PATTERNS, token=token, dry_run=True)
    if not infos:
        raise DownloadError(f"{repo} has no files serving needs ({', '.join(SERVING_PATTERNS)})")
    files = [RemoteFile(i.filename, i.file_size or 0) for i in infos]
    fetch = 0
    for f in files:
        if not f.complete_in(dest):
            fetch += max(0, f.size - _partial_size(dest, f.name))
    return Needed(infos[0].commit_hash, files, sum(f.size for f in files), fetch)


def _partial_size(dest: Path, name: str) -> int:
    return max((p.stat().st_size for p in (dest / PARTIAL).glob(f"{name}.*.part")), default=0)


def check_disk(dest: Path, needed_bytes: int) -> None:
    probe = dest
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed_bytes + DISK_MARGIN > free:
        raise DownloadError(
            f"not enough disk space at {probe}: the download needs {needed_bytes / 1e9:.1f} GB more "
            f"(+{DISK_MARGIN / 1e9:.0f} GB margin), {free / 1e9:.1f} GB free. Free space or pass --dir on a larger disk."
        )


def download(
    repo: str,
    revision: str | None = None,
    dest: Path | None = None,
    token: str | None = None,
    workers: int = 4,
    on_progress: Callable[[int], None] | None = None,
    needed: Needed | None = None,
) -> Path:
    """Fetch what serving needs into ``dest`` (default: ``repo_dir(repo)``), continuing any
    earlier partial download, then verify it. ``on_progress`` receives byte counts."""
    token = token or os.environ.get("HF_TOKEN") or None
    dest = dest or repo_dir(repo)
    needed = needed or plan_download(repo, revision, dest, token)
    check_disk(dest, needed.to_fetch_bytes)
    dest.mkdir(parents=True, exist_ok=True)
    todo = [f for f in needed.files if not f.complete_in(dest)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for fut in [pool.submit(_fetch_file, repo, needed.commit, f, dest, token, on_progress) for f in todo]:
            fut.result()
    shutil.rmtree(dest / PARTIAL, ignore_errors=True)
    problems = verify(dest)
    if problems:
        raise DownloadError(f"download of {repo} is incomplete: " + "; ".join(problems) + ". Run the same command again.")
    (dest / ".hermes-download.json").write_text(json.dumps({"repo": repo, "revision": revision, "commit": needed.commit}))
    return dest


def _fetch_file(
    repo: str, commit: str, f: RemoteFile, dest: Path, token: str | None, on_progress: Callable[[int], None] | None
) -> None:
    import httpx
    from huggingface_hub import constants, hf_hub_url
    from huggingface_hub.utils._headers import build_hf_headers

    url = hf_hub_url(repo, f.name, revision=commit, endpoint=constants.ENDPOINT)
    headers = build_hf_headers(token=token)
    headers["Accept-Encoding"] = "identity"
    part_dir = dest / PARTIAL
    # The commit pins the content, so a part file of the same commit is the same bytes.
    part = part_dir / f"{f.name}.{commit[:12]}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    for stale in part_dir.glob(f"{f.name}.*.part"):
        if stale != part:
            stale.unlink()
    if on_progress and part.exists():
        on_progress(part.stat().st_size)
    for attempt in range(RETRIES + 1):
        have = part.stat().st_size if part.exists() else 0
        h = dict(headers)
        if have:
            h["Range"] = f"bytes={have}-"
        try:
            with (
                httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0, read=60.0)) as client,
                client.stream("GET", url, headers=h) as r,
            ):
                if r.status_code == 416 and have == f.size:
                    break
                if r.status_code in (401, 403, 404):
                    raise DownloadError(_http_problem(repo, f.name, r.status_code))
                r.raise_for_status()
                mode = "ab" if have and r.status_code == 206 else "wb"
                if mode == "wb" and have and on_progress:
                    on_progress(-have)  # the server ignored the Range: start over
                with part.open(mode) as out:
                    for chunk in r.iter_bytes():
                        out.write(chunk)
                        if on_progress:
                            on_progress(len(chunk))
            if part.stat().st_size == f.size:
                break
        except (httpx.TransportError, httpx.HTTPStatusError) as exc:
            if attempt == RETRIES:
                raise DownloadError(
                    f"{f.name}: {exc} (kept {part.stat().st_size if part.exists() else 0} bytes; run again to resume)"
                ) from exc
            time.sleep(min(30, 2**attempt))
    size = part.stat().st_size if part.exists() else 0
    if size != f.size:
        raise DownloadError(f"{f.name}: got {size} bytes, the hub lists {f.size}; run again to resume")
    target = dest / f.name
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, target)


def _http_problem(repo: str, name: str, status: int) -> str:
    if status in (401, 403):
        return (
            f"{repo}: access denied ({status}) for {name}: set HF_TOKEN to a token that may read it "
            "(and accept the model's licence on its Hugging Face page if it is gated)"
        )
    return f"{repo}: {name} not found (404)"


def safetensors_header(path: Path) -> tuple[int, dict[str, Any]] | None:
    """(header length, header) of a safetensors file: its first 8 bytes give the length of the
    JSON header that follows, which names each tensor's dtype, shape and data offsets. Read by
    hand: it must work on a truncated download too, which the safetensors package refuses to
    open. None when unreadable."""
    try:
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100 * 1024**2:
                return None
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error):
        return None
    return (int(n), header) if isinstance(header, dict) else None


def safetensors_size(path: Path) -> int | None:
    """The size a safetensors file must have, read from its own header (8-byte length + JSON
    header + the data its offsets cover); None when the header itself is unreadable."""
    read = safetensors_header(path)
    if read is None:
        return None
    n, header = read
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    return int(8 + n + end)


def verify(path: Path) -> list[str]:
    """Problems that keep a checkpoint folder from serving: every shard the index names must be
    present with the size its header promises; config and tokenizer must be there."""
    problems: list[str] = []
    if not (path / "config.json").is_file():
        problems.append("config.json missing")
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        problems.append("tokenizer files missing")
    index = path / INDEX
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError) as exc:
            return [*problems, f"{INDEX} unreadable ({exc})"]
    else:
        shards = sorted(p.name for p in path.glob("*.safetensors"))
        if not shards:
            problems.append("no *.safetensors weights and no index")
    for name in shards:
        shard = path / name
        if not shard.is_file():
            problems.append(f"shard {name} missing")
            continue
        want, have = safetensors_size(shard), shard.stat().st_size
        if want is None:
            problems.append(f"shard {name} is truncated or not safetensors ({have} bytes)")
        elif want != have:
            problems.append(f"shard {name} has {have} bytes, its header says {want}")
    return problems


def find_local(model_path: str, revision: str | None = None) -> tuple[Path, str] | None:
    """Where a checkpoint named by a folder or a repo id is on this machine, complete or not:
    (folder, "folder" | "ours" (our models directory) | "cache" (the Hugging Face cache)), or None."""
    p = Path(model_path)
    if p.is_dir():
        return p, "folder"
    ours = repo_dir(model_path)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", model_path) and (ours / "config.json").is_file():
        return ours, "ours"
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        snap = snapshot_download(model_path, revision=revision, allow_patterns=SERVING_PATTERNS, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        return None
    return Path(snap), "cache"


def locate(model_path: str, revision: str | None = None) -> tuple[Path | None, str | None]:
    """(local folder, None) when the weights a profile names are on disk and complete, else
    (None, what to do). ``model_path`` is a local folder or a repo id in the Hugging Face cache."""
    how = (
        f"download it with `hermes-server download --repo {model_path}"
        + (f" --revision {revision}" if revision else "")
        + "`, or point model.path at a local checkpoint folder"
    )
    found = find_local(model_path, revision)
    if found is None:
        return None, (
            f"weights for {model_path!r} are not on this machine (not a folder, not in {default_models_dir()}, "
            f"not in the Hugging Face cache): {how}"
        )
    folder, where = found
    problems = verify(folder)
    if not problems:
        return folder, None
    if where == "folder":
        return None, f"{folder}: " + "; ".join(problems)
    if where == "ours":
        return (
            None,
            f"the download of {model_path} in {folder} is incomplete ({'; '.join(problems)}): run `hermes-server download --repo {model_path}` again",
        )
    return None, f"the cached copy of {model_path} is incomplete ({'; '.join(problems)}): {how}"
