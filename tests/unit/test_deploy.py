"""The container and cluster manifests agree with the server: ports, probe paths, the drain timeout
against the grace periods, GPU counts against the profile, the model the init container fetches."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.settings import load_settings
from tests.conftest import ROOT

K8S = ROOT / "deploy" / "k8s"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    objs = {}
    for name in kust["resources"]:
        for d in _docs(K8S / name):
            objs[f"{d['kind']}/{d['metadata']['name']}"] = d
    return objs


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def _settings_for(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch):
    env = _env(container)
    for k, v in env.items():
        if k.startswith("HERMES_") and k not in ("HERMES_PROFILE", "HERMES_MODELS_DIR") and v is not None:
            monkeypatch.setenv(k, v)
    return load_settings(ROOT / "configs" / f"{env['HERMES_PROFILE']}.yaml")


def test_deployment_matches_the_server(k8s: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    dep = k8s["Deployment/hermes-server"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    s = _settings_for(c, monkeypatch)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == s.port and s.host == "0.0.0.0" and s.auth_required

    def port_of(probe: dict[str, Any]) -> int:
        p = probe["httpGet"]["port"]
        return ports[p] if isinstance(p, str) else p

    assert c["livenessProbe"]["httpGet"]["path"] == "/health" and port_of(c["livenessProbe"]) == s.port
    assert c["startupProbe"]["httpGet"]["path"] == "/health" and port_of(c["startupProbe"]) == s.port
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready" and port_of(c["readinessProbe"]) == s.port

    # preStop, then SIGTERM and the drain: the grace period must cover both, with a margin.
    pre = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre[0] == "sleep"
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= float(pre[1]) + s.gateway.drain_timeout_seconds + 5, (grace, pre, s.gateway.drain_timeout_seconds)
    assert f"drain {s.gateway.drain_timeout_seconds:g}" in (ROOT / "deploy/k8s/deployment.yaml").read_text()

    gpus = s.engine.tensor_parallel_size * s.engine.pipeline_parallel_size
    assert c["resources"]["limits"]["nvidia.com/gpu"] == gpus == s.hardware.gpus
    assert dep["spec"]["strategy"]["type"] == "Recreate" and dep["spec"]["replicas"] == 1
    assert pod["securityContext"]["runAsNonRoot"] is True

    # The init container downloads exactly the repo the profile serves, where serve looks for it.
    (init,) = pod["initContainers"]
    ienv = _env(init)
    assert init["args"][0] == "download" and ienv["HERMES_REPO"] == s.model.path
    assert ienv["HERMES_MODELS_DIR"] == _env(c)["HERMES_MODELS_DIR"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["models"] == _env(c)["HERMES_MODELS_DIR"]
    assert _env(c)["HERMES_DATABASE_URL"].startswith(f"sqlite:///{mounts['data']}/")
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims <= {k.split("/", 1)[1] for k in k8s if k.startswith("PersistentVolumeClaim/")}


def test_service_targets_the_container_port(k8s: dict[str, dict[str, Any]]) -> None:
    svc = k8s["Service/hermes-server"]
    dep = k8s["Deployment/hermes-server"]
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    names = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert all(p["targetPort"] in names for p in svc["spec"]["ports"])


def test_probe_paths_are_served_without_keys(tokenizer, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.engine.fake import FakeEngine
    from server.hermes.prompt import PromptRenderer

    s = load_settings(ROOT / "configs" / "h100x8-bf16.yaml", host="127.0.0.1", database_url=f"sqlite:///{tmp_path / 'k.db'}")
    app = create_app(s, engine=FakeEngine(tokenizer), renderer=PromptRenderer(tokenizer))
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code in (200, 503)  # never 401
        assert client.get("/v1/models").status_code == 200  # listings need no key, as at OpenRouter
        assert client.get("/api/v1/key").status_code == 401


def test_container_and_compose_agree_with_the_server() -> None:
    s = load_settings(ROOT / "configs" / "h100x8-bf16.yaml")
    docker = (ROOT / "Dockerfile.gpu").read_text()
    assert f"EXPOSE {s.port}" in docker
    assert re.search(rf'HEALTHCHECK .*\n\s+CMD \["curl", "-fsS", "http://127.0.0.1:{s.port}/health"\]', docker)
    assert re.search(r"^USER 1000", docker, re.M) and 'ENTRYPOINT ["hermes-server"]' in docker
    assert re.search(r"^FROM nvidia/cuda:", docker, re.M)
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    svc = compose["services"]["hermes"]
    assert svc["ports"] == [f"{s.port}:{s.port}"]
    grace = int(svc["stop_grace_period"].rstrip("s"))
    assert grace >= s.gateway.drain_timeout_seconds + 5
    assert svc["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_container_copies_what_the_package_build_reads_before_it_builds() -> None:
    """The image's `pip install .` reads the readme and the license files pyproject names; a file
    not copied by then fails the build, which no CI run without Docker would see."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    docker = (ROOT / "Dockerfile.gpu").read_text()
    before_build = docker[: docker.index('pip install --no-cache-dir ".')]
    copied = {name for line in re.findall(r"^COPY (.+) \S+$", before_build, re.M) for name in line.split()}
    assert {project["readme"], *project["license-files"]} <= copied
    assert all((ROOT / name).is_file() for name in project["license-files"])


def test_systemd_unit_stops_the_main_process_and_waits_for_the_drain() -> None:
    import configparser

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy" / "systemd" / "hermes-server.service")
    service = unit["Service"]
    assert service["KillMode"] == "mixed" and service["KillSignal"] == "SIGTERM"
    s = load_settings(ROOT / "configs" / "h100x8-bf16.yaml")
    assert float(service["TimeoutStopSec"]) >= s.gateway.drain_timeout_seconds + 30
    command = service["ExecStart"].split()
    assert command[1:3] == ["serve", "--config"] and (ROOT / "configs" / Path(command[3]).name).exists()


POOL = ROOT / "deploy" / "k8s-pool"


def test_inference_pool_recipe_reads_metrics_the_server_exports(
    k8s: dict[str, dict[str, Any]], tokenizer, tmp_path: Path
) -> None:
    """The endpoint picker is pointed at metric names a hermes-server pod exports, on the port the
    pods serve, through the picker's own Service; the pool's pods share one PostgreSQL database."""
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.engine.fake import FakeEngine
    from server.hermes.prompt import PromptRenderer

    objs = {f"{d['kind']}/{d['metadata']['name']}": d for name in ("inferencepool.yaml", "epp.yaml") for d in _docs(POOL / name)}
    pool = objs["InferencePool/hermes-server"]["spec"]
    dep = k8s["Deployment/hermes-server"]["spec"]["template"]
    assert pool["selector"]["matchLabels"].items() <= dep["metadata"]["labels"].items()
    ports = {p["containerPort"] for p in dep["spec"]["containers"][0]["ports"]}
    assert {p["number"] for p in pool["targetPorts"]} <= ports
    picker = pool["endpointPickerRef"]
    svc = objs[f"Service/{picker['name']}"]["spec"]
    assert picker["port"]["number"] in {p["port"] for p in svc["ports"]}
    args = objs["Deployment/hermes-server-epp"]["spec"]["template"]["spec"]["containers"][0]["args"]
    flags = dict(a.split("=", 1) for a in args if isinstance(a, str) and a.startswith("--") and "=" in a)
    names = [
        flags[f"--{kind}-metric"] for kind in ("total-queued-requests", "total-running-requests", "kv-cache-usage-percentage")
    ]
    s = load_settings(ROOT / "configs" / "h100x8-fp8-dp4.yaml", host="127.0.0.1", database_url=f"sqlite:///{tmp_path / 'p.db'}")
    app = create_app(s, engine=FakeEngine(tokenizer), renderer=PromptRenderer(tokenizer))
    with TestClient(app) as client:
        exported = {line.split(" ")[0] for line in client.get("/metrics").text.splitlines() if not line.startswith("#")}
    assert set(names) <= exported, set(names) - exported
    patch = _docs(POOL / "pods.yaml")[0]["spec"]
    env = {e["name"]: e for e in patch["template"]["spec"]["containers"][0]["env"]}
    assert patch["replicas"] >= 2 and "secretKeyRef" in env["HERMES_DATABASE_URL"]["valueFrom"]
    if shutil.which("kubectl"):  # the overlay builds on the base
        built = subprocess.run(["kubectl", "kustomize", str(POOL)], capture_output=True, text=True, timeout=60)
        assert built.returncode == 0, built.stderr
        kinds = {d["kind"] for d in yaml.safe_load_all(built.stdout) if d}
        assert {"InferencePool", "HTTPRoute", "Deployment", "Service"} <= kinds and "PersistentVolumeClaim" not in kinds
