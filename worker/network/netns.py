"""A network namespace per session: egress enforced below the browser.

Chromium's proxy setting is a browser-level rule: a compromised browser
process could open its own connections. With `SANDBOX_NETWORK_ISOLATION=
namespace` each browser runs in a network namespace whose only interface is
its own loopback, and the only thing listening there is the session's relay
listener (the relay opens that socket inside the namespace, and connects
onwards from the worker's namespace). Every packet the browser sends
therefore goes through the relay, which applies the session's proxies and
bypass rules; anything else has no route.

The namespace is made by a short-lived thread: unshare(CLONE_NEWNET) moves
only that thread, which raises the namespace's loopback, keeps a file
descriptor on it, and moves back. The descriptor keeps the namespace alive;
others reach it as /proc/<daemon pid>/fd/<fd>.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
T = TypeVar("T")


def _check(result: int) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def setns(fd: int) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET))


def _own_thread(work: Callable[[], T]) -> T:
    """Run `work` on a thread of its own, which may change namespace: the
    thread goes back to the daemon's before it ends, whatever happened."""
    box: dict[str, T | BaseException] = {}

    def run() -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                box["value"] = work()
            finally:
                setns(home)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc
        finally:
            os.close(home)

    thread = threading.Thread(target=run, name="netns")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def inside(netns_fd: int, work: Callable[[], T]) -> T:
    """Run `work` inside the namespace: sockets it makes stay there for good."""

    def entered() -> T:
        setns(netns_fd)
        return work()

    return _own_thread(entered)


def create() -> int:
    """A new network namespace with loopback up; returns a descriptor on it."""

    def made() -> int:
        _check(_libc.unshare(CLONE_NEWNET))
        _loopback_up()
        return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    return _own_thread(made)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def path(fd: int) -> str:
    """How other processes (the relay, nsenter) name the namespace."""
    return f"/proc/{os.getpid()}/fd/{fd}"


def probe() -> str:
    """Why namespaces cannot be made here, or ""."""
    try:
        fd = create()
    except OSError as exc:
        return f"cannot create a network namespace ({exc.strerror})"
    os.close(fd)
    return ""
