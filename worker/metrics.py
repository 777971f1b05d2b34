"""Prometheus metrics: what an operator needs to trust and size a worker.

Counters and histograms are updated where things happen (start, close,
refusal, RPC). Gauges that describe the present (sessions, clients, browser
memory and CPU, proxy traffic) are computed when Prometheus scrapes, from
the live registry and /proc, so nothing samples in the background except
the relay's traffic, which is polled from the relay process. Each worker
has its own registry (tests build one per test); `/metrics` is served on
its own port by prometheus-client's threaded server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from worker.procfs import cpu_seconds, process_groups, pss_bytes

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer
    from wsgiref.types import StartResponse, WSGIApplication


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # scrapes every few seconds are not news


# Fine enough below 100 ms to tell 10 ms from 50 ms.
START_BUCKETS = (
    0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.125, 0.15, 0.2, 0.3, 0.5, 0.75,
    1.0, 2.0, 5.0, 10.0, 30.0,
)  # fmt: skip
DURATION_BUCKETS = (1, 10, 30, 60, 300, 600, 1800, 3600, 7200, 14400, 28800)
SAMPLE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class LiveSession:
    """What a scrape reports about one running session."""

    session_id: str
    browser_id: str
    flavour: str
    pid: int  # the browser's process group
    clients: int


@dataclass(frozen=True)
class State:
    """A snapshot of the worker, taken on the event loop's thread."""

    capacity: int
    draining: bool
    pooled: int  # warm browsers waiting for a session
    sessions: tuple[LiveSession, ...]
    # (upstream, counter) -> total, for every session the relay has seen
    proxy: dict[tuple[str, str], int]
    relay_restarts: int
    spool_bytes: int = 0
    uploads_pending: int = 0


class DaemonMetrics:
    """What every daemon of the project exports, a worker's and a
    gateway's alike: its own process, its API calls and its automation
    port's refusals, served beside /healthz and /readyz."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)  # the daemon's own CPU, RSS and fds
        self._declare_rpc()
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def _counter(self, name: str, text: str, *labels: str) -> Counter:
        return Counter(name, text, list(labels), registry=self.registry)

    def _histogram(
        self, name: str, text: str, buckets: tuple[float, ...], *labels: str
    ) -> Histogram:
        return Histogram(name, text, list(labels), buckets=buckets, registry=self.registry)

    def _declare_rpc(self) -> None:
        self.rpc_requests = self._counter(
            "sandbox_grpc_requests_total", "gRPC calls", "method", "code"
        )
        self.rpc_seconds = self._histogram(
            "sandbox_grpc_request_seconds", "gRPC call latency", RPC_BUCKETS, "method"
        )
        self.automation_refused = self._counter(
            "sandbox_automation_refused_total",
            "Automation connections refused in the handshake, by reason",
            "reason",
        )

    def serve(
        self,
        host: str,
        port: int,
        alive: Callable[[], bool] = lambda: True,
        ready: Callable[[], bool] = lambda: True,
    ) -> int:
        """Serve /metrics, /healthz and /readyz on one port; returns it."""
        server = make_server(
            host,
            port,
            probes(make_wsgi_app(self.registry), alive, ready),
            ThreadingWSGIServer,
            handler_class=_Quiet,
        )
        # A short poll so that stopping the daemon does not wait half a second.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self._server = server
        return int(server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)


class Metrics(DaemonMetrics):
    """A worker's: its sessions, their clients and their recordings."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        self._declare_sessions()
        self._declare_clients()
        self._declare_recording()

    def _declare_sessions(self) -> None:
        self.sessions_started = self._counter(
            "sandbox_sessions_started_total",
            "Sessions started, on a pooled browser (warm) or a new one (cold)",
            "flavour",
            "start",
        )
        self.sessions_ended = self._counter(
            "sandbox_sessions_ended_total",
            "Sessions ended, by termination reason",
            "reason",
            "flavour",
        )
        self.start_seconds = self._histogram(
            "sandbox_session_start_seconds",
            "StartBrowserSession received to the browser's first CDP answer",
            START_BUCKETS,
            "flavour",
        )
        self.session_seconds = self._histogram(
            "sandbox_session_duration_seconds", "Session lifetime", DURATION_BUCKETS, "flavour"
        )
        self.browser_crashes = self._counter(
            "sandbox_browser_crashes_total",
            "Browsers that exited on their own (BROWSER_EXITED or START_FAILED)",
            "flavour",
        )
        self.memory_sample_seconds = self._histogram(
            "sandbox_session_memory_sample_seconds",
            "One sample of every session's memory by the budget watch (without cgroups)",
            SAMPLE_BUCKETS,
        )
        self.orphans_reaped = self._counter(
            "sandbox_orphans_reaped_total",
            "Processes of an earlier, killed worker run that start-up killed",
        )

    def _declare_clients(self) -> None:
        self.cdp_messages = self._counter(
            "sandbox_cdp_messages_total",
            "CDP messages through the automation endpoint (in: from clients)",
            "direction",
        )
        self.live_viewers = Gauge(
            "sandbox_live_view_viewers", "Live-view viewers connected", registry=self.registry
        )

    def _declare_recording(self) -> None:
        self.recording_events = self._counter(
            "sandbox_recording_events_total",
            "Events recorded (rrweb and CDP), written to the spool",
        )
        self.recording_dropped = self._counter(
            "sandbox_recording_dropped_events_total",
            "Events dropped by a bound (memory: per-session queue; spool: disk full)",
            "bound",
        )
        self.recording_uploaded_bytes = self._counter(
            "sandbox_recording_uploaded_bytes_total",
            "Compressed recording bytes the destination confirmed",
        )
        self.recording_retries = self._counter(
            "sandbox_recording_upload_retries_total",
            "Recording upload calls retried after an error",
            "operation",
        )
        self.recordings_finished = self._counter(
            "sandbox_recordings_finished_total",
            "Recordings whose metadata.json was written",
            "complete",
        )

    def watch(self, snapshot: Callable[[], State]) -> None:
        """Report the worker's present state on every scrape."""
        self.registry.register(StateCollector(snapshot))


def probes(
    app: WSGIApplication, alive: Callable[[], bool], ready: Callable[[], bool]
) -> WSGIApplication:
    """/healthz and /readyz beside /metrics, for HTTP probes (Kubernetes
    gRPC probes cannot speak TLS, so with mTLS on they use these)."""

    def answer(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        check = {"/healthz": alive, "/readyz": ready}.get(environ.get("PATH_INFO", ""))
        if check is None:
            return app(environ, start_response)
        ok = check()
        start_response(
            "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
        )
        return [b"ok\n" if ok else b"unavailable\n"]

    return answer


class StateCollector(Collector):
    def __init__(self, snapshot: Callable[[], State]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        state = self._snapshot()
        yield GaugeMetricFamily(
            "sandbox_capacity_sessions", "Sessions this worker runs at most", state.capacity
        )
        yield GaugeMetricFamily(
            "sandbox_draining", "1 while the worker drains", 1 if state.draining else 0
        )
        yield GaugeMetricFamily(
            "sandbox_warm_browsers", "Pooled browsers waiting for a session", state.pooled
        )
        active = GaugeMetricFamily(
            "sandbox_sessions_active", "Running sessions", labels=["browser", "flavour"]
        )
        counts: dict[tuple[str, str], int] = {}
        for s in state.sessions:
            counts[(s.browser_id, s.flavour)] = counts.get((s.browser_id, s.flavour), 0) + 1
        for labels, count in counts.items():
            active.add_metric(list(labels), count)
        yield active
        yield GaugeMetricFamily(
            "sandbox_automation_clients",
            "Connected automation clients",
            sum(s.clients for s in state.sessions),
        )
        yield from browser_usage(state.sessions)
        yield from proxy_traffic(state.proxy)
        yield CounterMetricFamily(
            "sandbox_proxy_relay_restarts", "Proxy relay process restarts", state.relay_restarts
        )
        yield GaugeMetricFamily(
            "sandbox_recording_spool_bytes", "Recording bytes on local disk", state.spool_bytes
        )
        yield GaugeMetricFamily(
            "sandbox_recording_uploads_pending",
            "Batches and metadata files waiting for their destination",
            state.uploads_pending,
        )


def browser_usage(sessions: Iterable[LiveSession]) -> Iterator[Metric]:
    """PSS and CPU of each session's browser processes, read from /proc."""
    memory = GaugeMetricFamily(
        "sandbox_browser_memory_pss_bytes",
        "Proportional set size of a session's browser processes",
        labels=["session_id", "flavour"],
    )
    cpu = CounterMetricFamily(
        "sandbox_browser_cpu_seconds",
        "CPU time of a session's live browser processes",
        labels=["session_id", "flavour"],
    )
    groups = process_groups({s.pid for s in sessions if s.pid})
    for s in sessions:
        pids = groups.get(s.pid, [])
        memory.add_metric([s.session_id, s.flavour], sum(pss_bytes(p) for p in pids))
        cpu.add_metric([s.session_id, s.flavour], sum(cpu_seconds(p) for p in pids))
    yield memory
    yield cpu


def proxy_traffic(totals: dict[tuple[str, str], int]) -> Iterator[Metric]:
    names = {
        "requests": ("sandbox_proxy_requests_total", "Plain HTTP requests relayed"),
        "tunnels": ("sandbox_proxy_tunnels_total", "CONNECT tunnels opened"),
        "bytes_up": ("sandbox_proxy_sent_bytes_total", "Bytes sent upstream"),
        "bytes_down": ("sandbox_proxy_received_bytes_total", "Bytes received from upstream"),
        "auth_failures": ("sandbox_proxy_auth_failures_total", "407s from upstream proxies"),
        "errors": ("sandbox_proxy_errors_total", "Upstreams unreachable or refusing"),
    }
    for field, (name, text) in names.items():
        family = CounterMetricFamily(name.removesuffix("_total"), text, labels=["upstream"])
        for (upstream, counter), value in sorted(totals.items()):
            if counter == field:
                family.add_metric([upstream], value)
        yield family
