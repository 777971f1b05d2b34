"""Chromium enterprise policies per browser. Chromium on Linux reads them
only from /etc/chromium/policies/{managed,recommended} (fixed at build), so
a browser with policies of its own runs in a private mount namespace where a
copy of /etc/chromium, with its files added, is bound over the real one. The
host's directory is never written, and other browsers see it unchanged.

That takes CAP_SYS_ADMIN for the mount (the daemon as root, before the
browser drops to its own user); `probe()` says whether this host allows it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from worker.errors import InvalidArgument

CHROMIUM_ETC = Path("/etc/chromium")
# Bind the session's copy over /etc/chromium, then become the browser. The
# paths are arguments ($0, then the argv), never spliced into the script.
_BIND_THEN_EXEC = 'mount --bind "$0" /etc/chromium && exec "$@"'


def check(field: str, data: bytes) -> dict[str, object]:
    """A policy file's policies, or InvalidArgument saying why not."""
    try:
        policies = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidArgument(field, "is not a JSON file") from None
    if not isinstance(policies, dict):
        raise InvalidArgument(field, "must hold a JSON object of Chromium policies")
    return policies


def build_view(directory: Path, managed: Sequence[bytes], recommended: Sequence[bytes]) -> Path:
    """The browser's /etc/chromium: the host's files (its own policies
    stay in force), plus these, in files of their own."""
    shutil.copytree(CHROMIUM_ETC, directory, symlinks=True)
    # Readable by the browser's own user whatever the daemon's umask.
    for folder in (directory, directory / "policies"):
        folder.mkdir(exist_ok=True)
        folder.chmod(0o755)
    for kind, files in (("managed", managed), ("recommended", recommended)):
        folder = directory / "policies" / kind
        folder.mkdir(exist_ok=True)
        folder.chmod(0o755)
        for n, data in enumerate(files):
            path = folder / f"sandbox-worker-{n:02d}.json"
            path.write_bytes(data)
            path.chmod(0o644)
    return directory


def wrap(view: Path, argv: list[str]) -> list[str]:
    """`argv` in a mount namespace of its own that sees `view` as
    /etc/chromium. Runs as root: the mount needs CAP_SYS_ADMIN."""
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    return [
        unshare,
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        _BIND_THEN_EXEC,
        str(view),
        *argv,
    ]


def probe() -> str:
    """Why this host cannot give a browser its own policy directory, or ""."""
    if not CHROMIUM_ETC.is_dir():
        return f"{CHROMIUM_ETC} (where Chromium reads policies) does not exist on this host"
    try:
        done = subprocess.run(
            wrap(CHROMIUM_ETC, ["true"]), capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"a private mount namespace could not be made ({exc})"
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return f"a private mount namespace with a bind mount is refused here ({why[0]})"
    return ""
