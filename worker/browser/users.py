"""Which user a browser runs as, so Chromium's own sandbox can be on.

Chromium refuses to sandbox itself as root, and `--no-sandbox` leaves every
renderer (the processes that run untrusted pages) with the browser's full
rights. When the daemon runs as root and the kernel lets an unprivileged
user create a user namespace, each browser runs as a uid of its own instead:
Chromium's namespace sandbox is then on (renderers get seccomp and their own
user, pid and network namespaces), and the browser process itself can read
nothing the daemon or another session owns, because every such file is 0700
or 0600 and owned by someone else.

The uid is dropped by `setpriv` between `posix_spawn` and Chromium: the
spawn stays a vfork with fd actions (CDP on fds 3/4), and the one extra exec
costs about a millisecond.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from worker.errors import Unavailable


class SandboxUnavailable(RuntimeError):
    """The sandbox was asked for (`on`) and this host cannot give it."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """How this worker's browsers run."""

    chromium_sandbox: bool  # False: --no-sandbox
    uids: UidPool | None  # a uid per browser (the daemon is root)
    reason: str = ""  # why the sandbox is off


def plan(mode: str, uid_base: int, count: int) -> Plan:
    """Decide once, at start: `on` fails here rather than at each launch."""
    if mode == "off":
        return Plan(False, None, "browser_sandbox is off")
    root = os.geteuid() == 0
    why = probe(uid_base if root else None)
    if why:
        if mode == "on":
            raise SandboxUnavailable(why)
        return Plan(False, None, why)
    return Plan(True, UidPool(uid_base, count) if root else None)


def probe(uid: int | None) -> str:
    """Why a browser (as `uid`, or as the daemon's own user when None)
    cannot have Chromium's sandbox, or ""."""
    setpriv = shutil.which("setpriv")
    unshare = shutil.which("unshare")
    chroot = shutil.which("chroot", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if unshare is None or chroot is None or (uid is not None and setpriv is None):
        return "setpriv, unshare (util-linux) and chroot (coreutils) are not installed"
    # The exact things Chromium's zygote does first, as an unprivileged
    # user: new user, pid and network namespaces, then a chroot inside them.
    # A seccomp profile may allow the first and refuse the second (podman's
    # default does: chroot needs CAP_SYS_CHROOT in the container), and then
    # every browser would die at its start.
    prefix = [] if uid is None or setpriv is None else [setpriv, *drop_args(uid)]
    argv = [unshare, "--user", "--map-root-user", "--pid", "--net", "--fork", chroot, "/", "true"]
    try:
        done = subprocess.run(
            [*prefix, *argv], capture_output=True, timeout=10, env={"PATH": "/usr/bin:/bin"}
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"probe did not run: {exc}"
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip()[:200]
        return (
            "an unprivileged user cannot create the namespaces and chroot"
            f" Chromium's sandbox starts with here ({detail})"
        )
    return ""


def drop_args(uid: int) -> list[str]:
    """setpriv's arguments that turn root into `uid` with no groups or caps."""
    return [
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
    ]


def setpriv_path() -> str:
    return shutil.which("setpriv") or "/usr/bin/setpriv"


class UidPool:
    """Hands out one uid per live browser, so no two browsers share files or
    can signal each other. Capacity and the warm pool bound how many are
    out at once.

    A uid is also held host-wide with an flock on `<locks>/<uid>`, so two
    workers on one host (with the same range) never hand out the same uid at
    once; the kernel drops a killed worker's locks with its process.
    """

    def __init__(self, base: int, count: int, locks: Path | None = None) -> None:
        self._base, self._count = base, count
        self._locks = locks or Path(tempfile.gettempdir()) / "sandbox-worker-uids"
        self._held: dict[int, int] = {}  # uid -> its lock's fd

    def acquire(self) -> int:
        self._locks.mkdir(mode=0o700, exist_ok=True)
        for uid in range(self._base, self._base + self._count):
            if uid in self._held:
                continue
            fd = os.open(self._locks / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # another worker's browser has it
                continue
            self._held[uid] = fd
            return uid
        # A client-visible refusal, not an internal error: the host is full
        # of browsers (other workers with the same range included).
        raise Unavailable(
            "browser_uid_base", f"all {self._count} browser uids from {self._base} are in use"
        )

    def in_use(self, uid: int) -> bool:
        return uid in self._held

    def release(self, uid: int) -> None:
        fd = self._held.pop(uid, None)
        if fd is None:
            raise ValueError(f"uid {uid} was not handed out by this pool")
        os.close(fd)  # and with it the lock


def hand_over(root: Path, uid: int) -> None:
    """Make everything under `root` (and `root`) the browser user's."""
    os.chown(root, uid, uid)
    for parent, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.chown(os.path.join(parent, name), uid, uid, follow_symlinks=False)
