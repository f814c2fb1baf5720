"""The monitoring that ships in deploy/monitoring agrees with the server: the alert rules pass
promtool's checks and their own unit tests, the dashboard's queries are valid PromQL, every series
and label they name is one the server exports, and the Kubernetes objects point at the server's
port and path. The gauges the alerts stand on (ready, draining) and the per-key label follow the
server's state."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import Counter, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from server.app import create_app
from server.engine.fake import FakeEngine
from server.gateway.db import Database
from server.gateway.metrics import Metrics
from server.hermes.prompt import PromptRenderer
from server.settings import load_settings
from tests.conftest import ROOT

MONITORING = ROOT / "deploy" / "monitoring"
TOOLS = ROOT / ".cache" / "tools"


def _promtool() -> str:
    found = TOOLS / "bin" / "promtool"
    if found.exists():
        return str(found)
    on_path = shutil.which("promtool")
    if on_path:
        return on_path
    why = (TOOLS / "UNAVAILABLE").read_text().strip() if (TOOLS / "UNAVAILABLE").exists() else "run `make tools`"
    pytest.skip(f"promtool is not installed: {why}")


def _run(*args: str, cwd: Path = MONITORING) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    return dict(json.loads((MONITORING / "grafana-dashboard.json").read_text()))


def _panel_queries() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _dashboard()["panels"] for t in p.get("targets", [])]


def test_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    promtool = _promtool()
    assert "SUCCESS: 9 rules found" in _run(promtool, "check", "rules", "alerts.yaml")
    _run(promtool, "test", "rules", "alerts-test.yaml")
    tested = set(re.findall(r"alertname: (\w+)", (MONITORING / "alerts-test.yaml").read_text()))
    assert tested == {rule["alert"] for rule in _rules()}  # every alert has a case


def test_the_dashboards_queries_are_valid_promql(tmp_path: Path) -> None:
    """Grafana's variables replaced by what they stand for, each query is checked as a recording
    rule: promtool parses it."""
    rules = [
        {"record": f"dashboard:query{n}", "expr": expr.replace("$__rate_interval", "5m").replace("$instance", ".*")}
        for n, (_, expr) in enumerate(_panel_queries())
    ]
    (tmp_path / "dashboard-rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _run(_promtool(), "check", "rules", str(tmp_path / "dashboard-rules.yaml"))


def _exported() -> dict[str, set[str]]:
    """Every series name the gateway's metrics export, with the labels it can carry."""
    names: dict[str, set[str]] = {"up": {"job", "instance"}}
    for metric in vars(Metrics()).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        labels = {*metric._labelnames, "job", "instance"}
        if isinstance(metric, Counter):
            names[metric._name + "_total"] = labels
        elif isinstance(metric, Histogram):
            for suffix in ("_bucket", "_sum", "_count"):
                names[metric._name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
        else:
            names[metric._name] = labels
    return names


_SELECTOR = re.compile(r"\b(up|hermes_[a-z_]+)\b(\{([^}]*)\})?")
_GROUPING = re.compile(r"\b(?:by|on)\s*\(([^)]*)\)")


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_series_and_label_the_monitoring_names_is_exported(source: str) -> None:
    exported = _exported()
    queries = [(r["alert"], r["expr"]) for r in _rules()] if source == "alerts" else _panel_queries()
    if source == "dashboard":
        templating = _dashboard()["templating"]["list"]
        queries += [(v["name"], v["definition"]) for v in templating if "definition" in v]
    for where, expr in queries:
        seen = set()
        for name, _, matchers in _SELECTOR.findall(expr):
            assert name in exported, f"{where}: {name} is not a series the server exports"
            used = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
            assert used <= exported[name], f"{where}: {name} has no label {used - exported[name]}"
            seen.add(name)
        assert seen, f"{where}: no series in {expr!r}"
        grouped = {label.strip() for group in _GROUPING.findall(expr) for label in group.split(",") if label.strip()}
        assert grouped <= set.union(*(exported[n] for n in seen)), f"{where}: grouped by {grouped}"


def test_the_dashboard_is_well_formed() -> None:
    dash = _dashboard()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ("token rates", "time to first token", "inter-token", "queue", "kv cache", "429", "per key", "replica"):
        assert topic in titles, topic


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MONITORING / name).read_text()) if d]


def test_the_kubernetes_monitors_scrape_the_servers_port_and_carry_the_rules() -> None:
    service = _docs("../k8s/service.yaml")[0]
    deployment = _docs("../k8s/deployment.yaml")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port_names = {p["name"] for p in container["ports"]}
    (monitor,) = _docs("servicemonitor.yaml")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert all(e["port"] in port_names and e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])
    (pods,) = _docs("podmonitor.yaml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pods["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_labels[pods["spec"]["jobLabel"]] == service["metadata"]["name"] == "hermes-server"  # the rules' job
    assert all(e["port"] in port_names and e["path"] == "/metrics" for e in pods["spec"]["podMetricsEndpoints"])
    (rule,) = _docs("prometheusrule.yaml")
    assert rule["spec"]["groups"] == yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]
    if shutil.which("kubectl"):
        built = subprocess.run(["kubectl", "kustomize", str(MONITORING)], capture_output=True, text=True, timeout=60)
        assert built.returncode == 0, built.stderr
        kinds = {d["kind"]: d for d in yaml.safe_load_all(built.stdout) if d}
        assert {"ServiceMonitor", "PrometheusRule", "ConfigMap"} <= set(kinds)
        assert json.loads(kinds["ConfigMap"]["data"]["grafana-dashboard.json"]) == _dashboard()


def _sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


@pytest.mark.parametrize("per_key", [True, False])
def test_ready_draining_and_per_key_counts_follow_the_server(tokenizer, per_key: bool) -> None:
    db = Database("sqlite://")
    _, token = db.create_key("alice")
    settings = load_settings("configs/tiny-cpu.yaml", auth_required=True, gateway={"metrics_per_key": per_key})
    app = create_app(settings, engine=FakeEngine(tokenizer, reply="Hi."), renderer=PromptRenderer(tokenizer), db=db)
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    with TestClient(app) as c:
        assert c.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert c.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
        text = c.get("/metrics").text
        assert _sample(text, "hermes_ready") == 1.0 and _sample(text, "hermes_draining") == 0.0
        label = "alice" if per_key else ""
        assert _sample(text, "hermes_http_requests_total", route="chat", status="200", key=label) == 1.0
        assert _sample(text, "hermes_http_requests_total", route="chat", status="401", key="") == 1.0
        assert ('key="alice"' in text) is per_key
        app.state.hermes.admission.draining = True
        text = c.get("/metrics").text  # answered while draining: the drain-stuck alert reads it
        assert _sample(text, "hermes_ready") == 0.0 and _sample(text, "hermes_draining") == 1.0
