"""What sessions route to in the tests: origins, real proxies, Secrets Manager.

- `origin`: one loopback HTTP server answering for any host name
  (`web.example.test`, `api.company.test`, ...) that records every request,
  including the `Via` header a proxy adds, so a test can tell which path a
  request took.
- `tinyproxy`: an open proxy. It resolves test names through its own
  /etc/hosts, bind-mounted in a private mount namespace (the host's file is
  never touched).
- `squid`: a proxy that demands Basic auth (`basic_ncsa_auth`), with its own
  hosts file. Its access log names the user of each request.
- `moto`: `moto_server` serving Secrets Manager; the tests' boto3 and the
  in-process worker reach it through AWS_ENDPOINT_URL.

All run for the whole test session, each in its own process group, killed
by group at the end. Tests tell their requests apart by unique paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import trustme

from helpers.workers import RunningWorker, make_config, running_worker
from worker.cli import groups

TEST_DOMAINS = (".example.test", ".company.test")
HOST_OVERRIDES = tuple(f"{domain}=127.0.0.1" for domain in TEST_DOMAINS)
PROXY_USER, PROXY_PASSWORD = "alice", "Pr0xy-s3cret.value"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{process.args!r} did not listen on {port} within {timeout}s")


@contextlib.contextmanager
def process_group(argv: list[str], log: Path, port: int, **kw: Any) -> Iterator[None]:
    with open(log, "ab") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw
        )
    try:
        wait_listening(port, process)
        yield
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM first (squid removes its /dev/shm segments on the way out),
    SIGKILL the group after a grace period."""
    groups.stop_group(process, 5)


def unique_path(label: str = "t") -> str:
    return f"/{label}/{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------- origins


@dataclasses.dataclass(frozen=True)
class Seen:
    host: str
    path: str
    via: str
    proxy_authorization: str


class Origin(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops SYNs when a page opens many

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), OriginHandler)
        self.seen: list[Seen] = []
        self.tls = tls
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, host: str, path: str) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def requests_for(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]


class OriginHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Origin

    def do_GET(self) -> None:
        host = self.headers.get("Host", "").rsplit(":", 1)[0]
        self.server.seen.append(
            Seen(
                host,
                self.path,
                self.headers.get("Via", ""),
                self.headers.get("Proxy-Authorization", ""),
            )
        )
        body = f"<html><title>{host}</title><body>{host}{self.path}</body></html>"
        self._answer(body.encode(), "text/html")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.seen.append(
            Seen(self.headers.get("Host", "").rsplit(":", 1)[0], self.path, "", "")
        )
        answer = f"{len(body)} {hashlib.sha256(body).hexdigest()}"
        self._answer(answer.encode(), "text/plain")

    def _answer(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serving(server: Origin) -> Iterator[Origin]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="session")
def origin() -> Iterator[Origin]:
    with serving(Origin()) as server:
        yield server


@dataclasses.dataclass
class TLSOrigin:
    """An HTTPS origin for the test domains, and the private CA behind it."""

    server: Origin
    ca: trustme.CA
    ca_file: Path

    def url(self, host: str, path: str) -> str:
        return self.server.url(host, path)


def tls_serving(ca: trustme.CA) -> contextlib.AbstractContextManager[Origin]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(f"*{domain}" for domain in TEST_DOMAINS)).configure_cert(context)
    return serving(Origin(tls=context))


@pytest.fixture(scope="session")
def tls_origin(proxy_dir: Path) -> Iterator[TLSOrigin]:
    ca = trustme.CA(organization_name="sandbox test origin CA")
    ca_file = proxy_dir / "origin-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca_file.chmod(0o644)
    with tls_serving(ca) as server:
        yield TLSOrigin(server, ca, ca_file)


@pytest_asyncio.fixture
async def routed_worker(tmp_path: Path, secrets_dir: Path) -> AsyncIterator[RunningWorker]:
    """A worker that resolves the test domains to loopback and reads
    `file:` secrets from the requesting module's `secrets_dir` fixture."""
    config = make_config(tmp_path, host_overrides=HOST_OVERRIDES, secrets_dir=secrets_dir)
    async with running_worker(config) as running:
        yield running


# ---------------------------------------------------------------- proxies


@dataclasses.dataclass
class Proxy:
    port: int
    access_log: Path

    def log_lines(self, needle: str) -> list[str]:
        text = self.access_log.read_text(errors="replace") if self.access_log.exists() else ""
        return [line for line in text.splitlines() if needle in line]

    def wait_lines(self, needle: str, timeout: float = 10.0) -> list[str]:
        """Lines naming `needle`, waiting for them: squid logs a tunnel only
        once it has closed."""
        deadline = time.monotonic() + timeout
        while not (lines := self.log_lines(needle)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return lines


def _hosts_file(path: Path, names: list[str]) -> Path:
    path.write_text("".join(f"127.0.0.1 {name}\n" for name in names))
    return path


# Names the proxies resolve; tests use only these.
TEST_HOSTS = [
    f"{sub}{domain}"
    for domain in TEST_DOMAINS
    for sub in ("web", "api", "www", "secure", "other", "deep.api", "auth")
] + ["example.test", "company.test"]


@pytest.fixture(scope="session")
def proxy_dir() -> Iterator[Path]:
    # Squid drops to the 'proxy' user: its directory must be reachable by
    # it, which pytest's 0700 tmp directories are not.
    path = Path(tempfile.mkdtemp(prefix="sandbox-proxies-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def tinyproxy(proxy_dir: Path) -> Iterator[Proxy]:
    port = free_port()
    base = proxy_dir / "tinyproxy"
    base.mkdir()
    hosts = _hosts_file(base / "hosts", TEST_HOSTS)
    log = base / "tinyproxy.log"
    conf = base / "tinyproxy.conf"
    conf.write_text(
        f'Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile "{log}"\nLogLevel Connect\n'
        'MaxClients 200\nAllow 127.0.0.1\nViaProxyName "tinyproxy-test"\n'
    )
    # Its own /etc/hosts, in a mount namespace of its own.
    script = f"mount --bind {hosts} /etc/hosts && exec tinyproxy -d -c {conf}"
    with process_group(["unshare", "-m", "sh", "-c", script], base / "out.log", port):
        yield Proxy(port, log)


@pytest.fixture(scope="session")
def squid(proxy_dir: Path) -> Iterator[Proxy]:
    port = free_port()
    base = proxy_dir / "squid"
    base.mkdir()
    hosts = _hosts_file(base / "hosts", TEST_HOSTS)
    subprocess.run(
        ["htpasswd", "-bc", str(base / "passwd"), PROXY_USER, PROXY_PASSWORD],
        check=True,
        capture_output=True,
    )
    conf = base / "squid.conf"
    conf.write_text(
        f"http_port 127.0.0.1:{port}\n"
        "visible_hostname squid-test\n"
        f"pid_filename {base}/squid.pid\n"
        f"cache_log {base}/cache.log\n"
        f"access_log stdio:{base}/access.log\n"
        f"hosts_file {hosts}\n"
        f"coredump_dir {base}\n"
        "cache deny all\ncache_mem 8 MB\nshutdown_lifetime 0 seconds\n"
        f"auth_param basic program /usr/lib/squid/basic_ncsa_auth {base}/passwd\n"
        "auth_param basic realm sandbox-test\n"
        "acl authed proxy_auth REQUIRED\n"
        "http_access allow authed\nhttp_access deny all\n"
    )
    shutil.chown(base, "proxy", "proxy")
    for child in base.iterdir():
        shutil.chown(child, "proxy", "proxy")
    with process_group(["squid", "-N", "-f", str(conf)], base / "out.log", port):
        yield Proxy(port, base / "access.log")


@dataclasses.dataclass
class Interceptor:
    """mitmproxy: terminates TLS with certificates from its own CA."""

    port: int
    ca_pem: str


@pytest.fixture(scope="session")
def mitmproxy(proxy_dir: Path, tls_origin: TLSOrigin) -> Iterator[Interceptor]:
    port = free_port()
    base = proxy_dir / "mitmproxy"
    base.mkdir()
    hosts = _hosts_file(base / "hosts", TEST_HOSTS)
    # It checks the origin's certificate against the origin's CA, like a
    # corporate interceptor that trusts the internal CA.
    script = (
        f"mount --bind {hosts} /etc/hosts && exec mitmdump --listen-host 127.0.0.1"
        f" --listen-port {port} --set confdir={base}"
        f" --set ssl_verify_upstream_trusted_ca={tls_origin.ca_file} -q"
    )
    with process_group(["unshare", "-m", "sh", "-c", script], base / "out.log", port):
        yield Interceptor(port, (base / "mitmproxy-ca-cert.pem").read_text())


# ---------------------------------------------------------------- secrets


@dataclasses.dataclass
class SecretsManager:
    endpoint: str

    def client(self) -> Any:
        import boto3

        return boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=self.endpoint)

    def put(self, name: str, value: str) -> str:
        """Create a secret; returns its ARN."""
        return str(self.client().create_secret(Name=name, SecretString=value)["ARN"])

    def put_credentials(self, name: str, username: str, password: str) -> str:
        return self.put(name, json.dumps({"username": username, "password": password}))

    def s3(self) -> Any:
        import boto3

        return boto3.client("s3", region_name="us-east-1", endpoint_url=self.endpoint)

    def bucket(self) -> str:
        """A new, empty bucket."""
        name = f"rec-{uuid.uuid4().hex[:12]}"
        self.s3().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        s3 = self.s3()
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


class FaultProxy:
    """A TCP proxy in front of a server that can be told to refuse or to
    stall connections (and cuts the ones it holds when told), to make S3
    unreachable without stopping it (moto keeps buckets in memory)."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self.mode = "pass"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._live: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def set(self, mode: str) -> None:
        self.mode = mode
        if mode != "pass":
            with self._lock:
                for sock in self._live:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self.set("refuse")
        self._thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            if self.mode == "refuse":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                client.close()  # a reset
            else:
                threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        deadline = time.monotonic() + 120
        while self.mode == "stall" and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.05)  # accepted, never answered
        if self.mode != "pass":
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self._upstream), timeout=5)
        upstream.settimeout(None)
        with self._lock:
            self._live.update((client, upstream))
        pump = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        pump.start()
        _pump(client, upstream)
        pump.join(5)
        with self._lock:
            self._live.difference_update((client, upstream))
        client.close()
        upstream.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


class FlakyHTTP:
    """An HTTP forwarder in front of moto that answers every `fail_every`-th
    request itself with a 503 SlowDown or a 500 InternalError (alternating,
    as S3 does under load), and holds every forwarded request `delay_s`
    first: an S3 that is slow and intermittently failing, while the server
    behind keeps its state. Counts what it did."""

    def __init__(self, upstream_port: int, fail_every: int = 0, delay_s: float = 0.0) -> None:
        self.fail_every, self.delay_s = fail_every, delay_s
        self.requests = self.failed = 0
        self._lock = threading.Lock()
        flaky = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with flaky._lock:
                    flaky.requests += 1
                    fail = flaky.fail_every and flaky.requests % flaky.fail_every == 0
                    if fail:
                        flaky.failed += 1
                if fail:
                    status, code = (503, "SlowDown") if flaky.failed % 2 else (500, "InternalError")
                    error = f"<Error><Code>{code}</Code><Message>injected</Message></Error>"
                    self._answer(status, {"Content-Type": "application/xml"}, error.encode())
                    return
                time.sleep(flaky.delay_s)
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    reply = upstream.getresponse()
                    data = reply.read()
                    hop = ["connection", "transfer-encoding"]
                    if self.command != "HEAD":  # a HEAD's length is the object's
                        hop.append("content-length")
                    kept = {k: v for k, v in reply.getheaders() if k.lower() not in hop}
                    self._answer(reply.status, kept, data)
                finally:
                    upstream.close()

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if "content-length" not in {k.lower() for k in headers}:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def s3_faults(moto: SecretsManager) -> Iterator[FaultProxy]:
    proxy = FaultProxy(int(moto.endpoint.rsplit(":", 1)[1]))
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture(scope="session")
def moto(proxy_dir: Path) -> Iterator[SecretsManager]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    argv = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    env_vars = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env_vars}
    with process_group(argv, proxy_dir / "moto.log", port):
        os.environ.update(env_vars)  # the in-process worker's boto3 reads these
        try:
            yield SecretsManager(endpoint)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
