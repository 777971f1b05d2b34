"""Chromium flags and processes: launch one browser, watch it, kill it.

Each browser is spawned with `posix_spawn` into a new session (so its whole
tree is one process group we can kill at once), with CDP on pipe fds 3/4
(`--remote-debugging-pipe`: no TCP port that anyone else could reach) and a
minimal environment (the daemon's own variables, cloud credentials among
them, never reach a page). Exit is watched with a pidfd on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import functools
import os
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worker import cdp
from worker.browser import cgroups, policies, users

# Every flag and why. Background-traffic flags matter because a session's
# requests go through its proxy and into its recording: the browser must not
# add its own.
BASE_FLAGS: tuple[str, ...] = (
    "--remote-debugging-pipe",  # CDP on fds 3/4; no DevTools TCP port
    "--no-first-run",  # no first-run UI or import
    "--no-default-browser-check",
    "--disable-background-networking",  # no update/variations/prefetch traffic
    "--disable-component-update",  # no on-demand component downloads
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",  # no beacons to Google
    "--disable-client-side-phishing-detection",
    "--disable-features=NetworkTimeServiceQuerying,MediaRouter,OptimizationHints",
    # Full Chromium still calls two Google services that no flag or policy
    # turns off (measured on 156): ListAccounts at accounts.google.com, with
    # backoff for the browser's whole life, and an on-demand component check
    # (the on-device model manifest) at update.googleapis.com. Both go
    # through the session's proxy with its credentials. Pointing them at
    # port 9 makes them fail inside the browser: 9 is on Chromium's list of
    # unsafe ports, so no socket is opened (ERR_UNSAFE_PORT), on any route.
    "--gaia-url=http://127.0.0.1:9/",
    "--component-updater=url-source=http://127.0.0.1:9/",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--password-store=basic",  # no desktop keyring lookups
    "--use-mock-keychain",
    "--mute-audio",
)


@dataclasses.dataclass(frozen=True)
class LaunchSpec:
    binary: Path
    flavour: str
    profile_dir: Path  # --user-data-dir
    home_dir: Path  # HOME: room for a per-session NSS store ($HOME/.pki/nssdb)
    tmp_dir: Path
    log_path: Path  # the browser's stderr
    window_width: int
    window_height: int
    extra_args: Sequence[str] = ()
    first_tab: bool = False
    # The session's relay listener ("http://127.0.0.1:PORT"), "" for direct.
    proxy_server: str = ""
    # Chromium's --host-resolver-rules for the worker's static host entries.
    host_rules: str = ""
    # More environment, e.g. SSL_CERT_FILE for clients inside the session.
    extra_env: tuple[tuple[str, str], ...] = ()
    # The browser's own user (see browser_user); None: the daemon's user.
    uid: int | None = None
    # Chromium's sandbox off: as root it refuses to run otherwise, and some
    # hosts (seccomp profiles, AppArmor) forbid the user namespaces it needs.
    no_sandbox: bool = False
    # The session's cgroup.procs files (limits): the tree starts inside.
    cgroup_procs: tuple[Path, ...] = ()
    # The session's network namespace (worker.netns): the tree starts inside.
    netns: str = ""
    # Scheduling niceness of the whole tree once it answers (see nice_later).
    nice: int = 0
    # Unpacked extensions to load (full Chromium only).
    extension_dirs: tuple[Path, ...] = ()
    # The browser's own /etc/chromium (policies.build_view); None: the host's.
    policy_view: Path | None = None


def command_line(spec: LaunchSpec) -> list[str]:
    """The exact argv a browser is launched with (also used by benchmarks)."""
    argv = [str(spec.binary), *BASE_FLAGS]
    if spec.extension_dirs:
        # Only the session's own extensions: --disable-extensions would
        # refuse them, and this keeps any the system adds out.
        dirs = ",".join(map(str, spec.extension_dirs))
        argv.remove("--disable-extensions")
        argv += [f"--load-extension={dirs}", f"--disable-extensions-except={dirs}"]
    if spec.flavour == "chromium":
        # In Chromium 156 --headless is the new headless (full browser).
        argv.append("--headless")
    if spec.no_sandbox:
        argv.append("--no-sandbox")
    if _small_dev_shm():
        argv.append("--disable-dev-shm-usage")  # a small /dev/shm crashes renderers
    argv += [
        f"--user-data-dir={spec.profile_dir}",
        f"--window-size={spec.window_width},{spec.window_height}",
    ]
    if spec.proxy_server:
        # Everything goes to the session's relay, loopback included
        # (Chromium sends loopback direct by default); the relay applies the
        # session's bypass and patterns itself. No credentials here: Chromium
        # rejects them in this flag, and any local user could read them.
        argv += [f"--proxy-server={spec.proxy_server}", "--proxy-bypass-list=<-loopback>"]
    if spec.host_rules:
        argv.append(f"--host-resolver-rules={spec.host_rules}")
    argv += spec.extra_args
    if spec.first_tab:
        # Without a start URL new headless opens a third-party new-tab page.
        argv.append("about:blank")
    else:
        # No initial tab: the default browser context still exists (clients'
        # `browser.contexts[0]`), and pages open when a client asks.
        argv.append("--no-startup-window")
    return argv


def spawn_argv(spec: LaunchSpec) -> list[str]:
    """What is exec'd: the browser's command line, behind `setpriv` when the
    browser runs as a user of its own and `nice` when it runs at a lower
    priority."""
    argv = command_line(spec)
    if spec.uid is not None:
        argv = [users.setpriv_path(), *users.drop_args(spec.uid), *argv]
    if spec.nice and not nice_later(spec):
        # Set before the first exec, so every thread and child inherits it;
        # a setpriority from here once the spawn returns would race
        # Chromium's first threads.
        argv = [shutil.which("nice") or "/usr/bin/nice", "-n", str(spec.nice), *argv]
    if spec.policy_view is not None:
        argv = policies.wrap(spec.policy_view, argv)  # as root: mounts need it
    if spec.netns:
        # Still root here: entering a namespace needs CAP_SYS_ADMIN.
        argv = [shutil.which("nsenter") or "/usr/bin/nsenter", f"--net={spec.netns}", *argv]
    if spec.cgroup_procs:
        argv = cgroups.join_argv(list(spec.cgroup_procs), argv)
    return argv


def environment(spec: LaunchSpec) -> dict[str, str]:
    return {
        "HOME": str(spec.home_dir),
        "TMPDIR": str(spec.tmp_dir),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "TZ": os.environ.get("TZ", "UTC"),
        **dict(spec.extra_env),
    }


def _small_dev_shm() -> bool:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return True
    return st.f_frsize * st.f_blocks < 512 * 1024 * 1024


class BrowserProcess:
    """A launched browser: its process group, CDP connection and exit."""

    def __init__(
        self,
        pid: int,
        connection: cdp.Connection,
        transport: cdp.PipeTransport,
        nice_later: int = 0,
    ):
        self.pid = pid
        self.connection = connection
        self._transport = transport
        self._nice_later = nice_later
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._watch_exit()

    def _watch_exit(self) -> None:
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(self.pid)

        def on_exit() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            _, status = os.waitpid(self.pid, 0)
            if not self.exited.done():
                self.exited.set_result(os.waitstatus_to_exitcode(status))

        loop.add_reader(pidfd, on_exit)

    def kill(self) -> None:
        """SIGKILL the whole process group. The profile is thrown away, so a
        graceful shutdown would buy nothing but latency."""
        if self.exited.done():
            # The leader is reaped; its pgid may hold leftovers, or be reused
            # only once every member has gone (pgids are not recycled while
            # any member lives), so this still hits only our own processes.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    def lower_priority(self) -> None:
        """Give the booted tree its nice (when it booted without one)."""
        if self._nice_later:
            # Best effort: without the write the tree keeps the daemon's
            # priority, which costs throughput on a busy host, not safety.
            with contextlib.suppress(OSError), open(f"/proc/{self.pid}/autogroup", "w") as f:
                f.write(str(self._nice_later))
            self._nice_later = 0

    async def terminate(self, timeout: float) -> None:
        self.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.exited), timeout)
        self.kill()  # children that outlived the leader
        self._transport.close()
        self.connection.close()


def spawn(spec: LaunchSpec) -> tuple[int, int, int]:
    """Spawn a browser; returns (pid, fd reading from it, fd writing to it)."""
    argv = spawn_argv(spec)
    if argv[0] != str(spec.binary) and not os.access(spec.binary, os.X_OK):
        # A wrapper (setpriv, nsenter, sh) would exec it only after the spawn
        # had succeeded; say it now, as a direct spawn does.
        raise FileNotFoundError(errno.ENOENT, "browser binary not executable", str(spec.binary))
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    # Move the child's ends above 10 so the dup2 to 3 and 4 below can never
    # overwrite one of them (os.pipe may itself have returned 3 or 4).
    child_in = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
    child_out = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(to_browser_r)
    os.close(from_browser_w)
    try:
        pid = os.posix_spawn(
            argv[0],
            argv,
            environment(spec),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, str(spec.log_path), os.O_WRONLY | os.O_CREAT, 0o600),
                (os.POSIX_SPAWN_DUP2, 1, 2),
                (os.POSIX_SPAWN_DUP2, child_in, 3),
                (os.POSIX_SPAWN_DUP2, child_out, 4),
            ],
            setsid=True,  # own session and process group: killpg reaches the tree
        )
    except BaseException:
        os.close(to_browser_w)
        os.close(from_browser_r)
        raise
    finally:
        os.close(child_in)
        os.close(child_out)
    return pid, from_browser_r, to_browser_w


def nice_later(spec: LaunchSpec) -> bool:
    """Whether the browser boots at the daemon's priority and is lowered at
    its first answer (BrowserProcess.lower_priority).

    Under autogroup scheduling (most distributions' kernels, for processes
    in the root CPU cgroup) each session (setsid) is a scheduling group and
    between groups only the group's nice counts: one write lowers the whole
    tree at any moment, so the boot, which a start waits for, need not be
    slowed. Elsewhere (a container's cgroup, a session's own cgroup) nice
    is per thread and inherited, so it is set before the first exec.
    """
    return not spec.cgroup_procs and autogroup_scheduling()


@functools.cache
def autogroup_scheduling() -> bool:
    """Whether the kernel groups this daemon's children by session (setsid)."""
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            if f.read().strip() != "1":
                return False
        with open("/proc/self/cgroup") as f:
            cgroups = f.read()
    except OSError:
        return False
    return in_root_cpu_cgroup(cgroups, os.path.exists("/sys/fs/cgroup/cpu.weight"))


def in_root_cpu_cgroup(proc_cgroup: str, cpu_weight_here: bool) -> bool:
    """From /proc/self/cgroup: autogroups apply only in the root CPU cgroup.

    `cpu_weight_here`: /sys/fs/cgroup/cpu.weight exists. A cgroup namespace
    (containers on cgroup v2) shows its own cgroup as "/", and only the
    real root has no cpu.weight.
    """
    lines = [line.split(":", 2) for line in proc_cgroup.splitlines() if line.count(":") >= 2]
    cpu = [path for _, controllers, path in lines if "cpu" in controllers.split(",")]
    if cpu:  # cgroup v1
        return cpu == ["/"]
    unified = [path for hierarchy, _, path in lines if hierarchy == "0"]
    return unified == ["/"] and not cpu_weight_here


async def launch(spec: LaunchSpec) -> BrowserProcess:
    """Spawn a browser; returns once the process exists (not yet answering)."""
    # posix_spawn (vfork + exec) takes 0.2-0.4 ms here; in about half the
    # starts on a 2-vCPU VM the kernel then queues the daemon behind the new
    # browser for 2-4 ms (perf sched). Spawning from a thread measured the
    # same cold-start ratios, and the shared executor may be busy removing
    # stopped sessions' profiles, so the spawn stays on the event loop.
    pid, from_browser_r, to_browser_w = spawn(spec)
    connection = cdp.Connection(lambda data: transport.write(data))
    transport = await cdp.PipeTransport.open(
        from_browser_r, to_browser_w, connection.dispatch, connection.close
    )
    return BrowserProcess(pid, connection, transport, spec.nice if nice_later(spec) else 0)


async def wait_ready(process: BrowserProcess, timeout: float) -> str:
    """Wait for the first CDP answer; returns a browser-target session id.
    The browser then gets its lower priority, if it booted without it.

    The attach is sent in the same write burst as the readiness probe: right
    after its first answer the browser is busy opening its first tab, and a
    command sent then waits 10-30 ms; one sent now is answered at once.
    """
    conn = process.connection
    call = asyncio.ensure_future(
        asyncio.gather(conn.call("Browser.getVersion"), conn.call("Target.attachToBrowserTarget"))
    )
    # Whoever stops waiting (a timeout, an exit, a cancelled start), the
    # probe's own failure is expected then, and not worth a log line.
    call.add_done_callback(_retrieve)
    waiting: set[asyncio.Future[Any]] = {call, process.exited}
    try:
        done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not call.done():
            call.cancel()
    if call in done:
        version, attached = call.result()
        process.lower_priority()
        conn.version = version
        return str(attached["sessionId"])
    if process.exited in done:
        raise cdp.ConnectionClosed(f"browser exited with code {process.exited.result()}")
    raise TimeoutError(f"browser did not answer within {timeout:g}s")


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
