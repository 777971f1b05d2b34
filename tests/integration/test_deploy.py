"""The container image and the Kubernetes manifests, checked against the
daemon they deploy: every overlay renders, validates against the Kubernetes
schemas, and names the daemon's real settings, ports and probe endpoints."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from helpers.workers import ROOT
from worker.config import ENV_PREFIX, Config

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
KUBERNETES = "1.32"
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}  # Prometheus Operator CRDs
FIELDS = {field.upper() for field in Config.__dataclass_fields__}


def kubectl() -> str:
    found = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
    assert Path(found).exists(), "kubectl missing: bash deploy/run.sh test provides it"
    return found


def render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def settings(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The worker's ConfigMap (the dashboard ConfigMap is the other one)."""
    return next(
        d["data"] for d in docs if d["kind"] == "ConfigMap" and "SANDBOX_STATE_DIR" in d["data"]
    )


def listen_port(config: dict[str, str], name: str) -> int:
    return int(config[f"{ENV_PREFIX}{name.upper()}_LISTEN"].rsplit(":", 1)[1])


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def test_there_are_overlays_to_check() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)


def test_every_resource_validates_against_the_kubernetes_schemas(
    rendered: list[dict[str, Any]],
) -> None:
    for doc in rendered:
        if doc["kind"] in OPERATOR_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["spec"]
            continue
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_the_config_map_holds_only_settings_the_daemon_has(rendered: list[dict[str, Any]]) -> None:
    data = next(
        d for d in rendered if d["kind"] == "ConfigMap" and "SANDBOX_STATE_DIR" in d["data"]
    )
    unknown = [key for key in data["data"] if key.removeprefix(ENV_PREFIX) not in FIELDS]
    assert not unknown
    Config.from_env(data["data"])  # and the daemon accepts every value


def test_ports_probes_and_drain_match_the_daemon(rendered: list[dict[str, Any]]) -> None:
    config = settings(rendered)
    sts = one(rendered, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    [container] = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "grpc": listen_port(config, "grpc"),
        "automation": listen_port(config, "automation"),
        "metrics": listen_port(config, "metrics"),
        "http-api": listen_port(config, "http_api"),
    }
    for env in container["env"]:
        if env["name"].startswith(ENV_PREFIX):
            assert env["name"].removeprefix(ENV_PREFIX) in FIELDS
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[kind]
        if "grpc" in probe:
            assert probe["grpc"]["port"] == ports["grpc"]
            assert "SANDBOX_TLS_CERT_FILE" not in config, "gRPC probes cannot speak TLS"
        else:
            assert probe["httpGet"]["path"] in ("/healthz", "/readyz")
            assert probe["httpGet"]["port"] in ports
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = float(config["SANDBOX_DRAIN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 10
    service = one(rendered, "Service")
    assert (
        service["spec"]["clusterIP"] == "None"
        and sts["spec"]["serviceName"] == service["metadata"]["name"]
    )
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    url = next(e["value"] for e in container["env"] if e["name"] == "SANDBOX_PUBLIC_AUTOMATION_URL")
    assert f".{service['metadata']['name']}." in url and url.endswith(f":{ports['automation']}")


def test_the_pod_runs_as_non_root_with_a_memory_backed_dev_shm(
    rendered: list[dict[str, Any]],
) -> None:
    pod = one(rendered, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {"/dev/shm", "/var/lib/sandbox-worker", "/tmp"} <= mounts


def test_the_mtls_overlay_mounts_what_the_daemon_reads(rendered: list[dict[str, Any]]) -> None:
    config = settings(rendered)
    if "SANDBOX_TLS_CERT_FILE" not in config:
        pytest.skip("this overlay runs plaintext gRPC")
    [container] = one(rendered, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    for key in ("SANDBOX_TLS_CERT_FILE", "SANDBOX_TLS_KEY_FILE", "SANDBOX_TLS_CLIENT_CA_FILE"):
        assert any(config[key].startswith(m + "/") for m in mounts), key


def test_alerts_and_the_dashboard_use_metrics_the_daemon_exports() -> None:
    exported = set(re.findall(r'"(sandbox_[a-z_]+)"', (ROOT / "worker" / "metrics.py").read_text()))
    exported |= {name.removesuffix("_total") for name in exported}
    texts = [
        (K8S / "components" / "monitoring" / "prometheusrule.yaml").read_text(),
        (K8S / "components" / "monitoring" / "grafana-dashboard.json").read_text(),
    ]
    used = {m for text in texts for m in re.findall(r"\b(sandbox_[a-z_]+)", text)}
    derived = {"sandbox_session_utilisation"}  # the recording rule itself
    suffixes = ("_bucket", "_count", "_sum", "_total")
    missing = {
        name
        for name in used - derived
        if name not in exported and not any(name.removesuffix(s) in exported for s in suffixes)
    }
    assert not missing


def test_the_image_installs_with_the_readmes_script_and_runs_as_the_manifests_user() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    # The public base by default; CI builds on a local one (test_image.py).
    assert dockerfile.startswith("#") and "ARG BASE=debian:bookworm-slim" in dockerfile
    assert "FROM ${BASE}" in dockerfile
    assert "RUN bash deploy/run.sh install" in dockerfile
    assert "bash deploy/run.sh serve" in (ROOT / "README.md").read_text()
    assert re.search(r"^USER 10001", dockerfile, re.M)
    assert '"/usr/bin/tini", "--"' in dockerfile
    sts = yaml.safe_load((K8S / "base" / "statefulset.yaml").read_text())
    assert sts["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    for path in re.findall(r"^COPY (\S+)", dockerfile, re.M):
        assert (ROOT / path).exists(), path
