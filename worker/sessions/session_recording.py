"""The worker's side of recording: the recorder built from the config, with
the worker's metrics as its hooks, and the recording a session starts."""

from __future__ import annotations

from typing import Any

from recorder.recording import BatchLimits, Recording
from recorder.service import Recorder, Settings
from recorder.uploader import Hooks
from worker.config import Config
from worker.metrics import Metrics
from worker.sessions.model import (
    BROWSER_EXITED,
    BROWSER_UNRESPONSIVE,
    OUT_OF_MEMORY,
    START_FAILED,
    BrowserConfig,
    SessionRecord,
)

# Why a recording cannot be whole, by how its session ended.
INCOMPLETE = {
    BROWSER_EXITED: "the browser exited: events its pages had not sent yet are lost",
    START_FAILED: "the browser did not start",
    BROWSER_UNRESPONSIVE: "the browser hung and was killed: events its pages held are lost",
    OUT_OF_MEMORY: "the session reached its memory limit: events its pages held are lost",
}


def recorder(config: Config, metrics: Metrics) -> Recorder:
    settings = Settings(
        storage=config.recording_storage,
        local_dir=config.recordings_dir,
        spool_dir=config.spool_dir,
        spool_max_bytes=config.recording_spool_max_mb * 1024 * 1024,
        part_bytes=config.recording_part_bytes,
        upload_concurrency=config.recording_upload_concurrency,
        s3_endpoint_url=config.s3_endpoint_url,
        sts_endpoint_url=config.sts_endpoint_url,
        limits=BatchLimits(
            batch_bytes=config.recording_batch_bytes,
            batch_age_s=config.recording_batch_age_s,
        ),
    )
    hooks = Hooks(
        uploaded=metrics.recording_uploaded_bytes.inc,
        retried=lambda operation: metrics.recording_retries.labels(operation).inc(),
        finished=lambda complete: metrics.recordings_finished.labels(str(complete).lower()).inc(),
    )
    return Recorder(settings, hooks)


def start(recorder: Recorder, browser: BrowserConfig, record: SessionRecord) -> Recording:
    """A session's recording, before its browser can open a page; sets the
    record's artifact URI."""
    rec = browser.recording
    destination = recorder.destination(rec.bucket, rec.prefix, rec.role_arn)
    record.replay_artifact = recorder.artifact_uri(destination, record.session_id)
    facts: dict[str, Any] = {
        "browserId": record.browser_id,
        "sessionName": record.name,
        "flavour": record.flavour,
        "viewport": {"width": record.viewport.width, "height": record.viewport.height},
    }
    if record.trace_id:
        facts["traceId"] = record.trace_id
    if record.trace_parent:
        facts["traceParent"] = record.trace_parent
    return recorder.new(record.session_id, destination, facts)


async def end(
    recording: Recording, reason: str, metrics: Metrics | None, browser_alive: bool
) -> None:
    incomplete = [INCOMPLETE[reason]] if reason in INCOMPLETE else []
    await recording.end(reason, incomplete, browser_alive)
    if metrics is None:
        return
    metrics.recording_events.inc(recording.events_written)
    if recording.stream.dropped:
        metrics.recording_dropped.labels("memory").inc(recording.stream.dropped)
    if recording.spool_dropped:
        metrics.recording_dropped.labels("spool").inc(recording.spool_dropped)
    if recording.disk_dropped:
        metrics.recording_dropped.labels("disk").inc(recording.disk_dropped)
