"""Domain records shared by the store, the session manager and the servicer.

Statuses and reasons are strings spelled like the proto enum values, so the
servicer maps them by name and the state file stays readable.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from worker.network.routing import ProxyConfig

DEFAULT_BROWSER_ID = "aws.browser.v1"  # the hosted API's built-in browser id

# Session statuses. STARTING lives only while StartBrowserSession runs.
STARTING, READY, TERMINATED = "STARTING", "READY", "TERMINATED"

# Termination reasons.
STOPPED = "STOPPED"
TIMEOUT = "TIMEOUT"
BROWSER_EXITED = "BROWSER_EXITED"
WORKER_SHUTDOWN = "WORKER_SHUTDOWN"
WORKER_RESTARTED = "WORKER_RESTARTED"
START_FAILED = "START_FAILED"
BROWSER_UNRESPONSIVE = "BROWSER_UNRESPONSIVE"
OUT_OF_MEMORY = "OUT_OF_MEMORY"
WORKER_LOST = "WORKER_LOST"  # a fleet gateway stopped hearing its worker

ENABLED, DISABLED = "ENABLED", "DISABLED"


@dataclasses.dataclass(frozen=True)
class Viewport:
    width: int
    height: int


@dataclasses.dataclass(frozen=True)
class RecordingConfig:
    enabled: bool = False
    bucket: str = ""
    prefix: str = ""
    role_arn: str = ""  # executionRoleArn: recordings are written as this role


@dataclasses.dataclass(frozen=True)
class S3Object:
    """One object in S3 (an extension's ZIP, a policy file)."""

    bucket: str
    key: str
    version_id: str = ""  # empty: the current version

    def __str__(self) -> str:
        version = f"?versionId={self.version_id}" if self.version_id else ""
        return f"s3://{self.bucket}/{self.key}{version}"

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


MANAGED, RECOMMENDED = "MANAGED", "RECOMMENDED"


@dataclasses.dataclass(frozen=True)
class PolicyFile:
    """A JSON file of Chromium enterprise policies: MANAGED ones cannot be
    changed in the browser, RECOMMENDED ones are its defaults."""

    location: S3Object
    kind: str  # MANAGED | RECOMMENDED

    def to_dict(self) -> dict[str, Any]:
        return {"location": self.location.to_dict(), "kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolicyFile:
        return cls(S3Object(**d["location"]), d["kind"])


@dataclasses.dataclass(frozen=True)
class BrowserConfig:
    """A browser ("tool"): configuration every session of it shares."""

    browser_id: str
    name: str
    description: str
    flavour: str
    recording: RecordingConfig
    certificate_arns: tuple[str, ...]
    created_at: float
    updated_at: float
    built_in: bool = False
    policies: tuple[PolicyFile, ...] = ()  # every session's, before its own


@dataclasses.dataclass(frozen=True)
class ProfileRecord:
    """A browser profile: what a session's cookies and local storage were
    when it was last saved (the state itself is kept apart, encrypted)."""

    profile_id: str
    name: str
    description: str
    created_at: float
    updated_at: float
    saved_at: float = 0.0  # 0: never saved
    saved_session_id: str = ""
    saved_browser_id: str = ""
    saved_bytes: int = 0
    status: str = "READY"  # READY | DELETED


@dataclasses.dataclass(frozen=True)
class StartRequest:
    """A validated StartBrowserSession request."""

    browser_id: str
    name: str
    timeout_s: int
    viewport: Viewport
    client_token: str
    proxy: ProxyConfig | None = None
    certificate_arns: tuple[str, ...] = ()
    profile_id: str = ""  # a browser profile whose state the session starts with
    trace_id: str = ""  # the caller's trace context, carried on logs and metadata
    trace_parent: str = ""
    extensions: tuple[S3Object, ...] = ()
    policies: tuple[PolicyFile, ...] = ()

    def fingerprint(self) -> str:
        """What must match for a repeated clientToken to mean the same call."""
        proxy = json.dumps(self.proxy.to_dict(), sort_keys=True) if self.proxy else ""
        return (
            f"{self.browser_id}|{self.name}|{self.timeout_s}|"
            f"{self.viewport.width}x{self.viewport.height}|{proxy}|"
            + ",".join(self.certificate_arns)
            + f"|{self.profile_id}|"
            + ",".join(map(str, self.extensions))
            + "|"
            + ",".join(f"{p.kind}:{p.location}" for p in self.policies)
        )


@dataclasses.dataclass
class SessionRecord:
    """What the worker remembers about a session, live or ended."""

    session_id: str
    browser_id: str
    name: str
    flavour: str
    timeout_s: int
    viewport: Viewport
    created_at: float
    updated_at: float
    status: str = STARTING
    termination_reason: str = ""
    stream_status: str = ENABLED
    client_token: str = ""
    request_fingerprint: str = ""
    pid: int = 0
    session_dir: str = ""
    # Routing with secret references only (ProxyConfig.to_dict), or None.
    proxy: dict[str, Any] | None = None
    # The browser's certificates, then the session's: references, never PEM.
    certificate_arns: list[str] = dataclasses.field(default_factory=list)
    # The recording's folder URI, when the browser records.
    replay_artifact: str = ""
    # The caller's trace context at Start (X-Amzn-Trace-Id, traceparent).
    trace_id: str = ""
    trace_parent: str = ""
    # What the session was started with (S3Object / PolicyFile .to_dict()).
    extensions: list[dict[str, str]] = dataclasses.field(default_factory=list)
    policies: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    profile_id: str = ""

    @property
    def proxy_config(self) -> ProxyConfig | None:
        return ProxyConfig.from_dict(self.proxy) if self.proxy else None


@dataclasses.dataclass(frozen=True)
class Started:
    """StartBrowserSession's answer: the session's record and its automation
    token, which only a Start (or its idempotent repeat) hands out. A repeated
    clientToken naming a session that has ended gets its record and no token."""

    record: SessionRecord
    token: str
