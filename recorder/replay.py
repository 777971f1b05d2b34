"""The replay viewer: one self-contained HTML file per recording.

It embeds rrweb-player (from npm, like the recorder) and the session's
events, plays one tab at a time (events carry their tab number), and lists
console, network, navigation and page events beside the player; clicking one
jumps the player there. Recordings are read from S3 (`s3://bucket/key/`) or
from a local folder in the same layout.
"""

from __future__ import annotations

import gzip
import html
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from recorder import assets
from recorder.batch import batch_number


class NotARecording(ValueError):
    """The place named holds no recording."""


def load(source: str, s3: Any = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metadata, events) from an s3:// URI, a file:// URI or a folder."""
    if source.startswith("s3://"):
        files = _s3_files(source, s3)
    else:
        path = Path(unquote(urlparse(source).path) if source.startswith("file://") else source)
        if not path.is_dir():
            raise NotARecording(f"{source}: not a folder")
        files = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    return _parse(source, files)


def _s3_files(uri: str, s3: Any) -> dict[str, bytes]:
    parsed = urlparse(uri)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/").rstrip("/") + "/"
    if s3 is None:
        import boto3

        s3 = boto3.client("s3")
    files: dict[str, bytes] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            name = item["Key"][len(prefix) :]
            if "/" not in name:
                files[name] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return files


def _parse(source: str, files: dict[str, bytes]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    batches = sorted((n for n in files if n.startswith("batch-")), key=batch_number)
    if not batches:
        raise NotARecording(f"{source}: no batch-<n>.ndjson.gz files")
    meta = json.loads(files["metadata.json"]) if "metadata.json" in files else {}
    events = [
        json.loads(line)
        for name in batches
        for line in gzip.decompress(files[name]).decode().splitlines()
        if line.strip()
    ]
    events.sort(key=lambda e: (e.get("timestamp", 0), e.get("seq", 0)))
    return meta, events


def render(meta: dict[str, Any], events: list[dict[str, Any]]) -> str:
    """The viewer as one HTML document."""
    data = json.dumps({"meta": meta, "events": events}, separators=(",", ":"))
    # Inside <script>, only "</" can end the element early.
    data = data.replace("</", "<\\/")
    title = html.escape(f"Session {meta.get('sessionId', '')}".strip())
    return _PAGE.format(
        title=title,
        player_css=assets.read(assets.PLAYER_CSS),
        data=data,
        player_js=assets.read(assets.PLAYER),
        viewer_js=_VIEWER,
    )


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>{player_css}</style>
<style>
  body {{ margin: 0; font: 13px system-ui, sans-serif; background: #f4f5f7; color: #1d2330; }}
  header {{ padding: 8px 14px; background: #1d2330; color: #fff; display: flex; gap: 18px;
            align-items: center; flex-wrap: wrap; }}
  header b {{ font-weight: 600; }}
  .incomplete {{ color: #ffb347; }}
  main {{ display: flex; gap: 12px; padding: 12px; align-items: flex-start; }}
  #player {{ flex: 0 0 auto; }}
  aside {{ flex: 1 1 360px; min-width: 320px; background: #fff; border-radius: 6px;
           box-shadow: 0 1px 3px rgba(0,0,0,.15); max-height: 86vh; display: flex;
           flex-direction: column; }}
  aside .filters {{ padding: 8px; border-bottom: 1px solid #e3e5ea; display: flex; gap: 6px;
                    flex-wrap: wrap; }}
  aside ol {{ list-style: none; margin: 0; padding: 0; overflow: auto; }}
  aside li {{ padding: 4px 8px; border-bottom: 1px solid #f0f1f4; cursor: pointer;
              white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }}
  aside li:hover {{ background: #eef3ff; }}
  .t {{ color: #6b7280; display: inline-block; width: 64px; }}
  .tag {{ display: inline-block; width: 74px; font-weight: 600; }}
  .console .tag {{ color: #2563eb; }} .network .tag {{ color: #059669; }}
  .error {{ color: #b91c1c; }} .navigation .tag, .lifecycle .tag {{ color: #7c3aed; }}
  .cdp .tag {{ color: #92400e; }}
</style>
</head>
<body>
<header id="summary"></header>
<main><div id="player"></div>
<aside><div class="filters" id="filters"></div><ol id="entries"></ol></aside></main>
<script id="recording" type="application/json">{data}</script>
<script>
{player_js}
</script>
<script>
{viewer_js}
</script>
</body>
</html>
"""

_VIEWER = r"""
(function () {
  var recording = JSON.parse(document.getElementById("recording").textContent);
  var meta = recording.meta, events = recording.events;
  var Player = rrwebPlayer.default || rrwebPlayer.Player;
  var tabs = [], byTab = {};
  events.forEach(function (e) {
    // A tab's DOM events written while another tab was on show are wrapped
    // (tag other-tab) for players of all tabs at once; this one plays a
    // tab at a time, so it takes them back out.
    if (e.type === 5 && e.data && e.data.tag === "other-tab") e = e.data.payload;
    else if (e.type === 5) return;
    var tab = e.tab || 1;
    if (!byTab[tab]) { byTab[tab] = []; tabs.push(tab); }
    byTab[tab].push(e);
  });
  var custom = events.filter(function (e) { return e.type === 5; });
  var start = events.length ? events[0].timestamp : 0;
  var state = { player: null, tab: tabs[0], shown: { console: 1, network: 1, navigation: 1,
                lifecycle: 1, target: 0, cdp: 0 } };

  function text(tag, p) {
    if (tag === "console") return "[" + p.level + "] " + p.text;
    if (tag === "network") return (p.method || "") + " " + (p.status || p.error || p.state) +
      " " + p.url + (p.durationMs != null ? " (" + Math.round(p.durationMs) + " ms)" : "");
    if (tag === "navigation") return p.url;
    if (tag === "lifecycle") return p.event;
    if (tag === "target") return p.event + " " + p.type + " " + (p.url || "");
    if (tag === "cdp") return p.method + (p.error ? " -> " + p.error : "");
    return JSON.stringify(p);
  }

  function summary() {
    var h = document.getElementById("summary");
    var parts = ["<b>Session " + (meta.sessionId || "?") + "</b>",
      "started " + (meta.startTime || new Date(start).toISOString()),
      Math.round((meta.durationMs || 0) / 1000) + " s", events.length + " events"];
    if (meta.complete === false)
      parts.push("<span class='incomplete'>incomplete: " +
        (meta.incompleteReasons || []).join("; ") + "</span>");
    h.innerHTML = parts.map(function (p) { return "<span>" + p + "</span>"; }).join("");
    var sel = document.createElement("select");
    sel.id = "tab";
    tabs.forEach(function (t) {
      var o = document.createElement("option"); o.value = t; o.textContent = "tab " + t;
      sel.appendChild(o);
    });
    sel.onchange = function () { show(Number(sel.value)); };
    h.appendChild(sel);
  }

  function filters() {
    var box = document.getElementById("filters");
    Object.keys(state.shown).forEach(function (tag) {
      var l = document.createElement("label"), c = document.createElement("input");
      c.type = "checkbox"; c.checked = !!state.shown[tag];
      c.onchange = function () { state.shown[tag] = c.checked ? 1 : 0; list(); };
      l.appendChild(c); l.appendChild(document.createTextNode(" " + tag)); box.appendChild(l);
    });
  }

  function list() {
    var ol = document.getElementById("entries");
    ol.textContent = "";
    var first = state.first || start;
    custom.forEach(function (e) {
      var tag = e.data.tag, p = e.data.payload || {};
      if (!state.shown[tag]) return;
      if (p.tab && p.tab !== state.tab) return;
      var li = document.createElement("li");
      var bad = (tag === "console" && /error|exception/.test(p.level)) ||
                (tag === "network" && (p.error || p.status >= 400));
      li.className = tag + (bad ? " error" : "");
      var t = document.createElement("span"); t.className = "t";
      t.textContent = ((e.timestamp - first) / 1000).toFixed(2) + "s";
      var g = document.createElement("span"); g.className = "tag"; g.textContent = tag;
      li.appendChild(t); li.appendChild(g);
      li.appendChild(document.createTextNode(text(tag, p)));
      li.title = JSON.stringify(p, null, 1);
      li.onclick = function () {
        if (state.player) state.player.goto(Math.max(0, e.timestamp - first), false);
      };
      ol.appendChild(li);
    });
  }

  function show(tab) {
    state.tab = tab;
    var target = document.getElementById("player");
    if (state.player && state.player.$destroy) state.player.$destroy();
    target.textContent = "";
    var tabEvents = byTab[tab] || [];
    // Playback starts at the tab's first page (rrweb's meta event, then its
    // full snapshot), never on a blank stretch before it.
    var firstPage = tabEvents.findIndex(function (e) { return e.type === 4; });
    tabEvents = firstPage < 0 ? [] : tabEvents.slice(firstPage);
    state.first = tabEvents.length ? tabEvents[0].timestamp : start;
    state.player = tabEvents.length >= 2 ? new Player({ target: target, props: {
      events: tabEvents, width: 960, height: 600, autoPlay: false, showWarning: false,
      mouseTail: false } }) : null;
    if (!state.player) target.textContent = "no page recorded in this tab";
    list();
    window.sandboxReplay.player = state.player;
    window.sandboxReplay.tab = tab;
    window.sandboxReplay.duration = tabEvents.length ?
      tabEvents[tabEvents.length - 1].timestamp - tabEvents[0].timestamp : 0;
  }

  window.sandboxReplay = { meta: meta, events: events, tabs: tabs, show: show };
  summary(); filters();
  if (tabs.length) show(tabs[0]); else list();
  // rrweb's player applies the events strictly before the offset it goes
  // to: one past the last event shows the page as it ended.
  if (location.hash === "#end" && state.player)
    state.player.goto(window.sandboxReplay.duration + 1, false);
})();
"""
