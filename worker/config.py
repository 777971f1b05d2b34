"""The worker's configuration: one frozen dataclass built from a mapping.

Every field can be set from the environment as `SANDBOX_<FIELD>` (upper case)
and overridden by CLI flags; tests build one in a line with `Config.from_env`.
Timeouts are fields, never constants buried in code.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import ipaddress
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_type_hints

ENV_PREFIX = "SANDBOX_"


class ConfigError(ValueError):
    """A setting has a value the worker cannot use; names the setting."""


@dataclasses.dataclass(frozen=True)
class Config:
    # Where the SQLite state file and the per-session directories live.
    state_dir: Path = Path(".sandbox-worker")
    grpc_listen: str = "127.0.0.1:50051"
    automation_listen: str = "127.0.0.1:9223"
    # Prometheus /metrics on its own port; empty: not served. The same port
    # answers /healthz (alive) and /readyz (serving, not draining) for
    # probes that cannot speak gRPC over TLS.
    metrics_listen: str = "127.0.0.1:9464"
    # gRPC over TLS: the server's certificate chain and key (PEM files).
    # With tls_client_ca_file too, clients must present a certificate it
    # signed (mTLS). Unset: plaintext gRPC.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # Base URL clients use to reach the automation endpoint (ws:// or wss://).
    # Empty: derived from automation_listen. Set it behind a Service or proxy.
    public_automation_url: str = ""
    max_sessions: int = max(2, 2 * (os.cpu_count() or 1))
    default_flavour: str = "chromium"
    chromium_path: Path = Path("/usr/lib/chromium/chromium")
    headless_shell_path: Path = Path("/usr/lib/chromium/chromium-headless-shell")
    extra_chromium_args: tuple[str, ...] = ()
    # Seconds a starting browser has to answer its first CDP command.
    start_timeout_s: float = 30.0
    # A running browser is asked for its version every watchdog_interval_s;
    # one that has not answered within watchdog_timeout_s (hung, or stopped)
    # is killed and its session ends BROWSER_UNRESPONSIVE. 0: no watchdog.
    watchdog_interval_s: float = 5.0
    # Browser profiles are sealed with this 256-bit key (32 bytes or their
    # base64). Unset: a key generated under the state directory, which only
    # this worker has; a fleet must share one. profile_max_mb bounds one
    # profile's saved state (cookies and local storage, as JSON).
    profile_key_file: Path | None = None
    profile_max_mb: int = 20
    # Where OpenTelemetry spans of Start, Stop and profile saves go (OTLP over
    # HTTP, e.g. http://collector:4318); empty: nowhere.
    otlp_endpoint: str = ""
    # How long one InvokeBrowser action may take before it answers FAILED.
    action_timeout_s: float = 10.0
    watchdog_timeout_s: float = 15.0
    # Seconds SIGTERM waits for running sessions before stopping them.
    drain_timeout_s: float = 30.0
    # Chromium's own sandbox: "auto" turns it on when the daemon is root and
    # the kernel lets an unprivileged user create user namespaces (each
    # browser then runs as its own uid from browser_uid_base up); "on"
    # refuses to start without it; "off" runs browsers as the daemon's user
    # (as root, with --no-sandbox).
    browser_sandbox: str = "auto"
    browser_uid_base: int = 200000
    # Browsers run at this nice value (0 to 19) so the daemon, which relays
    # every CDP message and answers Stop and health checks, is not queued
    # behind page work on a saturated machine (bench/throughput.py).
    browser_nice: int = 10
    # Each browser's tree gets a cgroup with these limits (v2, or v1 memory
    # and cpu on older hosts). Past the memory limit the kernel kills inside
    # that session only, and the session ends OUT_OF_MEMORY. 0: no limit.
    # Off by default: joining a cgroup at spawn costs a start ~10 ms (the
    # kernel's cgroup migration waits out an RCU grace period; measured by
    # bench/cold_start.py), which a worker without hostile pages need not pay.
    session_memory_mb: int = 0
    session_cpus: float = 0.0
    # How those limits are held. "auto": a cgroup per browser where the host
    # lets the worker make one, else (containers: a read-only cgroupfs) a
    # watch that samples each session's processes from /proc; "cgroup":
    # refuse to start without cgroups; "sampled": always the watch. The
    # watch bounds memory only, and after the fact: a session above
    # session_memory_mb (its processes' RssAnon + RssShmem) for
    # session_memory_grace_s is killed and ends OUT_OF_MEMORY. It reads
    # every interval (its cost: the sandbox_session_memory_sample_seconds
    # histogram).
    session_limits: str = "auto"
    session_memory_interval_s: float = 0.5
    session_memory_grace_s: float = 2.0
    # "namespace": each browser runs in a network namespace of its own whose
    # only reachable socket is its relay listener, so the session's proxy
    # and bypass rules hold at the network layer (needs root). "none": the
    # browser shares the worker's network and routing is its proxy setting.
    network_isolation: str = "none"
    # Seconds to wait for a killed browser's process to be reaped.
    kill_timeout_s: float = 5.0
    # Open an about:blank tab when a session's browser launches, as pooled
    # browsers always do: `context.pages[0]` is there at once, and the first
    # client's first plain new page is that tab (cdp.multiplexer.FirstPage).
    # Off by default for cold starts: the tab is made while the client waits
    # for the browser anyway, and measured cold time to first page was no
    # better with it (588 against 483-585 ms p50, full Chromium).
    first_tab: bool = False
    default_viewport_width: int = 1280
    default_viewport_height: int = 720
    # Largest CDP message a client may send: Chromium wedges the whole pipe on
    # an inbound message of 100 MiB or more, so stay well below that.
    max_client_message_bytes: int = 64 * 1024 * 1024
    # Messages queued for one slow automation client before it is dropped.
    client_queue_limit: int = 20000
    # Terminated sessions stay listable this long, then are deleted: at a
    # worker's start and every session_purge_interval_s while it runs (a
    # fleet's gateways do the same in the shared store).
    session_retention_s: float = 7 * 24 * 3600.0
    session_purge_interval_s: float = 600.0
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    # When set, `serve` writes the bound addresses here as JSON once ready.
    ready_file: Path | None = None
    # Where sessions' TMPDIRs live. Chromium puts a unix socket there, and a
    # socket path must stay under 108 bytes, so this must be a short path.
    # Default: <system temp>/sandbox-worker-<hash of state_dir>.
    runtime_dir: Path | None = None
    # Browsers launched ahead of demand, per flavour: "chromium=2
    # headless-shell=1". They count against max_sessions. Empty: no pool.
    warm_pool: tuple[str, ...] = ()
    # Where `file:NAME` secret references are read from (a mounted
    # Kubernetes Secret). Unset: only Secrets Manager ARNs resolve.
    secrets_dir: Path | None = None
    # Seconds to wait for Secrets Manager (per attempt).
    secret_timeout_s: float = 10.0
    # Static host entries for every session, like /etc/hosts: "NAME=ADDRESS"
    # ("web.corp.test=10.0.0.5"), or ".DOMAIN=ADDRESS" for a domain and all
    # its subdomains. Used by Chromium and by the proxy relay's direct routes.
    host_overrides: tuple[str, ...] = ()
    # Session recordings: "local" writes the S3 layout under recording_dir
    # (default <state_dir>/recordings); "s3" uploads to each browser's bucket
    # with the worker's AWS credential chain or the browser's execution role.
    recording_storage: str = "local"
    recording_dir: Path | None = None
    # Batches wait here until their destination confirmed them; it survives
    # restarts (default <state_dir>/spool). Past recording_spool_max_mb, new
    # events are dropped, counted, and the recording marked incomplete.
    recording_spool_dir: Path | None = None
    recording_spool_max_mb: int = 1024
    # A batch closes at this many uncompressed bytes, or this age.
    recording_batch_bytes: int = 8 * 1024 * 1024
    recording_batch_age_s: float = 10.0
    # A batch streams to S3 in parts of this size once it is that large.
    recording_part_bytes: int = 8 * 1024 * 1024
    recording_upload_concurrency: int = 4
    # At shutdown, seconds to keep uploading before leaving the rest spooled.
    recording_flush_timeout_s: float = 20.0
    # S3 and STS endpoints (S3-compatible stores, tests); empty: boto3's
    # default, which honours AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL.
    s3_endpoint_url: str = ""
    sts_endpoint_url: str = ""
    # Extensions and policy files a Start names are read from S3 with the
    # worker's credentials (seconds per attempt), and kept on disk under
    # <state_dir>/s3-cache up to this size, by version or ETag.
    s3_object_timeout_s: float = 10.0
    s3_object_cache_mb: int = 512
    # The hosted API over HTTP (for boto3's bedrock-agentcore clients);
    # empty: not served. Requests must carry a SigV4 signature made with a
    # key in http_api_keys_file (a JSON object: access key id -> secret),
    # unless http_api_auth is "none" (for local use only).
    # Where browsers and browser profiles are kept: "" is this worker's own
    # state file (SQLite); "postgresql://USER:PASSWORD@HOST:PORT/DB" is a
    # fleet's shared store, where the worker also registers, heartbeats and
    # copies its session records for gateways (see docs/fleet.md).
    store_url: str = ""
    store_timeout_s: float = 5.0  # to connect, and to wait for a pooled connection
    heartbeat_interval_s: float = 2.0
    # A gateway takes a worker silent this long for lost: out of placement,
    # its sessions ended WORKER_LOST, its relayed clients closed.
    worker_lost_after_s: float = 15.0
    # A gateway deletes the store's row of a worker silent this long once
    # none of its sessions is left unfinished (a worker has a new id at
    # every start: without this, every restart would leave a row behind).
    worker_forget_after_s: float = 600.0
    # A gateway hands out each worker's own automation URL instead of its
    # own, for clients inside the cluster that want no extra hop.
    gateway_direct_endpoints: bool = False
    # The host name gateways reach this worker at; empty: the listen host,
    # or this machine's fully qualified name when it listens on all.
    advertise_host: str = ""
    # With a fleet's store: where gateways call this worker over the fleet
    # link (a framed TCP protocol, a fraction of a gRPC call's cost; its
    # connections prove they hold a key kept in the store). Empty: the gRPC
    # listen host, on a port the kernel picks; "off": no link, gateways
    # call this worker over gRPC.
    link_listen: str = ""
    http_api_listen: str = "127.0.0.1:8090"
    http_api_auth: str = "sigv4"
    http_api_keys_file: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Build from `SANDBOX_*` variables, then apply non-None overrides."""
        env = os.environ if env is None else env
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = _parse(field.name, hints[field.name], raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if self.max_sessions < 1:
            raise ConfigError("max_sessions: must be at least 1")
        if self.default_flavour not in ("chromium", "headless-shell"):
            raise ConfigError("default_flavour: must be 'chromium' or 'headless-shell'")
        if self.log_format not in ("auto", "json", "console"):
            raise ConfigError("log_format: must be auto, json or console")
        self.host_override_map()
        if sum(self.warm_pool_sizes().values()) > self.max_sessions:
            raise ConfigError("warm_pool: more pooled browsers than max_sessions")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("tls_cert_file, tls_key_file: set both or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ConfigError("tls_client_ca_file: needs tls_cert_file and tls_key_file")
        if self.browser_sandbox not in ("auto", "on", "off"):
            raise ConfigError("browser_sandbox: must be auto, on or off")
        if self.browser_sandbox == "on" and "--no-sandbox" in self.extra_chromium_args:
            raise ConfigError("extra_chromium_args: --no-sandbox contradicts browser_sandbox 'on'")
        if not 1000 <= self.browser_uid_base <= 2**31 - 1 - 4096:
            raise ConfigError("browser_uid_base: must be a uid from 1000 to 2147479551")
        if self.network_isolation not in ("none", "namespace"):
            raise ConfigError("network_isolation: must be 'none' or 'namespace'")
        if not 0 <= self.browser_nice <= 19:
            raise ConfigError("browser_nice: must be from 0 to 19")
        if self.session_memory_mb < 0 or self.session_cpus < 0:
            raise ConfigError("session_memory_mb, session_cpus: must not be negative")
        if 0 < self.session_memory_mb < 64:
            raise ConfigError("session_memory_mb: below 64 MiB no browser starts")
        if self.s3_object_cache_mb < 10:
            raise ConfigError("s3_object_cache_mb: must hold one extension (at least 10)")
        if not 1 <= self.profile_max_mb <= 1024:
            raise ConfigError("profile_max_mb: must be from 1 to 1024")
        if self.session_limits not in ("auto", "cgroup", "sampled"):
            raise ConfigError("session_limits: must be auto, cgroup or sampled")
        if self.session_limits == "sampled" and self.session_cpus:
            raise ConfigError("session_cpus: needs cgroups; 'sampled' limits bound memory only")
        if self.session_memory_interval_s <= 0 or self.session_memory_grace_s < 0:
            raise ConfigError("session_memory_interval_s, session_memory_grace_s: must be positive")
        if self.watchdog_interval_s < 0 or self.watchdog_timeout_s <= 0:
            raise ConfigError("watchdog_interval_s, watchdog_timeout_s: must not be negative")
        for name in (
            "start_timeout_s",
            "drain_timeout_s",
            "kill_timeout_s",
            "secret_timeout_s",
            "action_timeout_s",
            "s3_object_timeout_s",
            "store_timeout_s",
            "heartbeat_interval_s",
            "worker_lost_after_s",
            "session_retention_s",
            "session_purge_interval_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be positive")
        if self.worker_forget_after_s < self.worker_lost_after_s:
            raise ConfigError("worker_forget_after_s: must be at least worker_lost_after_s")
        if self.store_url and not self.store_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError("store_url: must be empty (the state file) or postgresql://...")
        if self.http_api_auth not in ("sigv4", "none"):
            raise ConfigError("http_api_auth: must be 'sigv4' or 'none'")
        if self.recording_storage not in ("local", "s3"):
            raise ConfigError("recording_storage: must be 'local' or 's3'")
        if self.recording_part_bytes < 5 * 1024 * 1024:
            raise ConfigError("recording_part_bytes: S3 parts must be at least 5 MiB")
        if self.recording_batch_bytes < 1024 or self.recording_spool_max_mb < 1:
            raise ConfigError("recording_batch_bytes, recording_spool_max_mb: too small")
        if self.recording_batch_age_s <= 0 or self.recording_upload_concurrency < 1:
            raise ConfigError(
                "recording_batch_age_s, recording_upload_concurrency: must be positive"
            )
        if self.max_client_message_bytes >= 100 * 1024 * 1024:
            raise ConfigError("max_client_message_bytes: must be below 100 MiB")

    def warm_pool_sizes(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for entry in self.warm_pool:
            flavour, _, count = entry.partition("=")
            if flavour not in ("chromium", "headless-shell") or not count.isdigit():
                raise ConfigError(
                    f"warm_pool: {entry!r} is not FLAVOUR=N (chromium, headless-shell)"
                )
            sizes[flavour] = int(count)
        return sizes

    def host_override_map(self) -> dict[str, str]:
        entries: dict[str, str] = {}
        for entry in self.host_overrides:
            name, sep, address = entry.partition("=")
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ConfigError(
                    f"host_overrides: {entry!r} is not NAME=ADDRESS with an IP address"
                ) from None
            if not sep or not name.strip(". "):
                raise ConfigError(f"host_overrides: {entry!r} has no host name")
            entries[name.lower()] = address
        return entries

    def chromium_host_rules(self) -> str:
        rules = []
        for name, address in self.host_override_map().items():
            if name.startswith("."):
                rules += [f"MAP *{name} {address}", f"MAP {name[1:]} {address}"]
            else:
                rules.append(f"MAP {name} {address}")
        return ", ".join(rules)

    @property
    def sessions_dir(self) -> Path:
        return self.state_dir / "sessions"

    @property
    def recordings_dir(self) -> Path:
        return self.recording_dir or self.state_dir / "recordings"

    @property
    def spool_dir(self) -> Path:
        return self.recording_spool_dir or self.state_dir / "spool"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.db"

    @functools.cached_property
    def session_tmp_root(self) -> Path:
        # Cached: every session asks several times, and resolving the state
        # directory and hashing it showed in profiles of a start.
        if self.runtime_dir is not None:
            return self.runtime_dir
        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / f"sandbox-worker-{digest}"


def _parse(name: str, hint: Any, raw: str) -> Any:
    try:
        if hint is bool:
            if raw.lower() not in ("1", "true", "yes", "0", "false", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if hint is Path or hint == Path | None:
            return Path(raw) if raw else None
        if hint == tuple[str, ...]:
            return tuple(raw.split())
        return raw
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}: cannot parse {raw!r}") from None
