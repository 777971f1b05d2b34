"""What recording costs a page: with vs. without, in one run.

One worker (local recording storage), two browsers that differ only in
`recording.enabled`. Rounds alternate which goes first; each sample opens a
new page through Playwright, loads it from a loopback origin, waits for the
page's own measurements, lets the recorder flush, and closes the page.

Pages:
- heavy: 5,000 elements, and a 2,000-element mutation burst started right
  after the load event, then the same burst again 1 s later;
- content: a typical article (~1,500 elements) with a 100-element update,
  likewise twice.

Figures: time to the load event and to the end of the first burst (both
from navigation start), the second burst's own duration (rrweb is recording
by then, so this is the steady cost of a mutation), medians and p95 and the
ratio recorded/plain; Chromium CPU per
page (all of the session's processes), and the daemon's CPU per MB the
recording wrote. Loopback has no network wait, so the recorder's cost shows
in full. Prints one JSON object on its last line and writes
bench/results/recording_overhead.json.

    python bench/recording_overhead.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import http.server
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from common import daemon, percentile, write_results
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc
from worker.procfs import CLOCK_TICKS, cpu_seconds, process_groups

# The burst runs right after the load event; it ends when its mutation
# observers (rrweb's) have run. A second, identical burst 1 s later lands
# while rrweb records for sure, and is timed on its own (steady state).
MEASURE = """
<script>
function burst(id) {
  var root = document.getElementById(id);
  for (var i = 0; i < %(rows)d; i++) {
    var row = document.createElement("div"); row.className = "row";
    row.innerHTML = "<span>item " + i + "</span><a href='#" + i + "'>link</a>" +
      "<em>note</em><b>" + (i * 7) + "</b>";
    root.appendChild(row);
  }
}
addEventListener("load", function () {
  setTimeout(function () {
    burst("burst");
    setTimeout(function () {
      window.__burstEnd = performance.now();
      setTimeout(function () {
        var t0 = performance.now();
        burst("later");
        setTimeout(function () { window.__steadyMs = performance.now() - t0; }, 0);
      }, 1000);
    }, 0);
  }, 0);
});
</script>
"""


BURSTS = "<div id='burst'></div><div id='later'></div>"


def heavy_page() -> str:
    rows = "".join(
        f"<div class='row'><span>row {i}</span><a href='#r{i}'>open</a><em>e{i}</em>"
        f"<b>{i * 3}</b></div>"
        for i in range(1000)
    )  # 1,000 rows of 5 elements
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>heavy</title>"
        "<style>.row{display:flex;gap:4px;font:12px sans-serif}</style></head><body>"
        f"<div id='rows'>{rows}</div>{BURSTS}{MEASURE % {'rows': 400}}</body></html>"
    )


def content_page() -> str:
    paragraph = (
        "<p>Browser sessions for agents start fast, record what happens and stream "
        "it to storage. <a href='#more'>Read more</a> about <em>recording</em> and "
        "<strong>replay</strong>.</p>"
    )
    sections = "".join(
        f"<section><h2>Section {s}</h2>{paragraph * 6}<ul>"
        + "".join(f"<li><a href='#i{s}-{i}'>item {i}</a></li>" for i in range(10))
        + "</ul><table>"
        + "".join(f"<tr><td>{r}</td><td>value {r}</td><td>{r * 2}</td></tr>" for r in range(8))
        + "</table></section>"
        for s in range(12)
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>article</title>"
        "<style>body{font:15px/1.5 serif;max-width:760px;margin:auto}"
        "table{border-collapse:collapse}td{border:1px solid #ccc;padding:2px 6px}</style>"
        f"</head><body><header><nav><a href='/'>Home</a> <a href='#a'>About</a></nav>"
        f"<h1>An article</h1></header><main>{sections}</main>{BURSTS}"
        f"{MEASURE % {'rows': 20}}</body></html>"
    )


PAGES = {"heavy": heavy_page(), "content": content_page()}


class Pages(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = PAGES.get(self.path.strip("/").removesuffix(".html"), "").encode()
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def group_cpu(pgid: int) -> float:
    """CPU seconds of a browser's process group, its reaped children
    included: a closed page's renderer exits, and its time moves to the
    parent that reaped it (cutime), so the sum does not drop."""
    total = 0.0
    for pid in process_groups({pgid})[pgid]:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15]) / CLOCK_TICKS
    return total


async def sample(context: Any, url: str, pgid: int, daemon_pid: int) -> dict[str, float]:
    cpu0, d0 = group_cpu(pgid), cpu_seconds(daemon_pid)
    page = await context.new_page()
    await page.goto(url, wait_until="load")
    await page.wait_for_function("window.__steadyMs !== undefined", timeout=30000)
    timing = await page.evaluate(
        "({load: performance.getEntriesByType('navigation')[0].loadEventStart,"
        " burst: window.__burstEnd, steady: window.__steadyMs})"
    )
    await page.wait_for_timeout(400)  # the recorder's flush and the daemon's write
    cpu1, d1 = group_cpu(pgid), cpu_seconds(daemon_pid)
    await page.close()
    await asyncio.sleep(0.2)
    return {
        "load_ms": timing["load"],
        "burst_ms": timing["burst"],
        "steady_burst_ms": timing["steady"],
        "chromium_cpu_ms": (cpu1 - cpu0) * 1000,
        "daemon_cpu_ms": (d1 - d0) * 1000,
    }


def stats(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "p95": round(percentile(values, 95), 1)}


async def run(rounds: int, scratch: Path) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{httpd.server_address[1]}"
    with daemon(scratch) as info:
        channel = grpc.insecure_channel(info["grpc"])
        browsers, sessions = pb_grpc.BrowsersStub(channel), pb_grpc.BrowserSessionsStub(channel)
        recorded = browsers.CreateBrowser(
            pb.CreateBrowserRequest(
                name="recorded",
                recording=pb.RecordingConfig(
                    enabled=True, s3_location=pb.S3Location(bucket="bench", prefix="overhead")
                ),
            )
        ).browser_id
        samples: dict[tuple[str, str], list[dict[str, float]]] = {}
        async with async_playwright() as p:
            contexts = {}
            pgids = {}
            started = {}
            for mode, browser_id in (("plain", "aws.browser.v1"), ("recorded", recorded)):
                s = sessions.StartBrowserSession(
                    pb.StartBrowserSessionRequest(browser_identifier=browser_id)
                )
                started[mode] = s
                stream = s.streams.automation_stream
                b = await p.chromium.connect_over_cdp(
                    stream.stream_endpoint, headers={"Authorization": f"Bearer {stream.token}"}
                )
                contexts[mode] = b.contexts[0]
                pgids[mode] = _pid(info["state_dir"], s.session_id)
            for name in PAGES:  # warm both: caches, first renderer spawn
                for mode in contexts:
                    await sample(contexts[mode], f"{origin}/{name}.html", pgids[mode], info["pid"])
            for r in range(rounds):
                order = ["plain", "recorded"] if r % 2 == 0 else ["recorded", "plain"]
                for name in PAGES:
                    for mode in order:
                        got = await sample(
                            contexts[mode], f"{origin}/{name}.html", pgids[mode], info["pid"]
                        )
                        samples.setdefault((name, mode), []).append(got)
        for s in started.values():
            sessions.StopBrowserSession(
                pb.StopBrowserSessionRequest(
                    browser_identifier=s.browser_identifier, session_id=s.session_id
                )
            )
        recorded_mb = await _recorded_mb(Path(info["state_dir"]), started["recorded"].session_id)
        channel.close()
    httpd.shutdown()
    return report(samples, recorded_mb, rounds)


def _pid(state_dir: str, session_id: str) -> int:
    from worker.sessions.store import Store

    store = Store(Path(state_dir) / "state.db")
    try:
        record = store.get_session(session_id)
        assert record is not None
        return record.pid
    finally:
        store.close()


async def _recorded_mb(state_dir: Path, session_id: str) -> float:
    """Uncompressed MB the recorded session wrote (from its metadata.json)."""
    folder = state_dir / "recordings" / "bench" / "overhead" / session_id
    deadline = time.monotonic() + 60
    while not (folder / "metadata.json").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the recording did not finish")
        await asyncio.sleep(0.2)
    total = sum(len(gzip.decompress(p.read_bytes())) for p in folder.glob("batch-*.ndjson.gz"))
    return total / 1e6


def report(
    samples: dict[tuple[str, str], list[dict[str, float]]], recorded_mb: float, rounds: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": rounds, "chromium": "full (new headless)"}
    daemon_added_ms = 0.0
    for name in PAGES:
        plain, rec = samples[(name, "plain")], samples[(name, "recorded")]
        page: dict[str, Any] = {}
        for metric in ("load_ms", "burst_ms", "steady_burst_ms", "chromium_cpu_ms"):
            a = [s[metric] for s in plain]
            b = [s[metric] for s in rec]
            page[metric] = {"plain": stats(a), "recorded": stats(b)}
            page[metric]["ratio_median"] = round(statistics.median(b) / statistics.median(a), 3)
        page["chromium_cpu_added_ms"] = round(
            statistics.median([s["chromium_cpu_ms"] for s in rec])
            - statistics.median([s["chromium_cpu_ms"] for s in plain]),
            1,
        )
        daemon_added_ms += sum(s["daemon_cpu_ms"] for s in rec) - sum(
            s["daemon_cpu_ms"] for s in plain
        )
        out[name] = page
    out["recorded_mb_uncompressed"] = round(recorded_mb, 2)
    out["daemon_cpu_s_per_recorded_mb"] = round(daemon_added_ms / 1000 / max(recorded_mb, 1e-9), 4)
    out["load_ratio_heavy"] = out["heavy"]["load_ms"]["ratio_median"]
    out["load_ratio_content"] = out["content"]["load_ms"]["ratio_median"]
    out["burst_ratio_heavy"] = out["heavy"]["burst_ms"]["ratio_median"]
    out["burst_ratio_content"] = out["content"]["burst_ms"]["ratio_median"]
    # The steady burst's plain time is the DOM insertion alone (layout comes
    # with the next frame), so its ratio is large; what rrweb adds per
    # mutated element is the useful figure.
    for name, elements in (("heavy", 2000), ("content", 100)):
        steady = out[name]["steady_burst_ms"]
        added = steady["recorded"]["median"] - steady["plain"]["median"]
        out[f"steady_burst_added_ms_{name}"] = round(added, 1)
        out[f"steady_burst_added_us_per_element_{name}"] = round(added * 1000 / elements, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-recording-") as scratch:
        results = asyncio.run(run(args.rounds, Path(scratch)))
    write_results("recording_overhead", results)


if __name__ == "__main__":
    main()
