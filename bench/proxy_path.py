"""Proxy path: a session routed through the worker's relay to a proxy, vs.
the same Chromium pointed straight at that proxy.

Two workers run side by side. One starts sessions with a
`proxyConfiguration` whose default proxy is a local tinyproxy (so requests
go browser -> relay -> tinyproxy -> origin). The other gives its browsers
`--proxy-server` for that same tinyproxy directly (browser -> tinyproxy ->
origin). Both are driven the same way, through the automation endpoint, and
measured inside the page, so only the relay differs:

- a page with 100 sub-resources: `loadEventEnd` of the navigation entry;
- a 50 MB download: `fetch` + `arrayBuffer`, MB/s.

Runs alternate between the two sides. Prints one JSON object on its last
line and writes it to bench/results/proxy_path.json.

    python bench/proxy_path.py [--loads 40] [--downloads 30]
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from common import daemon, summary, write_results
from worker.cli.cdp_client import SyncCDP
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc

DOWNLOAD_BYTES = 50 * 1024 * 1024
SUBRESOURCES = 100
CHUNK = b"\x5a" * (1024 * 1024)
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a5d9f3a40000000049454e44ae426082"
)


class OriginHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes; with Nagle on, a kept-alive
        # proxy connection waits for a delayed ACK (40 ms) between them.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/page":
            tags = "".join(
                f'<img src="/r/{i}.png?{self.path.partition("?")[2]}" width=1 height=1>'
                for i in range(SUBRESOURCES)
            )
            self._send(f"<html><body>{tags}</body></html>".encode(), "text/html")
        elif path.startswith("/r/"):
            self._send(PIXEL, "image/png")
        elif path == "/bytes":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(DOWNLOAD_BYTES))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            for _ in range(DOWNLOAD_BYTES // len(CHUNK)):
                self.wfile.write(CHUNK)
        else:
            self._send(b"<html></html>", "text/html")

    def _send(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Origin(http.server.ThreadingHTTPServer):
    # The default backlog of 5 overflows when a page opens its connections
    # at once; a dropped SYN costs a 1 s retransmit, in either path.
    request_queue_size = 128


@contextlib.contextmanager
def origin() -> Iterator[int]:
    server = Origin(("127.0.0.1", 0), OriginHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running(argv: list[str], port: int) -> Iterator[int]:
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} did not start")
            time.sleep(0.05)
        yield port
    finally:
        # SIGTERM first: squid removes its /dev/shm segments on the way out.
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def tinyproxy(scratch: Path) -> contextlib.AbstractContextManager[int]:
    """Closes every client connection after one response."""
    port = free_port()
    conf = scratch / "tinyproxy.conf"
    conf.write_text(
        f"Port {port}\nListen 127.0.0.1\nTimeout 60\nLogLevel Error\n"
        f'LogFile "{scratch}/tinyproxy.log"\nMaxClients 200\nAllow 127.0.0.1\n'
    )
    return running(["tinyproxy", "-d", "-c", str(conf)], port)


def squid(scratch: Path) -> contextlib.AbstractContextManager[int]:
    """Keeps client and server connections alive, like proxy services do."""
    port = free_port()
    base = scratch / "squid"
    base.mkdir()
    (base / "squid.conf").write_text(
        f"http_port 127.0.0.1:{port}\nvisible_hostname bench\npid_filename {base}/pid\n"
        f"cache_log {base}/cache.log\naccess_log none\ncoredump_dir {base}\n"
        "cache deny all\ncache_mem 8 MB\nshutdown_lifetime 0 seconds\n"
        "http_access allow localhost\nhttp_access deny all\n"
    )
    # Squid drops to the 'proxy' user, which must reach its directory.
    scratch.chmod(0o755)
    shutil.chown(base, "proxy", "proxy")
    return running(["squid", "-N", "-f", str(base / "squid.conf")], port)


class Page:
    """One page of a session, driven over the automation endpoint."""

    def __init__(self, cdp: SyncCDP) -> None:
        self.cdp = cdp
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call("Page.enable", session=self.session)

    def call(self, method: str, session: str = "", **params: Any) -> dict[str, Any]:
        return self.cdp.call(method, session, **params)

    def wait_event(self, method: str) -> None:
        self.cdp.until(method)

    def evaluate(self, expression: str) -> Any:
        answer = self.call(
            "Runtime.evaluate",
            session=self.session,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in answer:
            raise RuntimeError(answer["exceptionDetails"])
        return answer["result"]["value"]

    def load_ms(self, url: str) -> float:
        self.call("Page.navigate", session=self.session, url=url)
        self.wait_event("Page.loadEventFired")
        entry = self.evaluate(
            "(() => { const n = performance.getEntriesByType('navigation')[0];"
            " return [n.loadEventEnd - n.startTime, document.images.length,"
            " [...document.images].filter(i => i.naturalWidth === 1).length]; })()"
        )
        assert entry[1] == entry[2] == SUBRESOURCES, f"sub-resources failed to load: {entry}"
        return float(entry[0])

    def download_mb_s(self, url: str) -> float:
        took, size = self.evaluate(
            f"(async () => {{ const t = performance.now(); const r = await fetch('{url}');"
            " const b = await r.arrayBuffer(); return [performance.now() - t, b.byteLength]; })()"
        )
        assert size == DOWNLOAD_BYTES, f"download cut short: {size}"
        return DOWNLOAD_BYTES / 1e6 / (took / 1000)


@contextlib.contextmanager
def session_page(target: str, proxy: pb.ProxyConfiguration | None) -> Iterator[Page]:
    with grpc.insecure_channel(target) as channel:
        sessions = pb_grpc.BrowserSessionsStub(channel)
        started = sessions.StartBrowserSession(
            pb.StartBrowserSessionRequest(proxy_configuration=proxy)
        )
        stream = started.streams.automation_stream
        try:
            with SyncCDP.connect(stream.stream_endpoint, stream.token, timeout=120) as cdp:
                yield Page(cdp)
        finally:
            sessions.StopBrowserSession(pb.StopBrowserSessionRequest(session_id=started.session_id))


def compare(scratch: Path, base: str, proxy_port: int, loads: int, downloads: int) -> Any:
    """Both paths to one proxy, runs alternating; returns their figures."""
    straight = f"--proxy-server=http://127.0.0.1:{proxy_port} --proxy-bypass-list=<-loopback>"
    routing = pb.ProxyConfiguration(
        proxies=[pb.Proxy(external_proxy=pb.ExternalProxy(server="127.0.0.1", port=proxy_port))]
    )
    with (
        daemon(scratch) as relayed_worker,
        daemon(scratch, env={"SANDBOX_EXTRA_CHROMIUM_ARGS": straight}) as direct_worker,
        session_page(relayed_worker["grpc"], routing) as relayed,
        session_page(direct_worker["grpc"], None) as direct,
    ):
        sides = {"relay": relayed, "straight": direct}
        times: dict[str, list[float]] = {name: [] for name in sides}
        speeds: dict[str, list[float]] = {name: [] for name in sides}
        for page in sides.values():  # warm up both paths
            page.load_ms(f"{base}/page?warm")
        for run in range(loads):
            order = list(sides.items())
            for name, page in order if run % 2 == 0 else reversed(order):
                times[name].append(page.load_ms(f"{base}/page?{name}{run}"))
        for run in range(downloads):
            order = list(sides.items())
            for name, page in order if run % 2 == 0 else reversed(order):
                speeds[name].append(page.download_mb_s(f"{base}/bytes?{name}{run}"))
    return {
        "page_load": {name: summary(values) for name, values in times.items()},
        "download": {name: summary(values, "mb_s") for name, values in speeds.items()},
        "page_load_median_ratio": round(
            statistics.median(times["relay"]) / statistics.median(times["straight"]), 3
        ),
        "download_throughput_ratio": round(
            statistics.median(speeds["relay"]) / statistics.median(speeds["straight"]), 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loads", type=int, default=40)
    parser.add_argument("--downloads", type=int, default=30)
    args = parser.parse_args()
    for tool in ("squid", "tinyproxy"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed: bash deploy/run.sh test installs it")
    results: dict[str, Any] = {
        "benchmark": "proxy_path",
        "loads": args.loads,
        "downloads": args.downloads,
        "subresources": SUBRESOURCES,
        "download_mb": DOWNLOAD_BYTES // (1024 * 1024),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    with tempfile.TemporaryDirectory(prefix="sbxp-") as tmp, origin() as origin_port:
        scratch = Path(tmp)
        base = f"http://127.0.0.1:{origin_port}"
        for name, proxy in (("squid", squid), ("tinyproxy", tinyproxy)):
            with proxy(scratch) as proxy_port:
                results[name] = compare(scratch, base, proxy_port, args.loads, args.downloads)
    write_results("proxy_path", results)


if __name__ == "__main__":
    main()
