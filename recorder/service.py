"""The worker-wide recorder: settings, the spool, the uploader, and the
destinations sessions write to.

`storage="local"` (the embedded default) writes the S3 layout under a
local directory; `storage="s3"` uses boto3 with the worker's credential
chain, or a browser's execution role.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from recorder.clients import Clients
from recorder.recording import BatchLimits, Recording
from recorder.sink import LocalSink, S3Sink, Sink
from recorder.spool import Destination, Meter
from recorder.uploader import Hooks, Uploader

MIN_PART_BYTES = 5 * 1024 * 1024  # S3's smallest multipart part (but the last)


@dataclasses.dataclass(frozen=True)
class Settings:
    storage: str = "local"  # local | s3
    local_dir: Path = Path("recordings")
    spool_dir: Path = Path("spool")
    spool_max_bytes: int = 1024 * 1024 * 1024
    part_bytes: int = 8 * 1024 * 1024
    upload_concurrency: int = 4
    retry_max_s: float = 30.0
    s3_endpoint_url: str = ""
    sts_endpoint_url: str = ""
    region: str = ""
    s3_timeout_s: float = 5.0
    limits: BatchLimits = dataclasses.field(default_factory=BatchLimits)


class Recorder:
    def __init__(self, settings: Settings, hooks: Hooks | None = None) -> None:
        self.settings = settings
        self.meter = Meter(settings.spool_max_bytes)
        self._clients = Clients(
            settings.s3_endpoint_url,
            settings.sts_endpoint_url,
            settings.region,
            settings.s3_timeout_s,
        )
        self._sinks: dict[Destination, Sink] = {}
        settings.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.uploader = Uploader(
            settings.spool_dir,
            self.sink,
            self.meter,
            settings.part_bytes,
            settings.upload_concurrency,
            settings.retry_max_s,
            hooks,
        )

    def sink(self, destination: Destination) -> Sink:
        sink = self._sinks.get(destination)
        if sink is None:
            if destination.storage == "s3":
                role = destination.role_arn
                sink = S3Sink(lambda: self._clients.s3(role), destination.bucket)
            else:
                sink = LocalSink(self.settings.local_dir, destination.bucket)
            self._sinks[destination] = sink
        return sink

    def destination(self, bucket: str, prefix: str, role_arn: str = "") -> Destination:
        return Destination(self.settings.storage, bucket, prefix, role_arn)

    def artifact_uri(self, destination: Destination, session_id: str) -> str:
        """Where a session's recording folder is (S3 URI or file URI)."""
        key = destination.key(session_id, "")
        if destination.storage == "s3":
            return f"s3://{destination.bucket}/{key}/"
        return (self.settings.local_dir / destination.bucket / key).resolve().as_uri() + "/"

    def new(self, session_id: str, destination: Destination, facts: dict[str, Any]) -> Recording:
        return Recording(session_id, facts, destination, self.uploader, self.settings.limits)

    async def recover(self, orphan_reason: str) -> int:
        return await self.uploader.recover(orphan_reason)

    async def stop(self, timeout: float) -> bool:
        return await self.uploader.stop(timeout)
