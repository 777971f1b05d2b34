"""One browser session: its directories, its browser process, its clients.

`close(reason)` is the only way a session ends, whoever asks (Stop, the
timeout, the browser exiting, shutdown, a failed start). It is idempotent,
safe before `start` finished, and ordered: tell its owners first (so nobody
finds a dying session and its room is free), then record the end, stop the
recording, disconnect clients, kill the process group, and remove the
directories in `finally`.

A session reports its end through one event: `subscribe(listener)` adds an
owner, called synchronously as the end begins. Owners subscribe; nobody
swaps a callback.

Why one module of about 500 lines: start, claim, the watchers and close
share ordering constraints (the relay listener before the spawn, the CAs
before the first client, the recording before the clients go, the uid back
only after the sweep); split across files, those orderings would no longer
read in one place. What is not ordering lives beside it (`trust`,
`session_recording`, `browser.launcher`, `browser.reaper`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from certstore.validate import CACertificate
from recorder.recording import Recording
from worker.browser import extensions, launcher, policies
from worker.browser.reaper import sweep
from worker.cdp import CDPError, storage
from worker.cdp.actions import Action, Actor, Result
from worker.cdp.multiplexer import Multiplexer
from worker.errors import FailedPrecondition, Unavailable
from worker.network import netns
from worker.network.routing import ProxyConfig
from worker.sessions import session_recording, trust
from worker.sessions.host import HostServices
from worker.sessions.model import (
    BROWSER_EXITED,
    BROWSER_UNRESPONSIVE,
    OUT_OF_MEMORY,
    READY,
    START_FAILED,
    TERMINATED,
    TIMEOUT,
    SessionRecord,
)
from worker.sessions.start_addons import Addons

log = structlog.get_logger(__name__)

# Close codes sent to automation clients when their session ends.
CLOSE_CODES = {BROWSER_EXITED: 1011, OUT_OF_MEMORY: 1011}
# Endings where the browser died under the session: its log says why.
CRASHES = (BROWSER_EXITED, START_FAILED, BROWSER_UNRESPONSIVE, OUT_OF_MEMORY)
# How long after a browser's first answer its pages start being watched for
# dialogs (bench/cold_start.py: watching at once cost full Chromium 3-5%).
WATCH_PAGES_AFTER_S = 0.1
# What a typed character adds to an action's time limit (bench/invoke.py
# measured ~1 ms a character).
TYPING_ALLOWANCE_S = 0.003
# How often a session's cgroup is checked for OOM kills (one small read).
MEMORY_POLL_S = 0.5

Listener = Callable[["Session"], None]


class Session:
    def __init__(
        self,
        record: SessionRecord,
        token: str,
        host: HostServices,
        *,
        proxy_auth: Sequence[str] = (),
        certificates: Sequence[CACertificate] = (),
        recording: Recording | None = None,
        addons: Addons | None = None,
        pooled: bool = False,
    ) -> None:
        self.record = record
        self.token = token
        self._host = host
        self._config = host.config
        self._proxy_auth = list(proxy_auth)  # Proxy-Authorization per proxy: memory only
        self._certificates = list(certificates)  # validated, tool-level first
        self.recording = recording
        self._addons = addons  # extensions and policy files, checked
        self._listeners: list[Listener] = []
        self._memory_watch: asyncio.Task[None] | None = None
        self._actor: asyncio.Task[Actor] | None = None  # InvokeBrowser's hands
        # A browser profile's cookies and local storage, put into the browser
        # before any client or recording sees it; dropped once applied.
        self.profile_state: dict[str, Any] | None = None
        self._focus = ""  # the tab last acted on by a client, viewer or action
        self._netns = -1  # a descriptor on the session's network namespace
        self.uid: int | None = None  # the browser's own user, when sandboxed
        self.requested_at = time.perf_counter()  # StartBrowserSession arrived
        # False for a pooled browser until a session claims it: until then
        # it has no record to persist and no session to count.
        self.claimed = not pooled
        self.proxy_port = 0
        self._launch_size = (record.viewport.width, record.viewport.height)
        self.process: launcher.BrowserProcess | None = None
        self.mux: Multiplexer | None = None
        self.ready: asyncio.Future[str] | None = None  # resolves to a spare browser session
        self._timer: asyncio.TimerHandle | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._down = asyncio.Event()  # the browser has exited (close under way)
        self.log = log.bind(session_id=record.session_id, browser_id=record.browser_id)
        self.trace(record)

    def trace(self, record: SessionRecord) -> None:
        """Carry the caller's trace context on every log line of the session."""
        pairs = (("trace_id", record.trace_id), ("trace_parent", record.trace_parent))
        if context := {k: v for k, v in pairs if v}:
            self.log = self.log.bind(**context)

    @property
    def session_id(self) -> str:
        return self.record.session_id

    @property
    def running(self) -> bool:
        """Its browser is up and no close has begun."""
        return self._close_task is None and self.process is not None

    @property
    def directory(self) -> Path:
        return Path(self.record.session_dir)

    @property
    def tmp_directory(self) -> Path:
        """Everything the browser itself writes: profile, HOME (its NSS
        store), downloads and TMPDIR. It lives under the runtime root in the
        system temp directory, which every user can traverse, so a sandboxed
        browser's uid reaches it wherever the state directory is."""
        return self._config.session_tmp_root / self.session_id

    @property
    def home(self) -> Path:
        return self.tmp_directory / "home"

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(self)` as this session's end begins."""
        self._listeners.append(listener)

    # -- start

    def make_dirs(self) -> launcher.LaunchSpec:
        """Create the 0700 directories and say how the browser launches."""
        self.directory.mkdir(mode=0o700)
        # The runtime root is made 0711 at start (recover): browsers' uids
        # may pass through it, never list it.
        self._config.session_tmp_root.mkdir(mode=0o711, parents=True, exist_ok=True)
        own = self.tmp_directory
        made = [own / sub for sub in ("", "profile", "home", "downloads", "tmp")]
        for path in made:
            path.mkdir(mode=0o700, exist_ok=path != own)
        uids = self._host.sandbox.uids
        if uids is not None:
            self.uid = uids.acquire()
            for path in made:  # all empty yet: no tree to walk
                os.chown(path, self.uid, self.uid)
        cgroups = self._host.cgroups
        procs = cgroups.create(self.session_id) if cgroups is not None else []
        binary = (
            self._config.chromium_path
            if self.record.flavour == "chromium"
            else self._config.headless_shell_path
        )
        return launcher.LaunchSpec(
            binary=binary,
            flavour=self.record.flavour,
            profile_dir=own / "profile",
            home_dir=own / "home",
            tmp_dir=own / "tmp",
            log_path=self.directory / "browser.log",
            window_width=self.record.viewport.width,
            window_height=self.record.viewport.height,
            extra_args=self._config.extra_chromium_args,
            # A pooled browser makes its first page while nobody waits, and
            # hands it to its session's first client (cdp.multiplexer.FirstPage).
            first_tab=self._config.first_tab or not self.claimed,
            proxy_server=f"http://127.0.0.1:{self.proxy_port}" if self.proxy_port else "",
            host_rules=self._config.chromium_host_rules(),
            uid=self.uid,
            no_sandbox=not self._host.sandbox.chromium_sandbox,
            cgroup_procs=tuple(procs),
            nice=self._config.browser_nice,
        )

    async def start(self) -> None:
        """Launch the browser; the session is READY once the process runs.

        Start does not wait for the browser's first CDP answer: clients may
        connect at once (their handshake overlaps the browser's boot) and
        their first command is answered when the browser is up. A browser
        that never answers ends the session with START_FAILED.
        """
        await self.launch()
        if self.profile_state:
            await self._restore_profile()
            if self.recording is not None and self.process is not None:
                self.recording.attach(self.process.connection)
        self.activate()

    async def launch(self) -> None:
        """Spawn the browser with this session's routing and trust."""
        namespace = self._enter_namespace()
        await self._open_relay(namespace)
        spec = self.make_dirs()
        if namespace:
            spec = dataclasses.replace(spec, netns=namespace)
        if self._addons is not None:
            spec = await asyncio.to_thread(self._install_addons, spec, self._addons)
        if self._certificates:
            spec = await asyncio.to_thread(self._install_trust, spec)
        elif not self.claimed:
            # A pooled browser's environment must name a bundle now, for
            # whatever CAs its session brings later (system roots only yet).
            spec = self._install_trust(spec)
        self.process = await launcher.launch(spec)
        if not self.claimed:
            # Nobody waits for a pool refill's boot: it runs at the browsers'
            # lower priority from its spawn, or it would take the CPU from a
            # session's browser (lowered at its first answer) while that one
            # makes its client's first page (bench/peers.py: 1,003 against
            # 465 ms time to first page for a cold session beside a refill).
            self.process.lower_priority()
        self.record.pid = self.process.pid
        if self.recording is not None and not self.profile_state:
            # Before any client can connect: every page is attached and
            # injected from its first document on. (With a profile, once it
            # is in: the recording never sees the profile's state.)
            self.recording.attach(self.process.connection)
        self.process.exited.add_done_callback(self._on_exit)
        self.ready = asyncio.ensure_future(
            launcher.wait_ready(self.process, self._config.start_timeout_s)
        )
        self.ready.add_done_callback(self._on_ready)
        self.mux = self._multiplexer(self.process)

    def _enter_namespace(self) -> str:
        """A network namespace of the browser's own, when isolation is on."""
        if self._config.network_isolation != "namespace":
            return ""
        self._netns = netns.create()
        return netns.path(self._netns)

    async def _open_relay(self, namespace: str) -> None:
        relay = self._host.relay
        proxy = self.record.proxy_config
        if proxy is None and (namespace or not self.claimed) and relay is not None:
            # A pooled browser goes through its own relay listener from the
            # start, routed direct until a session brings its proxies; an
            # isolated browser has no other way out.
            proxy = ProxyConfig(proxies=())
        if proxy is None:
            return
        if relay is None:
            raise Unavailable("proxy_configuration", "this worker runs no proxy relay")
        self.proxy_port = await relay.open(self.session_id, proxy, self._proxy_auth, namespace)

    def _install_addons(self, spec: launcher.LaunchSpec, addons: Addons) -> launcher.LaunchSpec:
        """Unpack the extensions where the browser's user can read them,
        and build its own /etc/chromium when it has policies."""
        unpacked = []
        if addons.extensions:
            root = self.tmp_directory / "extensions"
            root.mkdir(mode=0o755)
            for n, data in enumerate(addons.extensions):
                extensions.unpack(data, root / str(n))
                unpacked.append(root / str(n))
        view = None
        if addons.has_policies:
            view = policies.build_view(
                self.directory / "etc-chromium", addons.managed, addons.recommended
            )
        return dataclasses.replace(spec, extension_dirs=tuple(unpacked), policy_view=view)

    def _install_trust(self, spec: launcher.LaunchSpec) -> launcher.LaunchSpec:
        return trust.install(self._host.trust, spec, self._certificates, self.uid)

    def _multiplexer(self, process: launcher.BrowserProcess) -> Multiplexer:
        metrics = self._host.metrics
        assert self.ready is not None
        return Multiplexer(
            process.connection,
            self._config.client_queue_limit,
            self.ready,
            metrics.cdp_messages.labels("in").inc,
            metrics.cdp_messages.labels("out").inc,
            self._window_defaults,
            self._client_command,
            str(self.tmp_directory / "downloads"),
            self.in_use,
        )

    def _window_defaults(self) -> dict[str, Any]:
        """What a client's Target.createTarget gets when it names no size: the
        session's viewport, when it differs from the size the browser was
        launched with (a pooled browser claimed for another viewport). Full
        Chromium sizes only new windows."""
        size = (self.record.viewport.width, self.record.viewport.height)
        if size == self._launch_size:
            return {}
        defaults: dict[str, Any] = {"width": size[0], "height": size[1]}
        if self.record.flavour == "chromium":
            defaults["newWindow"] = True
        return defaults

    def _client_command(
        self, client: int, method: str, params: dict[str, Any], reply: dict[str, Any], took: float
    ) -> None:
        if self.recording is not None:
            self.recording.client_command(client, method, params, reply, took)

    def in_use(self, target_id: str) -> None:
        """A client, a live viewer or an action acts on this page (the
        recording shows the tab in use, and actions go to it)."""
        self._focus = target_id
        if self.recording is not None:
            self.recording.focus(target_id)

    async def invoke(self, action: Action) -> Result:
        """Do one action on the tab the session shows: the one last acted on,
        else the newest (new tabs come to the front)."""
        try:
            actor = await self._hands()
        except (CDPError, TimeoutError) as exc:
            return Result(False, f"the session's browser did not answer: {exc}")
        target = self._focus if actor.has_page(self._focus) else actor.newest_page()
        if target:
            self.in_use(target)
        timeout = self._config.action_timeout_s
        if action.kind == "keyType":
            # Each character is a key press the page answers: ~1 ms each here.
            timeout += len(str(action.args.get("text", ""))) * TYPING_ALLOWANCE_S
        return await actor.perform(target, action, timeout)

    async def capture_profile(self) -> dict[str, Any]:
        """The browser's cookies and the local storage of every origin its
        tabs show or showed (SaveBrowserSessionProfile)."""
        try:
            actor = await self._hands()
        except (CDPError, TimeoutError):
            raise FailedPrecondition("session_id", "the session's browser is not running") from None
        assert self.process is not None
        return await storage.capture(
            self.process.connection,
            actor.browser_session,
            actor.shown(),
            actor.visited,
            self._config.action_timeout_s,
        )

    async def _restore_profile(self) -> None:
        """Put the profile's state in, through a browser-target session of
        its own; waits for the browser's boot (its first answer)."""
        assert self.process is not None and self.profile_state is not None
        state, self.profile_state = self.profile_state, None
        conn = self.process.connection
        timeout = self._config.start_timeout_s
        browser = str(
            (await conn.call("Target.attachToBrowserTarget", None, None, timeout))["sessionId"]
        )
        try:
            await storage.apply(conn, browser, state, timeout)
        finally:
            conn.send("Target.detachFromTarget", {"sessionId": browser}, None, lambda _r: None)
        self.log.info(
            "session.profile_restored",
            cookies=len(state.get("cookies") or []),
            origins=len(state.get("localStorage") or {}),
        )

    def _watch_pages(self) -> None:
        """From the start, so a dialog that opens before the first action is
        one the action can answer (see worker/cdp/actions.py)."""
        if self._actor is not None or self.process is None or self._close_task is not None:
            return
        actor = Actor(self.process.connection)

        async def opened() -> Actor:
            await actor.open()
            return actor

        self._actor = asyncio.ensure_future(opened())

    def _watch_pages_once_up(self, ready: asyncio.Future[str]) -> None:
        if not ready.cancelled() and ready.exception() is None:
            # A moment after the first answer: a client's first commands
            # (its connect, its first page) do not queue behind ours.
            asyncio.get_running_loop().call_later(WATCH_PAGES_AFTER_S, self._watch_pages)

    async def _hands(self) -> Actor:
        """The session's actor, once its browser has answered."""
        if self._actor is None and self.ready is not None and self.running:
            await asyncio.shield(self.ready)
            self._watch_pages()
        if self._actor is None:
            raise CDPError("the session's browser is not running", -32000)
        return await asyncio.shield(self._actor)

    def activate(self) -> None:
        """The session is READY: persisted, and its timeout running."""
        self.claimed = True
        ready = self.ready
        if ready is not None and not ready.done():
            # After the browser's first answer: the boot is not shared with it.
            ready.add_done_callback(self._watch_pages_once_up)
        elif self.process is not None:
            self._watch_pages()
        self.record.status = READY
        self.record.updated_at = time.time()
        self._host.store.put_session(self.record)
        self._timer = asyncio.get_running_loop().call_later(
            self.record.timeout_s, self.close_soon, TIMEOUT
        )
        ready = self.ready
        if ready is not None and ready.done() and not ready.cancelled() and not ready.exception():
            self._report_ready()  # a warm browser: answering already

    def adopt(self, record: SessionRecord, token: str) -> None:
        """Become the session `record` describes (a pooled browser being
        claimed): it keeps its id, directory and process."""
        record.session_id, record.session_dir = self.record.session_id, self.record.session_dir
        record.pid, record.flavour = self.record.pid, self.record.flavour
        self.record, self.token = record, token
        self.log = log.bind(session_id=record.session_id, browser_id=record.browser_id)
        self.trace(record)

    async def take_over(
        self,
        certificates: Sequence[CACertificate],
        proxy_auth: Sequence[str],
        recording: Recording | None,
    ) -> None:
        """Apply what the adopted session brings to the running browser, then
        activate it. The session's CAs go into the browser's NSS store before
        any client (and so any TLS connection of the session) reaches it."""
        self._certificates = list(certificates)
        if self._certificates:
            await asyncio.to_thread(
                trust.add, self._host.trust, self.home, self._certificates, self.uid
            )
        proxy = self.record.proxy_config
        relay = self._host.relay
        if proxy is not None and relay is not None and self.proxy_port:
            await relay.update(self.session_id, proxy, list(proxy_auth))
        if self.profile_state:
            await self._restore_profile()
        if recording is not None and self.process is not None:
            # No client can reach the pooled browser before Start returns, and
            # its one page is still blank: recording misses nothing.
            self.recording = recording
            recording.attach(self.process.connection)
        self.activate()

    def _on_ready(self, ready: asyncio.Future[str]) -> None:
        if ready.cancelled():
            return
        if (error := ready.exception()) is not None:
            self.log.warning("session.start_failed", error=str(error) or type(error).__name__)
            self.close_soon(START_FAILED)
            return
        if self.claimed:
            self._report_ready()
        if self._config.watchdog_interval_s > 0:
            self._watchdog = asyncio.ensure_future(self._watch())
        cgroups = self._host.cgroups
        if cgroups is not None and cgroups.limits.memory_bytes:
            self._memory_watch = asyncio.ensure_future(self._watch_memory())

    async def _watch_memory(self) -> None:
        """End the session once the kernel killed inside it for memory: with
        cgroup v1 only the largest process (a renderer) dies, and a browser
        with a dead tab would hold capacity until its timeout."""
        while self._close_task is None:
            await asyncio.sleep(MEMORY_POLL_S)
            if self._out_of_memory():
                self.close_soon(OUT_OF_MEMORY)
                return

    def _out_of_memory(self) -> bool:
        cgroups = self._host.cgroups
        if cgroups is None or not cgroups.oom_kills(self.session_id):
            return False
        self.log.warning("session.out_of_memory", limit_mb=self._config.session_memory_mb)
        return True

    def exceeded_memory(self, used: int, limit: int) -> None:
        """The memory budget watch found this session above its budget for
        longer than the grace: kill the browser now (its page is likely
        still allocating, and the pod's limit is the next bound), then end
        as a cgroup OOM kill ends it."""
        if self._close_task is not None:
            return
        self.log.warning(
            "session.out_of_memory", by="sampling", used_mb=used >> 20, limit_mb=limit >> 20
        )
        if self.process is not None:
            self.process.kill()
        self.close_soon(OUT_OF_MEMORY)

    async def _watch(self) -> None:
        """Kill a browser that stops answering (hung, or SIGSTOPped): its
        session must not hold capacity until its timeout. The probe goes to
        the browser process, which answers even while a page's renderer is
        busy."""
        assert self.process is not None
        conn = self.process.connection
        while not conn.closed:
            await asyncio.sleep(self._config.watchdog_interval_s)
            try:
                await conn.call("Browser.getVersion", timeout=self._config.watchdog_timeout_s)
            except TimeoutError:
                self.log.warning(
                    "session.browser_unresponsive", waited_s=self._config.watchdog_timeout_s
                )
                self.close_soon(BROWSER_UNRESPONSIVE)
                return
            except CDPError:
                return  # the connection closed: the exit watcher ends the session

    def _report_ready(self) -> None:
        took = time.perf_counter() - self.requested_at
        self._host.metrics.start_seconds.labels(self.record.flavour).observe(took)
        self.log.info("session.browser_ready", ready_ms=round(took * 1000, 1))

    def _on_exit(self, exited: asyncio.Future[int]) -> None:
        # A browser that dies ends its session the normal way; before its
        # first answer that is a failed start.
        if self._close_task is not None:
            return
        ready = self.ready
        booted = (
            ready is not None and ready.done() and not ready.cancelled() and not ready.exception()
        )
        self.log.warning("session.browser_exited", exit_code=exited.result())
        if self._out_of_memory():
            # cgroup v2 kills the whole tree at once (memory.oom.group).
            self.close_soon(OUT_OF_MEMORY)
            return
        self.close_soon(BROWSER_EXITED if booted else START_FAILED)

    # -- close

    def close_soon(self, reason: str) -> None:
        """Start closing without waiting (timers and callbacks)."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close(reason))

    async def close(self, reason: str) -> None:
        """End the session; concurrent and repeated calls share one close."""
        self.close_soon(reason)
        assert self._close_task is not None
        await asyncio.shield(self._close_task)

    async def wait_closed(self) -> None:
        """Until the whole close is over, directories removed; its failure
        was logged by whoever awaited the close."""
        if self._close_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._close_task)

    async def stop(self, reason: str) -> None:
        """End the session, returning once its browser is gone: the clean-up
        of its directories (and of helpers that outlived the browser) goes
        on in the close task, off the caller's path. Shutdown still waits
        for whole closes (`close`)."""
        self.close_soon(reason)
        assert self._close_task is not None
        down = asyncio.ensure_future(self._down.wait())
        try:
            await asyncio.wait({down, self._close_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            down.cancel()
        if self._close_task.done():
            self._close_task.result()  # a close that failed says so

    async def _close(self, reason: str) -> None:
        started = time.perf_counter()
        # Told once; dropping them also drops what they hold of this session
        # (a pooled browser's wrapper), so an ended session is freed at once.
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener(self)
        self._record_end(reason)
        self._stop_watching()
        try:
            await self._stop_browser(reason)
        finally:
            self._down.set()
            await self._release(reason)
            self.log.info(
                "session.ended" if self.claimed else "pool.browser_ended",
                reason=reason,
                lifetime_s=round(time.time() - self.record.created_at, 3),
                close_ms=round((time.perf_counter() - started) * 1000, 1),
            )

    def _record_end(self, reason: str) -> None:
        if not self.claimed:  # a pooled browser was never a session: no record
            return
        self._count_end(reason)
        self.record.status = TERMINATED
        self.record.termination_reason = reason
        self.record.updated_at = time.time()
        self._host.store.put_session(self.record)

    def _stop_watching(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for watch in (self._watchdog, self._memory_watch):
            if watch is not None and watch is not asyncio.current_task():
                watch.cancel()
        if self.ready is not None and not self.ready.done():
            self.ready.cancel()

    async def _stop_browser(self, reason: str) -> None:
        """The recording's last events, then the clients, then the process."""
        if self.recording is not None:
            await self._end_recording(reason)
        if self.mux is not None:
            self.mux.end(CLOSE_CODES.get(reason, 1001), f"session ended: {reason}")
        if self.process is not None:
            await self.process.terminate(self._config.kill_timeout_s)

    async def _release(self, reason: str) -> None:
        """What the session held, once its browser is gone."""
        relay = self._host.relay
        if self.proxy_port and relay is not None:
            # After the browser is gone: no request can start in between.
            traffic = await relay.close(self.session_id)
            self.log.info("session.proxy_traffic", routes=traffic)
        if self._netns >= 0:
            os.close(self._netns)  # the namespace goes with its last user
            self._netns = -1
        if reason in CRASHES:
            # The browser's own words are the only clue to why it died,
            # and they are about to be deleted with the directory.
            self.log.warning("session.browser_log", tail=self._log_tail())
        try:
            await asyncio.to_thread(
                sweep, self.directory, self.tmp_directory, self._config.kill_timeout_s
            )
        except OSError as exc:  # the next start sweeps what is left
            self.log.error("session.sweep_failed", error=repr(exc))
        if self._host.cgroups is not None:
            # Kills anything of the tree still inside, whatever its name.
            await asyncio.to_thread(self._host.cgroups.remove, self.session_id)
        uids = self._host.sandbox.uids
        if self.uid is not None and uids is not None:
            # Only now: nothing of this browser runs or is left on disk.
            uids.release(self.uid)
            self.uid = None
        # Let go of what points back here (a cancelled watch keeps its
        # frame, the multiplexer this session's methods): an ended session
        # is then freed at once, not at the next full collection (a
        # recording's ~90 KiB script with it).
        self._watchdog = self._memory_watch = None
        self.mux = None
        self._close_actor()

    def _close_actor(self) -> None:
        actor, self._actor = self._actor, None
        if actor is None:
            return
        if actor.done() and not actor.cancelled() and actor.exception() is None:
            actor.result().close()
        else:
            actor.cancel()
            actor.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _end_recording(self, reason: str) -> None:
        assert self.recording is not None
        alive = (
            self.process is not None and not self.process.exited.done() and reason not in CRASHES
        )
        try:
            await session_recording.end(self.recording, reason, self._host.metrics, alive)
        except Exception as exc:  # the browser must still be stopped
            self.log.error("session.recording_end_failed", error=repr(exc))

    def _count_end(self, reason: str) -> None:
        metrics, flavour = self._host.metrics, self.record.flavour
        metrics.sessions_ended.labels(reason, flavour).inc()
        lifetime = time.time() - self.record.created_at
        metrics.session_seconds.labels(flavour).observe(lifetime)
        if reason in CRASHES:
            metrics.browser_crashes.labels(flavour).inc()

    def _log_tail(self, limit: int = 2000) -> str:
        try:
            with open(self.directory / "browser.log", "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return f.read().decode(errors="replace")
        except OSError:
            return ""
