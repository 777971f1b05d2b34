"""The script every recorded frame runs before the page's own scripts.

It loads rrweb and its console plugin into a private object (not onto
`window`), takes the CDP binding off the global object so page scripts never
see it, and sends events in batches: one binding call per `flush_ms`, each a
newline-joined list of `<timestamp> <event JSON>` lines, so the daemon orders
and numbers events without re-parsing them.

rrweb starts when the page first goes idle after the load event (at most
1 s later), not at it: its full snapshot is synchronous (~14 ms per 1,000
elements here), and inside the load event it delays `load` for the page and
for the automation client waiting on it, and right after it, the page's own
first work. The DOM is captured whole by that snapshot; changes made before
it are folded into it, and input before it is missed. Until then the
bundles are not even compiled (see `source`).
In child frames rrweb itself either stays idle (same origin: the parent
serialises them) or posts to the parent (cross-origin), so only the top
frame calls the binding; a child starts only once its parent has.

What a person does goes out at once, not with the next batch: a click (or
any mouse interaction) and a change to a field flush the queue inside
rrweb's own listener, before the browser acts on the event. A click on a
link is then in the daemon's hands before the page that showed it unloads,
and typed text is recorded as it is typed (rrweb's default sampling), not
when the field loses focus. The script names itself (`sourceURL`), so the
daemon can tell its frames from the page's in console stack traces.
"""

from __future__ import annotations

import json

from recorder import assets

# What the injected script's frames are called in stack traces.
SOURCE_URL = "sandbox-recorder.js"

_BOOTSTRAP = """
(function (load, name, flushMs, maxBytes) {
  var send = globalThis[name];
  if (typeof send !== "function") return;
  try { delete globalThis[name]; } catch (e) { return; }
  var stringify = JSON.stringify, later = setTimeout, queue = [], size = 0, timer = 0;
  function flush() {
    if (timer) { clearTimeout(timer); timer = 0; }
    if (!queue.length) return;
    var payload = queue.join("\\n");
    queue = []; size = 0;
    try { send(payload); } catch (e) {}
  }
  function urgent(event) {
    // rrweb's incremental snapshots (3) of mouse interactions (2) and input (5)
    var source = event.type === 3 && event.data ? event.data.source : -1;
    return source === 2 || source === 5;
  }
  function emit(event) {
    var line;
    try { line = event.timestamp + " " + stringify(event); } catch (e) { return; }
    queue.push(line); size += line.length;
    if (size >= maxBytes || urgent(event)) flush();
    else if (!timer) timer = later(flush, flushMs);
  }
  var recorder = null;
  function start() {
    var lib = load();
    recorder = lib.rrwebRecord.record;
    recorder({
      emit: emit,
      recordCrossOriginIframes: true,
      maskInputOptions: { password: true },
      sampling: { mousemove: 50, scroll: 150 },
      plugins: [lib.rrwebPluginConsoleRecord.getRecordConsolePlugin({
        level: ["info", "log", "warn", "error"], lengthThreshold: 1000
      })]
    });
  }
  addEventListener("pagehide", flush, true);
  addEventListener(name, flush, true);
  // The daemon asks for a fresh full snapshot when this tab comes into use
  // again, so a player of all tabs as one timeline shows it (see stream.py).
  addEventListener(name + ":snapshot", function () {
    if (recorder && isTop) { try { recorder.takeFullSnapshot(true); } catch (e) {} flush(); }
  }, true);
  // A frame's rrweb must start after its parent's: a child's first snapshot
  // goes to the parent by postMessage and is lost if nobody listens yet.
  // Children ask when they are ready; a started frame answers at once,
  // others once they start.
  var isTop = window.top === window, started = false, waiting = [];
  var START = name + ":start", READY = name + ":ready";
  function tell(target) { try { target.postMessage(START, "*"); } catch (e) {} }
  function begin() {
    if (started) return;
    started = true;
    start();
    waiting.forEach(tell);
    waiting = [];
  }
  addEventListener("message", function (e) {
    if (e.data === READY && e.source) { if (started) tell(e.source); else waiting.push(e.source); }
    else if (e.data === START && !isTop && e.source === window.parent) begin();
  }, true);
  function soon() {
    if (!isTop) {
      try { window.parent.postMessage(READY, "*"); } catch (e) {}
      later(begin, 3000);  // a parent that never answers (not recorded)
      return;
    }
    if (typeof requestIdleCallback === "function") requestIdleCallback(begin, { timeout: 1000 });
    else later(begin, 0);
  }
  if (document.readyState === "complete") soon();
  else addEventListener("load", soon, { once: true, capture: true });
})
"""


def source(binding: str, flush_ms: int = 100, max_bytes: int = 512 * 1024) -> str:
    """The injected script for one session's binding name."""
    # The bundles run with `exports`, `module` and `define` shadowed: a page
    # defining those globals must not capture rrweb, and `this` (the UMD's
    # global) is a private object.
    # They sit in a function called only when recording starts: at document
    # start V8 only pre-parses them, and compiles them after the load event.
    libraries = assets.joined(assets.RECORD, assets.CONSOLE_PLUGIN)
    return (
        "(function () {\nfunction load() {\nvar lib = {};\n"
        "(function (exports, module, define) {\n"
        f"{libraries}\n;\n"
        "}).call(lib);\nreturn lib;\n}\n"
        f"{_BOOTSTRAP.strip()}(load, {json.dumps(binding)}, {int(flush_ms)}, {int(max_bytes)});\n"
        f"}})();\n//# sourceURL={SOURCE_URL}\n"
    )


def flush_expression(binding: str) -> str:
    """Evaluated in a page at session end: send what the page still holds.
    The event's name is the binding's, which page scripts do not know."""
    return f"dispatchEvent(new Event({json.dumps(binding)})), true"


def snapshot_expression(binding: str) -> str:
    """Evaluated in a page that comes into use: take a full snapshot now and
    send it (a page whose recorder has not started yet will take its first)."""
    return f"dispatchEvent(new Event({json.dumps(binding + ':snapshot')})), true"
