"""The container image and the Kubernetes manifests, checked against the
daemon they deploy: every overlay renders, validates against the Kubernetes
schemas, and names the daemon's real settings, ports and probe endpoints."""

from __future__ import annotations

import json
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from helpers.manifests import K8S, one, render, render_with, settings, worker_pod
from helpers.workers import ROOT
from worker.config import ENV_PREFIX, Config

OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
KUBERNETES = "1.32"
# Operators' CRDs: the Prometheus Operator's, the Security Profiles Operator's.
OPERATOR_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
    "SeccompProfile": "security-profiles-operator.x-k8s.io/v1beta1",
}
SECCOMP = K8S / "components" / "seccomp"
FIELDS = {field.upper() for field in Config.__dataclass_fields__}


def listen_port(config: dict[str, str], name: str) -> int:
    return int(config[f"{ENV_PREFIX}{name.upper()}_LISTEN"].rsplit(":", 1)[1])


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def test_there_are_overlays_to_check() -> None:
    assert {"dev", "prod", "fleet"} <= set(OVERLAYS)


def test_every_resource_validates_against_the_kubernetes_schemas(
    rendered: list[dict[str, Any]],
) -> None:
    for doc in rendered:
        if doc["kind"] in OPERATOR_KINDS:
            assert doc["apiVersion"] == OPERATOR_KINDS[doc["kind"]] and doc["spec"]
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
    expected = {
        "grpc": listen_port(config, "grpc"),
        "automation": listen_port(config, "automation"),
        "metrics": listen_port(config, "metrics"),
        "http-api": listen_port(config, "http_api"),
    }
    values = {e["name"]: e.get("value", "") for e in container["env"]}
    if "SANDBOX_LINK_LISTEN" in values:  # a fleet's worker: gateways call it over the link
        expected["link"] = listen_port(values, "link")
    assert ports == expected
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
    [service] = [
        d for d in rendered if d["kind"] == "Service" and d["metadata"]["name"] == "sandbox-worker"
    ]
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
    sources = (ROOT / "worker" / "metrics.py", ROOT / "worker" / "fleet" / "metrics.py")
    exported = {m for p in sources for m in re.findall(r'"(sandbox_[a-z_]+)"', p.read_text())}
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


def seccomp_profile() -> dict[str, Any]:
    """The plain JSON profile, for nodes that install it themselves."""
    return dict(json.loads((SECCOMP / "sandbox-worker.json").read_text()))


def test_the_seccomp_profile_is_the_same_for_the_operator_and_for_nodes() -> None:
    plain = seccomp_profile()
    for rule in plain["syscalls"]:
        assert rule.pop("comment")  # every rule says why it is there
    operator = yaml.safe_load((SECCOMP / "seccompprofile.yaml").read_text())
    assert operator["spec"] == plain
    # The operator's schema: no field it would drop.
    assert set(plain) == {"defaultAction", "architectures", "syscalls"}
    for rule in plain["syscalls"]:
        assert set(rule) <= {"names", "action", "errnoRet", "args"}, rule


def test_the_seccomp_profile_adds_to_the_runtime_default_only_what_chromium_needs() -> None:
    profile = seccomp_profile()
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    added = [r for r in profile["syscalls"] if r["comment"].startswith("Added for Chromium")]
    allowed = {
        n for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]
    }
    # The runtime default gives a container without capabilities none of these.
    for never in ("mount", "umount2", "pivot_root", "setns", "bpf", "keyctl", "add_key"):
        assert never not in allowed, never
    assert sorted(n for r in added for n in r["names"]) == ["chroot", "clone", "unshare"]
    [namespaces] = [r for r in added if "unshare" in r["names"]]
    # New user, pid and network namespaces only: not mount, cgroup, UTS or IPC.
    [arg] = namespaces["args"]
    new_ns, new_cgroup, new_uts, new_ipc = 0x00020000, 0x02000000, 0x04000000, 0x08000000
    assert arg == {
        "index": 0,
        "value": new_ns | new_cgroup | new_uts | new_ipc,
        "valueTwo": 0,
        "op": "SCMP_CMP_MASKED_EQ",
    }


def test_the_prod_overlay_runs_chromiums_sandbox_under_the_shipped_profile() -> None:
    docs = render("prod")
    pod = one(docs, "StatefulSet")["spec"]["template"]["spec"]
    profile = one(docs, "SeccompProfile")
    namespace, name = profile["metadata"]["namespace"], profile["metadata"]["name"]
    assert pod["securityContext"]["seccompProfile"] == {
        "type": "Localhost",
        "localhostProfile": f"operator/{namespace}/{name}.json",
    }
    config = settings(docs)
    assert config["SANDBOX_BROWSER_SANDBOX"] == "on"
    Config.from_env(config)  # "on" with nothing that contradicts it
    # Everything else as strict as the base.
    [container] = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_the_base_falls_back_under_the_runtime_default_and_says_so() -> None:
    docs = render("dev")
    pod = one(docs, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    config = settings(docs)
    assert config["SANDBOX_BROWSER_SANDBOX"] == "auto"
    assert "--no-sandbox" not in config.get("SANDBOX_EXTRA_CHROMIUM_ARGS", "")


def test_the_user_namespaced_alternative_renders_and_fits_its_id_range() -> None:
    docs = render_with("userns")
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    pod = one(docs, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["hostUsers"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    caps = container["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"] and {"SYS_ADMIN", "SYS_CHROOT", "SETUID"} <= set(caps["add"])
    # The API server refuses SYS_ADMIN with allowPrivilegeEscalation false.
    assert container["securityContext"]["allowPrivilegeEscalation"] is True
    config = Config.from_env(settings(docs))
    assert config.browser_sandbox == "on"
    # A pod's user namespace maps 65536 ids: every browser uid must be one.
    assert config.browser_uid_base + 2 * config.max_sessions + 16 < 65536


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_the_fleet_gateway_listens_where_its_service_and_probes_say() -> None:
    docs = render("fleet")
    config = named(docs, "ConfigMap", "sandbox-gateway")["data"]
    assert all(key.removeprefix(ENV_PREFIX) in FIELDS for key in config)
    Config.from_env({**config, "SANDBOX_STORE_URL": "postgresql://u:p@db/sandbox"})
    deployment = named(docs, "Deployment", "sandbox-gateway")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["gateway"] and deployment["spec"]["replicas"] >= 2
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "grpc": listen_port(config, "grpc"),
        "automation": listen_port(config, "automation"),
        "http-api": listen_port(config, "http_api"),
        "metrics": listen_port(config, "metrics"),
    }
    service = named(docs, "Service", "sandbox-gateway")
    assert "clusterIP" not in service["spec"]  # load-balanced: any gateway answers
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    url = next(e["value"] for e in container["env"] if e["name"] == "SANDBOX_PUBLIC_AUTOMATION_URL")
    assert url.startswith("ws://sandbox-gateway.") and url.endswith(f":{ports['automation']}")
    assert named(docs, "PodDisruptionBudget", "sandbox-gateway")["spec"]["minAvailable"] == 1
    hpa = named(docs, "HorizontalPodAutoscaler", "sandbox-gateway")["spec"]
    assert hpa["scaleTargetRef"]["name"] == "sandbox-gateway" and hpa["minReplicas"] >= 2


def test_the_fleets_members_read_the_store_the_example_cluster_makes() -> None:
    docs = render("fleet")
    cluster = yaml.safe_load((K8S / "examples" / "cnpg-cluster.yaml").read_text())
    secret = f"{cluster['metadata']['name']}-app"  # CloudNativePG's application Secret
    _, _, worker = worker_pod(docs)
    [gateway] = named(docs, "Deployment", "sandbox-gateway")["spec"]["template"]["spec"][
        "containers"
    ]
    for container in (worker, gateway):
        [store] = [e for e in container["env"] if e["name"] == "SANDBOX_STORE_URL"]
        assert store["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "uri"}
    advertised = next(e["value"] for e in worker["env"] if e["name"] == "SANDBOX_ADVERTISE_HOST")
    assert advertised.startswith("$(POD_NAME).sandbox-worker.")


def test_in_a_fleet_only_gateways_reach_the_workers() -> None:
    docs = render("fleet")
    policy = named(docs, "NetworkPolicy", "sandbox-worker")["spec"]["ingress"]
    by_port = {port["port"]: rule["from"] for rule in policy for port in rule.get("ports", [])}
    gateway = [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "sandbox-gateway"}}}]
    _, _, worker = worker_pod(docs)
    link = listen_port({e["name"]: e.get("value", "") for e in worker["env"]}, "link")
    assert by_port[50051] == by_port[link] == by_port[9223] == gateway
    assert 8090 not in by_port
    egress = named(docs, "NetworkPolicy", "sandbox-gateway")["spec"]["egress"]
    reached = {p["port"] for rule in egress for p in rule.get("ports", [])}
    assert reached >= {50051, link, 9223, 5432}


def test_monitoring_a_fleet_scrapes_its_gateways_beside_its_workers() -> None:
    docs = render_with("fleet", "monitoring")
    selector = one(docs, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
    endpoint = one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["port"]
    for name in ("sandbox-worker", "sandbox-gateway"):
        service = named(docs, "Service", name)
        assert selector.items() <= service["metadata"]["labels"].items(), name
        assert endpoint in {p["name"] for p in service["spec"]["ports"]}, name
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    ingress = named(docs, "NetworkPolicy", "sandbox-gateway")["spec"]["ingress"]
    assert any(rule["from"] == [monitoring] and {"port": 9464} in rule["ports"] for rule in ingress)
