"""The container image, built and run the way the Kubernetes manifests run it.

`deploy/image.sh` builds deploy/Dockerfile with podman on a Debian base made
here with debootstrap (no registry is needed; layers are cached between
runs). The container then runs as the StatefulSet says: uid 10001, a
read-only root filesystem, every capability dropped, no privilege
escalation, the ConfigMap's environment, a 1 GiB /dev/shm, the state and
/tmp volumes and the secrets mount, tini as PID 1. Everything is checked
from outside: gRPC health, a session driven with Playwright through the
automation port, its recording in the S3 server, /metrics, then SIGTERM:
a drain that ends the open session WORKER_SHUTDOWN, an exit inside the
manifests' grace period, and nothing left behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from helpers.upstreams import SecretsManager, free_port, unique_path
from helpers.waits import eventually
from helpers.workers import ROOT, connected_page
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="podman builds and runs images as root here"),
]

TAG = "localhost/sandbox-worker:test"
K8S = ROOT / "deploy" / "k8s" / "base"
PODMAN = ["podman", "--runtime", "runc"]
# podman's default rlimits are refused on hosts like this one; a container
# may have at most the test's own (and runc set no more than 32768 processes).
NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
_HARD_NPROC = resource.getrlimit(resource.RLIMIT_NPROC)[1]
NPROC = 32768 if _HARD_NPROC == resource.RLIM_INFINITY else min(_HARD_NPROC, 32768)
LIMITS = ["--ulimit", f"nofile={NOFILE}:{NOFILE}", "--ulimit", f"nproc={NPROC}:{NPROC}"]


def manifests() -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """The ConfigMap's environment, the pod spec and the worker container."""
    config = yaml.safe_load((K8S / "configmap.yaml").read_text())["data"]
    pod = yaml.safe_load((K8S / "statefulset.yaml").read_text())["spec"]["template"]["spec"]
    return config, pod, pod["containers"][0]


@pytest.fixture(scope="session")
def image() -> str:
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(ROOT / "deploy" / "image.sh"), TAG],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    size = subprocess.run(
        ["podman", "image", "inspect", TAG, "--format", "{{.Size}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    report = {"tag": TAG, "build_s": round(time.monotonic() - started, 1), "bytes": int(size)}
    artifacts = ROOT / "tests" / "artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "image.json").write_text(json.dumps(report) + "\n")
    return TAG


class Container:
    def __init__(self, name: str, base: Path, ports: dict[str, int]) -> None:
        self.name = name
        self.base = base
        self.ports = ports

    def podman(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def state(self) -> dict[str, Any]:
        out = self.podman("inspect", self.name, "--format", "{{json .State}}").stdout
        return dict(json.loads(out)) if out.strip() else {}

    def logs(self) -> str:
        done = self.podman("logs", self.name)
        return done.stdout + done.stderr

    def top(self) -> str:
        return self.podman("top", self.name, "user", "pid", "args").stdout


@contextlib.contextmanager
def container(image: str, tmp: Path, moto: SecretsManager) -> Iterator[Container]:
    config, pod, spec = manifests()
    context = spec["securityContext"]
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    # The volumes: emptyDirs (and the secret) the pod's fsGroup can write.
    base = Path(tmp)
    volumes = {}
    for mount in spec["volumeMounts"]:
        if mount["mountPath"] == "/dev/shm":
            continue  # --shm-size, as the memory-backed emptyDir
        host = base / mount["name"]
        host.mkdir()
        shutil.chown(host, 10001, 10001)
        volumes[mount["mountPath"]] = (host, mount.get("readOnly", False))
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]["sizeLimit"]
    # The Secret's files: the HTTP API's access keys, as the ConfigMap names.
    keys = Path(config["SANDBOX_HTTP_API_KEYS_FILE"])
    secrets = volumes[str(keys.parent)][0]
    (secrets / keys.name).write_text(json.dumps({"AKIAIMAGETEST": "image-test-secret"}))
    (secrets / keys.name).chmod(0o644)
    ports = {name: free_port() for name in ("grpc", "automation", "metrics", "http")}
    env = dict(config)
    env.update(
        {
            # Loopback ports of the host's network (the test talks only to
            # loopback), and what clients are told to connect to.
            "SANDBOX_GRPC_LISTEN": f"127.0.0.1:{ports['grpc']}",
            "SANDBOX_AUTOMATION_LISTEN": f"127.0.0.1:{ports['automation']}",
            "SANDBOX_METRICS_LISTEN": f"127.0.0.1:{ports['metrics']}",
            "SANDBOX_HTTP_API_LISTEN": f"127.0.0.1:{ports['http']}",
            "SANDBOX_PUBLIC_AUTOMATION_URL": f"ws://127.0.0.1:{ports['automation']}",
            "SANDBOX_RECORDING_STORAGE": "s3",
            "SANDBOX_S3_ENDPOINT_URL": moto.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    name = f"sandbox-test-{os.getpid()}-{free_port()}"
    argv = [
        *PODMAN,
        "run",
        "-d",
        "--name",
        name,
        *LIMITS,
        "--network",
        "host",
        "--user",
        user,
        "--shm-size",
        shm.replace("Gi", "g"),
        "--init=false",  # tini is the image's own PID 1
    ]
    if context["readOnlyRootFilesystem"]:
        argv.append("--read-only")
    if context["capabilities"]["drop"] == ["ALL"]:
        argv += ["--cap-drop", "ALL"]
    if context["allowPrivilegeEscalation"] is False:
        argv += ["--security-opt", "no-new-privileges"]
    for path, (host, read_only) in volumes.items():
        argv += ["-v", f"{host}:{path}:{'ro' if read_only else 'rw'}"]
    for key, value in env.items():
        argv += ["-e", f"{key}={value}"]
    argv += [image, *spec["args"]]
    subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
    running = Container(name, base, ports)
    try:
        yield running
    finally:
        running.podman("rm", "-f", "-t", "0", name)


async def healthy(port: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def serving() -> bool:
            try:
                answer = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            except grpc.aio.AioRpcError:
                return False
            return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

        await eventually(serving, timeout=60)


@pytest_asyncio.fixture
async def stubs(image: str, tmp_path: Path, moto: SecretsManager) -> AsyncIterator[Any]:
    with container(image, tmp_path, moto) as running:
        try:
            await healthy(running.ports["grpc"])
        except BaseException:
            print(running.logs()[-4000:])
            raise
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.ports['grpc']}") as channel:
            yield running, pb_grpc.BrowserSessionsStub(channel), pb_grpc.BrowsersStub(channel)


def metadata(moto: SecretsManager, bucket: str, session_id: str) -> dict[str, Any] | None:
    objects = moto.objects(bucket, f"image/{session_id}/")
    raw = objects.get(f"image/{session_id}/metadata.json")
    return dict(json.loads(raw)) if raw else None


@pytest.mark.timeout(1800)
async def test_the_image_runs_under_the_manifests_settings_and_drains_on_sigterm(
    stubs: Any, moto: SecretsManager, web: str
) -> None:
    running, sessions, browsers = stubs
    _, pod, _ = manifests()
    bucket = moto.bucket()
    created = await browsers.CreateBrowser(
        pb.CreateBrowserRequest(
            name="imaged",
            recording=pb.RecordingConfig(
                enabled=True, s3_location=pb.S3Location(bucket=bucket, prefix="image")
            ),
        )
    )
    # A session through the automation port, recorded to the S3 server.
    started = await sessions.StartBrowserSession(
        pb.StartBrowserSessionRequest(browser_identifier=created.browser_id)
    )
    path = unique_path("image")
    async with connected_page(started) as page:
        await page.goto(f"{web}/record.html?{path}")
        assert await page.title() == "Recorded page"
        processes = running.top()
    await sessions.StopBrowserSession(
        pb.StopBrowserSessionRequest(
            session_id=started.session_id, browser_identifier=created.browser_id
        )
    )
    # Inside: tini is PID 1, and everything runs as the manifests' user.
    lines = [line.split(None, 2) for line in processes.splitlines()[1:]]
    assert any(pid == "1" and "tini" in args for _, pid, args in lines), processes
    assert {user for user, _, _ in lines} == {"sandbox"}, processes
    assert running.podman("exec", running.name, "id", "-u", "sandbox").stdout.strip() == "10001"
    assert any("chromium" in args for _, _, args in lines), processes
    meta = await eventually(lambda: metadata(moto, bucket, started.session_id), timeout=30)
    assert meta["complete"] is True and meta["terminationReason"] == "STOPPED"

    scrape = f"http://127.0.0.1:{running.ports['metrics']}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(scrape, timeout=5).read())
    assert b"sandbox_sessions_started_total" in text

    # SIGTERM with a session open: drained, ended WORKER_SHUTDOWN, gone in time.
    open_one = await sessions.StartBrowserSession(
        pb.StartBrowserSessionRequest(browser_identifier=created.browser_id)
    )
    began = time.monotonic()
    running.podman("kill", "--signal", "TERM", running.name)
    grace = pod["terminationGracePeriodSeconds"]
    state = await eventually(
        lambda: (s := running.state()) and not s.get("Running") and s, timeout=grace
    )
    took = time.monotonic() - began
    logs = running.logs()
    assert state["ExitCode"] == 0, logs[-3000:]
    assert took < grace
    meta = await eventually(lambda: metadata(moto, bucket, open_one.session_id), timeout=30)
    assert meta["terminationReason"] == "WORKER_SHUTDOWN", meta
    # It said so, and left no session's files in its runtime volume.
    assert '"event": "worker.signal"' in logs and '"event": "worker.stopped"' in logs, logs[-3000:]
    # The /tmp volume held every session's tree: it is empty, and the state
    # volume's spool and per-session folders are too (all was uploaded).
    assert not list((running.base / "tmp").iterdir())
    state = running.base / "state"
    assert (state / "state.db").exists()
    assert not list((state / "spool").iterdir()) and not list((state / "sessions").iterdir())
