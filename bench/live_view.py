"""Live view: how long a change in a session takes to show in a viewer, how
many frames a viewer gets, and what a viewer costs the daemon.

One worker, two sessions: the watched one (a page driven by Playwright) and
a second one whose page is the viewer (the live-view page over its
websocket, as a person's browser would load it). Latency: the watched page
changes its background colour and notes the time; the viewer notes when a
drawn frame first shows the new colour (same machine clock); 30 changes.
Frames/s: while the watched page animates for 5 s. Daemon CPU: 5 s of the
animation with the viewer connected, against 5 s of the same animation with
nobody watching, and 5 s after the viewer left. Prints one JSON object on
its last line and writes bench/results/live_view.json.

    python bench/live_view.py [--changes 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from common import daemon, percentile, write_results
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc
from worker.procfs import cpu_seconds

WATCHED = """<!doctype html><html><head><title>watched</title><style>
body{margin:0;background:rgb(0,0,0)} #box{position:absolute;width:80px;height:80px;
background:#fff;top:40px}</style></head><body><div id="box"></div></body></html>"""

SAMPLER = """
window.seen = [];
window.liveView.onFrame = function (ctx) {
  const c = ctx.canvas, x = 0.8 * c.width, y = 0.8 * c.height;
  const p = ctx.getImageData(x, y, 1, 1).data;
  const last = window.seen.length ? window.seen[window.seen.length - 1].rgb : [-99, -99, -99];
  if (Math.max(...[0, 1, 2].map(i => Math.abs(p[i] - last[i]))) > 12)
    window.seen.push({ rgb: [p[0], p[1], p[2]], at: Date.now() });
};
// JPEG shifts colours a little: a frame shows a colour when every channel
// is within 12.
window.shownAt = function (rgb, after) {
  const hit = window.seen.find(s => s.at >= after &&
    Math.max(...[0, 1, 2].map(i => Math.abs(s.rgb[i] - rgb[i]))) <= 12);
  return hit ? hit.at : 0;
};
true;  // (a script ending in a function would be called by Playwright)
"""

ANIMATE = """
window.animating = true;
(function step(t) {
  document.getElementById('box').style.left = (t / 4 % 800) + 'px';
  if (window.animating) requestAnimationFrame(step);
})(0);
"""


async def connect(p: Any, started: Any) -> Any:
    stream = started.streams.automation_stream
    browser = await p.chromium.connect_over_cdp(
        stream.stream_endpoint, headers={"Authorization": f"Bearer {stream.token}"}
    )
    return browser


async def run(changes: int, scratch: Path) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    with daemon(scratch) as info:
        channel = grpc.insecure_channel(info["grpc"])
        sessions = pb_grpc.BrowserSessionsStub(channel)
        watched = sessions.StartBrowserSession(pb.StartBrowserSessionRequest())
        host = sessions.StartBrowserSession(pb.StartBrowserSessionRequest())
        url = watched.streams.live_view_stream.stream_endpoint
        token = watched.streams.automation_stream.token
        pid = info["pid"]
        async with async_playwright() as p:
            w_browser, v_browser = await connect(p, watched), await connect(p, host)
            page = await w_browser.contexts[0].new_page()
            await page.set_content(WATCHED)
            view = await v_browser.contexts[0].new_page()

            idle_before = await daemon_cpu(pid, page, animate=True)
            await view.goto(f"{url}?token={token}", wait_until="domcontentloaded")
            await view.wait_for_function("window.liveView && window.liveView.frames > 0")
            await view.evaluate(SAMPLER)

            latencies = []
            for i in range(changes):
                rgb = [(i * 97) % 256, (i * 57 + 80) % 256, (i * 31 + 40) % 256]
                changed_at = await page.evaluate(
                    f"() => {{ document.body.style.background = 'rgb{tuple(rgb)}';"
                    " return Date.now(); }"
                )
                shown = await view.wait_for_function(
                    f"window.shownAt({rgb}, {changed_at})", timeout=10000
                )
                latencies.append(float(await shown.json_value()) - changed_at)
                await asyncio.sleep(0.15)

            frames_before = await view.evaluate("window.liveView.frames")
            watching = await daemon_cpu(pid, page, animate=True)
            fps = (await view.evaluate("window.liveView.frames") - frames_before) / 5.0
            await view.close()
            await asyncio.sleep(0.5)
            idle_after = await daemon_cpu(pid, page, animate=True)
            await w_browser.close()
            await v_browser.close()
        for started in (watched, host):
            sessions.StopBrowserSession(
                pb.StopBrowserSessionRequest(
                    browser_identifier=started.browser_identifier, session_id=started.session_id
                )
            )
        channel.close()
    return {
        "changes": changes,
        "latency_ms": {
            "median": round(statistics.median(latencies), 1),
            "p95": round(percentile(latencies, 95), 1),
            "min": round(min(latencies), 1),
        },
        "frames_per_s_animating": round(fps, 1),
        "daemon_cpu_share": {
            "nobody_watching": round(idle_before, 4),
            "one_viewer": round(watching, 4),
            "after_the_viewer_left": round(idle_after, 4),
        },
        "daemon_cpu_per_viewer": round(watching - idle_before, 4),
        "note": "cpu shares are CPU-seconds per second of the daemon process (1.0 = one core)",
    }


async def daemon_cpu(pid: int, page: Any, animate: bool, seconds: float = 5.0) -> float:
    """The daemon's CPU share while the watched page animates."""
    if animate:
        await page.evaluate(ANIMATE)
    before, began = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    share = (cpu_seconds(pid) - before) / (time.monotonic() - began)
    await page.evaluate("window.animating = false")
    return share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-live-") as scratch:
        results = asyncio.run(run(args.changes, Path(scratch)))
    write_results("live_view", results)


if __name__ == "__main__":
    main()
