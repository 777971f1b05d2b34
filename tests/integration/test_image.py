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
manifests' grace period, and nothing left behind.

The same image under the shipped seccomp profile (the prod overlay's
component) runs every browser in Chromium's sandbox and holds a session to
its memory budget without cgroups; under the runtime's default profile the
worker refuses `on` and falls back under `auto`; and the user-namespaced
alternative (the userns component) runs a uid per browser."""

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
from grpc_health.v1 import health_pb2, health_pb2_grpc

from helpers.addons import extension_pb, marker_extension, policy_pb, put
from helpers.faults import EAT_MEMORY_STEADILY
from helpers.manifests import render_with, worker_pod
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
PODMAN = ["podman", "--runtime", "runc"]
# podman's default rlimits are refused on hosts like this one; a container
# may have at most the test's own (and runc set no more than 32768 processes).
NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
_HARD_NPROC = resource.getrlimit(resource.RLIMIT_NPROC)[1]
NPROC = 32768 if _HARD_NPROC == resource.RLIM_INFINITY else min(_HARD_NPROC, 32768)
LIMITS = ["--ulimit", f"nofile={NOFILE}:{NOFILE}", "--ulimit", f"nproc={NPROC}:{NPROC}"]


# A user-namespaced pod (hostUsers: false) gets 65536 ids of the node's;
# podman maps the same with --uidmap (from an id range no one here uses).
POD_IDS = 300000


def manifests(
    *components: str,
) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """The ConfigMap's environment, the pod spec and the worker container,
    of the base with `components`."""
    return worker_pod(render_with(*components))


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

    def host_pids(self) -> dict[int, str]:
        """Every process of the container by its pid on the host, with its
        arguments (the host's /proc then tells its namespaces and seccomp)."""
        lines = self.podman("top", self.name, "hpid", "args").stdout.splitlines()[1:]
        return {int(pid): args for pid, args in (line.split(None, 1) for line in lines)}


@contextlib.contextmanager
def container(
    image: str,
    tmp: Path,
    moto: SecretsManager,
    components: tuple[str, ...] = (),
    seccomp: Path | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[Container]:
    """The image run as the StatefulSet of the base with `components` runs
    it: its user, security context and ConfigMap (plus `settings`).
    `seccomp` is the file a Localhost seccompProfile names, or what stands
    for the runtime's default (None: podman's own, which CRI-O shares)."""
    config, pod, spec = manifests(*components)
    context, pod_context = spec["securityContext"], pod["securityContext"]
    user = f"{pod_context['runAsUser']}:{pod_context['runAsGroup']}"
    in_userns = pod.get("hostUsers") is False
    # The volumes: emptyDirs (and the secret) the pod's user can write, as
    # the node sees that user.
    owner = pod_context["runAsUser"] + (POD_IDS if in_userns else 0)
    base = Path(tmp)
    volumes = {}
    for mount in spec["volumeMounts"]:
        if mount["mountPath"] == "/dev/shm":
            continue  # --shm-size, as the memory-backed emptyDir
        host = base / mount["name"]
        host.mkdir()
        shutil.chown(host, owner, owner)
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
            **(settings or {}),
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
    if in_userns:
        argv += ["--uidmap", f"0:{POD_IDS}:65536", "--gidmap", f"0:{POD_IDS}:65536"]
    if context["readOnlyRootFilesystem"]:
        argv.append("--read-only")
    argv += ["--cap-drop", "ALL"]
    assert context["capabilities"]["drop"] == ["ALL"]
    for cap in context["capabilities"].get("add", []):
        argv += ["--cap-add", cap]
    if context["allowPrivilegeEscalation"] is False:
        argv += ["--security-opt", "no-new-privileges"]
    profile = pod_context["seccompProfile"]["type"]
    assert profile in ("Localhost", "RuntimeDefault")
    assert seccomp is not None or profile == "RuntimeDefault", "a Localhost profile needs its file"
    if seccomp is not None:
        argv += ["--security-opt", f"seccomp={seccomp}"]
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


@contextlib.asynccontextmanager
async def served(
    image: str,
    tmp: Path,
    moto: SecretsManager,
    components: tuple[str, ...] = (),
    seccomp: Path | None = None,
    settings: dict[str, str] | None = None,
) -> AsyncIterator[tuple[Container, grpc.aio.Channel]]:
    """A container that answers gRPC health, and a channel to it."""
    with container(image, tmp, moto, components, seccomp, settings) as running:
        try:
            await healthy(running.ports["grpc"])
        except BaseException:
            print(running.logs()[-4000:])
            raise
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.ports['grpc']}") as channel:
            yield running, channel


@pytest_asyncio.fixture
async def stubs(image: str, tmp_path: Path, moto: SecretsManager) -> AsyncIterator[Any]:
    async with served(image, tmp_path, moto) as (running, channel):
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

    # An extension from S3 loads in the image's Chromium; policies need a
    # mount namespace, which this pod (no capabilities) cannot make.
    location = put(moto, bucket, "marker.zip", marker_extension())
    marked = await sessions.StartBrowserSession(
        pb.StartBrowserSessionRequest(extensions=[extension_pb(location)])
    )
    async with connected_page(marked) as page:
        await page.goto(f"{web}/index.html")
        assert await page.title() == "marked: sandbox test page"
    await sessions.StopBrowserSession(pb.StopBrowserSessionRequest(session_id=marked.session_id))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await sessions.StartBrowserSession(
            pb.StartBrowserSessionRequest(
                enterprise_policies=[policy_pb({"bucket": bucket, "prefix": "p.json"}, "MANAGED")]
            )
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot give a browser policies of its own" in refused.value.details()

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


# -- Chromium's sandbox under the shipped seccomp profile (the prod overlay)

SECCOMP = ROOT / "deploy" / "k8s" / "components" / "seccomp" / "sandbox-worker.json"


def runtime_default(tmp: Path) -> Path:
    """The shipped profile without what it adds for Chromium: the runtime's
    default (containerd's, as Kubernetes' RuntimeDefault) for this pod."""
    profile = json.loads(SECCOMP.read_text())
    profile["syscalls"] = [
        rule for rule in profile["syscalls"] if not rule["comment"].startswith("Added for Chromium")
    ]
    path = tmp / "runtime-default.json"
    path.write_text(json.dumps(profile))
    return path


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}


def namespaces(pid: int) -> dict[str, str]:
    return {ns: os.readlink(f"/proc/{pid}/ns/{ns}") for ns in ("user", "pid", "net")}


def browser_of(processes: dict[int, str], session_id: str) -> tuple[int, list[int]]:
    """A session's browser process and its renderers, by host pid."""
    # The browser leads its process group (crashpad's handler names the
    # session's directory too, but runs in the browser's group).
    [browser] = [p for p, args in processes.items() if session_id in args and os.getpgid(p) == p]
    group = [p for p in processes if os.getpgid(p) == browser]
    return browser, [p for p in group if "--type=renderer" in processes[p]]


def root_entries(pid: int) -> list[str]:
    """What a process sees at its root; a root whose directory was removed
    with its process cannot even be listed (ESRCH): nothing."""
    try:
        return os.listdir(f"/proc/{pid}/root")
    except ProcessLookupError:
        return []


def assert_sandboxed(processes: dict[int, str], session_id: str) -> int:
    """The checks the bare-host tests make, from the host: the session's
    renderers run under Chromium's seccomp-bpf filter, in user, pid and
    network namespaces of their own, with an empty root. Returns the
    browser's host pid."""
    browser, renderers = browser_of(processes, session_id)
    assert renderers and "--no-sandbox" not in processes[browser]
    outside = namespaces(browser)
    for pid in renderers:
        assert proc_status(pid)["Seccomp"] == "2"  # seccomp-bpf, Chromium's own
        inside = namespaces(pid)
        assert all(inside[ns] != outside[ns] for ns in outside), (inside, outside)
        # Its root is the directory it was chrooted into, which belonged to
        # a process that has gone: nothing to open there, no other
        # session's files (nor its own).
        assert os.readlink(f"/proc/{pid}/root") != "/"
        assert root_entries(pid) == []
    return browser


def log_events(logs: str, event: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in logs.splitlines() if f'"event": "{event}"' in line]


@pytest.mark.timeout(600)
async def test_under_the_shipped_profile_browsers_run_in_chromiums_sandbox(
    image: str, tmp_path: Path, moto: SecretsManager, web: str
) -> None:
    assert manifests("seccomp")[0]["SANDBOX_BROWSER_SANDBOX"] == "on"
    settings = {
        # Containers have no writable cgroupfs: the budget is held by sampling.
        "SANDBOX_SESSION_MEMORY_MB": "700",
        "SANDBOX_SESSION_MEMORY_GRACE_S": "1",
    }
    async with served(image, tmp_path, moto, ("seccomp",), SECCOMP, settings) as (
        running,
        channel,
    ):
        sessions = pb_grpc.BrowserSessionsStub(channel)
        logs = running.logs()
        assert log_events(logs, "worker.browser_sandbox"), logs[-2000:]
        [limits] = log_events(logs, "worker.session_limits")
        assert limits["by"] == "sampling" and "no cgroups" in limits["reason"]
        a = await sessions.StartBrowserSession(pb.StartBrowserSessionRequest())
        b = await sessions.StartBrowserSession(pb.StartBrowserSessionRequest())
        async with connected_page(a) as page, connected_page(b) as greedy:
            await page.goto(f"{web}/index.html")
            await greedy.goto(f"{web}/index.html")
            processes = running.host_pids()
            assert_sandboxed(processes, a.session_id)
            # What a page itself can try: another session's profile, by URL.
            other, _ = browser_of(processes, b.session_id)
            profile = next(
                arg.split("=", 1)[1]
                for arg in processes[other].split()
                if arg.startswith("--user-data-dir=")
            )
            read = await page.evaluate(
                "url => fetch(url).then(r => r.text(), e => 'refused: ' + e)",
                f"file://{profile}/Local State",
            )
            assert read.startswith("refused"), read
            # One session over its memory budget: it alone ends, the pod and
            # the other session carry on.
            eat = asyncio.ensure_future(greedy.evaluate(EAT_MEMORY_STEADILY))
            eat.add_done_callback(lambda f: f.cancelled() or f.exception())

            async def ended() -> Any:
                got = await sessions.GetBrowserSession(
                    pb.GetBrowserSessionRequest(session_id=b.session_id)
                )
                return got if got.status == pb.TERMINATED else None

            got = await eventually(ended, timeout=60)
            eat.cancel()
            assert got.termination_reason == pb.OUT_OF_MEMORY
            assert await page.evaluate("1 + 1") == 2
        assert running.state()["Running"] is True
        [killed] = log_events(running.logs(), "session.out_of_memory")
        assert killed["by"] == "sampling" and killed["used_mb"] > 700


@pytest.mark.timeout(600)
async def test_under_the_runtime_default_on_refuses_to_start_and_auto_falls_back(
    image: str, tmp_path: Path, moto: SecretsManager, web: str
) -> None:
    profile = runtime_default(tmp_path)
    (tmp_path / "on").mkdir()
    (tmp_path / "auto").mkdir()
    # containerd's default stands in for the runtime's (podman's allows unshare).
    on = {"SANDBOX_BROWSER_SANDBOX": "on"}
    with container(image, tmp_path / "on", moto, (), profile, on) as refused:
        state = await eventually(
            lambda: (s := refused.state()) and not s.get("Running") and s, timeout=60
        )
        logs = refused.logs()
    assert state["ExitCode"] != 0
    assert "browser_sandbox: 'on', but an unprivileged user cannot create the namespaces" in logs
    assert "unshare failed: Operation not permitted" in logs
    assert manifests()[0]["SANDBOX_BROWSER_SANDBOX"] == "auto"  # the base's
    async with served(image, tmp_path / "auto", moto, (), profile) as (running, channel):
        [off] = log_events(running.logs(), "worker.browser_sandbox_off")
        assert "cannot create the namespaces and chroot" in off["reason"]
        sessions = pb_grpc.BrowserSessionsStub(channel)
        started = await sessions.StartBrowserSession(pb.StartBrowserSessionRequest())
        async with connected_page(started) as page:
            await page.goto(f"{web}/index.html")
            assert await page.evaluate("1 + 1") == 2
            browser, _ = browser_of(running.host_pids(), started.session_id)
            assert "--no-sandbox" in running.host_pids()[browser]


@pytest.mark.timeout(600)
async def test_a_user_namespaced_pod_runs_each_browser_as_its_own_user_in_the_sandbox(
    image: str, tmp_path: Path, moto: SecretsManager, web: str
) -> None:
    # The userns component: hostUsers false (podman's --uidmap here), root
    # of the pod's namespace with namespaced capabilities, RuntimeDefault
    # (podman's default profile, the one CRI-O uses).
    async with served(image, tmp_path, moto, ("userns",)) as (running, channel):
        assert log_events(running.logs(), "worker.browser_sandbox")[0]["users"] == "per browser"
        sessions = pb_grpc.BrowserSessionsStub(channel)
        a = await sessions.StartBrowserSession(pb.StartBrowserSessionRequest())
        b = await sessions.StartBrowserSession(pb.StartBrowserSessionRequest())
        async with connected_page(a) as page, connected_page(b) as other:
            await page.goto(f"{web}/index.html")
            await other.goto(f"{web}/index.html")
            processes = running.host_pids()
            uids = set()
            for started in (a, b):
                browser = assert_sandboxed(processes, started.session_id)
                uid = int(proc_status(browser)["Uid"].split()[0])
                # A browser uid of the pod's range: unprivileged on the node.
                assert POD_IDS + 20000 <= uid < POD_IDS + 65536, uid
                uids.add(uid)
            assert len(uids) == 2  # one each
            daemon = next(p for p, args in processes.items() if "sandbox-worker serve" in args)
            assert int(proc_status(daemon)["Uid"].split()[0]) == POD_IDS  # the pod's root
