"""Browsers run as users of their own with Chromium's sandbox on, and what
they can reach on the host is only their own tree.

Each test tries the thing an escaped page or a compromised browser process
would try, as that browser's uid, and expects the kernel to refuse it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from helpers.workers import RunningWorker, browser_root, connected_page, make_config, running_worker
from worker.browser import users
from worker.errors import Unavailable
from worker.pb import sandbox_pb2 as pb

needs_sandbox = pytest.mark.skipif(
    os.geteuid() != 0 or bool(users.probe(200000)),
    reason="needs root and unprivileged user namespaces",
)


def status(pid: int) -> dict[str, str]:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def tree(root_pid: int) -> list[int]:
    """The browser and every process in its process group."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == root_pid:
                    pids.append(int(entry))
            except ProcessLookupError:
                continue
    return pids


def living_owner(pid: int) -> int | None:
    """Who runs `pid`; None once it has exited (a zombie only waits for
    init to reap it, and runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rpartition(")")[2].split()[0] == "Z":
                return None
        return os.stat(f"/proc/{pid}").st_uid
    except FileNotFoundError:
        return None


def cmdline(pid: int) -> list[str]:
    """Arguments; Chromium's children rewrite theirs as one spaced string."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode().split()


def as_user(uid: int, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command as a browser's uid (what a compromised browser could do)."""
    return subprocess.run(
        [users.setpriv_path(), *users.drop_args(uid), *argv],
        capture_output=True,
        text=True,
        timeout=10,
    )


@pytest_asyncio.fixture
async def sandboxed(tmp_path: Path) -> AsyncIterator[RunningWorker]:
    # A state directory every user could reach (made 0755 in /tmp): what
    # protects its files must be the worker, not pytest's private tmp root.
    reachable = Path(tempfile.mkdtemp(prefix="sandbox-state-", dir="/tmp"))
    try:
        os.chmod(reachable, 0o755)
        # As the manifests mount the Secret: a readable directory, files 0400.
        secrets = reachable / "secrets"
        secrets.mkdir(mode=0o755)
        (secrets / "proxy-password").write_text("hunter2")
        (secrets / "proxy-password").chmod(0o400)
        config = make_config(
            tmp_path, state_dir=reachable / "state", secrets_dir=secrets, browser_sandbox="on"
        )
        (reachable / "state").mkdir(mode=0o755)
        async with running_worker(config) as worker:
            yield worker
    finally:
        shutil.rmtree(reachable)


def browser_uid(worker: RunningWorker, session_id: str) -> tuple[int, int]:
    assert worker.server.manager is not None
    session = worker.server.manager.live[session_id]
    assert session.process is not None and session.uid is not None
    return session.process.pid, session.uid


@needs_sandbox
async def test_browsers_run_as_their_own_users_with_chromiums_sandbox_on(
    sandboxed: RunningWorker,
) -> None:
    a = await sandboxed.start()
    b = await sandboxed.start(session_timeout_seconds=60)
    async with connected_page(a) as page:
        await page.goto("data:text/html,<p>sandboxed")  # a renderer exists now
        pid_a, uid_a = browser_uid(sandboxed, a.session_id)
        _, uid_b = browser_uid(sandboxed, b.session_id)
        assert uid_a != uid_b and min(uid_a, uid_b) >= 200000
        assert "--no-sandbox" not in cmdline(pid_a)
        own_userns = os.readlink("/proc/self/ns/user")
        renderers = [p for p in tree(pid_a) if "--type=renderer" in cmdline(p)]
        assert renderers
        for pid in tree(pid_a):
            assert status(pid)["Uid"].split()[0] == str(uid_a)  # real uid, every process
        for pid in renderers:
            assert status(pid)["Seccomp"] == "2"  # seccomp-bpf filter on
            assert os.readlink(f"/proc/{pid}/ns/user") != own_userns
            assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        assert await page.evaluate("1 + 1") == 2


@needs_sandbox
async def test_a_browsers_user_reaches_nothing_outside_its_own_tree(
    sandboxed: RunningWorker,
) -> None:
    a = await sandboxed.start()
    b = await sandboxed.start()
    config = sandboxed.config
    _, uid_a = browser_uid(sandboxed, a.session_id)
    pid_b, _ = browser_uid(sandboxed, b.session_id)
    own = browser_root(config.state_dir, a.session_id)
    theirs = browser_root(config.state_dir, b.session_id)
    assert config.secrets_dir is not None
    # Its own tree: readable and writable.
    wrote = as_user(uid_a, "touch", str(own / "downloads" / "mine"))
    assert wrote.returncode == 0, wrote.stderr
    targets = {
        "state database": config.db_path,
        "another session's profile": theirs / "profile",
        "another session's trust store": theirs / "home",
        "another session's downloads": theirs / "downloads",
        "its own browser log (daemon-owned)": config.sessions_dir / a.session_id / "browser.log",
        "the recording spool": config.spool_dir,
        "a mounted secret": config.secrets_dir / "proxy-password",
        "the runtime root's listing": own.parent,
    }
    for what, path in targets.items():
        assert path.exists(), what
        verb = "ls" if path.is_dir() else "cat"
        tried = as_user(uid_a, verb, str(path))
        assert tried.returncode != 0, f"{what} was readable"
        assert "Permission denied" in tried.stderr, (what, tried.stderr)
    # Nor signal another session's browser, nor the daemon.
    for pid in (pid_b, os.getpid()):
        tried = as_user(uid_a, "kill", "-0", str(pid))
        assert tried.returncode != 0 and "not permitted" in tried.stderr
    assert (await sandboxed.get(b.session_id)).status == pb.READY  # untouched


@needs_sandbox
async def test_uids_come_back_when_sessions_end(sandboxed: RunningWorker) -> None:
    manager = sandboxed.server.manager
    assert manager is not None
    uids = manager.sandbox.uids
    assert uids is not None
    first = await sandboxed.start()
    _, uid = browser_uid(sandboxed, first.session_id)
    await sandboxed.stop(first.session_id)
    assert manager.live == {}
    # The sweep (after Stop answered) gives the uid back; the next session
    # may take it again, and finds no process of the old one running as it.
    for _ in range(200):
        if not uids.in_use(uid):
            break
        await asyncio.sleep(0.05)
    assert not uids.in_use(uid)
    assert not [p for p in os.listdir("/proc") if p.isdigit() and living_owner(int(p)) == uid]
    second = await sandboxed.start()
    assert browser_uid(sandboxed, second.session_id)[1] == uid


@needs_sandbox
async def test_sandbox_off_runs_the_browser_as_the_daemon(tmp_path: Path) -> None:
    config = make_config(tmp_path, browser_sandbox="off")
    async with running_worker(config) as worker:
        started = await worker.start()
        assert worker.server.manager is not None
        session = worker.server.manager.live[started.session_id]
        assert session.uid is None and session.process is not None
        # Start returns at the spawn; wait for the boot, or the command line
        # may be read while the process is still being exec'd (empty).
        assert session.ready is not None
        await asyncio.wait_for(asyncio.shield(session.ready), 30)
        assert status(session.process.pid)["Uid"].split()[0] == "0"
        assert "--no-sandbox" in cmdline(session.process.pid)


def test_uid_pool_hands_out_distinct_uids_and_refuses_strangers(tmp_path: Path) -> None:
    pool = users.UidPool(500000, 2, locks=tmp_path)
    first, second = pool.acquire(), pool.acquire()
    assert (first, second) == (500000, 500001)
    with pytest.raises(Unavailable, match="in use"):
        pool.acquire()
    assert pool.in_use(first)
    pool.release(first)
    assert not pool.in_use(first)
    with pytest.raises(ValueError):
        pool.release(first)  # twice
    with pytest.raises(ValueError):
        pool.release(12)
    assert pool.acquire() == first


def test_two_workers_on_one_host_never_hold_the_same_uid(tmp_path: Path) -> None:
    one = users.UidPool(500000, 4, locks=tmp_path)
    other = users.UidPool(500000, 4, locks=tmp_path)
    taken = [one.acquire(), other.acquire(), one.acquire(), other.acquire()]
    assert sorted(taken) == [500000, 500001, 500002, 500003]
    with pytest.raises(Unavailable, match="in use"):
        other.acquire()
    one.release(taken[0])
    assert other.acquire() == taken[0]  # free again once its holder let go
