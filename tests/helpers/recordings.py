"""Reading recordings back in tests: batches from S3 or a local folder."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from worker.pb import sandbox_pb2 as pb


async def recording_browser(
    worker: Any, name: str, prefix: str = "runs", bucket: str = "recordings", **fields: Any
) -> str:
    created = await worker.browsers.CreateBrowser(
        pb.CreateBrowserRequest(
            name=name,
            recording=pb.RecordingConfig(
                enabled=True, s3_location=pb.S3Location(bucket=bucket, prefix=prefix)
            ),
            **fields,
        )
    )
    return str(created.browser_id)


def local_folder(worker: Any, session_id: str, prefix: str = "runs") -> Path:
    return worker.config.recordings_dir / "recordings" / prefix / session_id


async def local_metadata(worker: Any, session_id: str, prefix: str = "runs") -> dict[str, Any]:
    """A local recording's metadata.json, once the uploader has written it."""
    from helpers.waits import eventually

    path = local_folder(worker, session_id, prefix) / "metadata.json"
    await eventually(path.exists, 10)
    return dict(json.loads(path.read_text()))


def events_of(batches: list[bytes]) -> list[dict[str, Any]]:
    events = []
    for data in batches:
        for line in gzip.decompress(data).decode().splitlines():
            events.append(json.loads(line))
    return events


def local_batches(folder: Path) -> list[bytes]:
    paths = sorted(folder.glob("batch-*.ndjson.gz"), key=lambda p: int(p.name[6:].split(".")[0]))
    return [p.read_bytes() for p in paths]


def custom(events: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    return [e["data"]["payload"] for e in events if e["type"] == 5 and e["data"]["tag"] == tag]


def s3_batches(objects: dict[str, bytes]) -> list[bytes]:
    keys = [k for k in objects if k.rsplit("/", 1)[-1].startswith("batch-")]
    keys.sort(key=lambda k: int(k.rsplit("batch-", 1)[1].split(".")[0]))
    return [objects[k] for k in keys]


def contiguous(events: list[dict[str, Any]]) -> bool:
    return [e["seq"] for e in events] == list(range(1, len(events) + 1))


async def drive(page: Any, web: str) -> None:
    """Navigate, type, click (console.log + fetch), scroll, open a tab."""
    await page.goto(f"{web}/record.html")
    await page.fill("#name", "Ada")
    await page.fill("#secret", "hunter2-password")
    await page.click("#go")
    await page.wait_for_function("document.querySelector('#status').textContent != 'idle'")
    await page.mouse.wheel(0, 600)
    async with page.context.expect_page() as opened:
        await page.click("#open")
    tab = await opened.value
    await tab.wait_for_load_state("load")
    await page.wait_for_timeout(400)  # past the recorder's start after load
