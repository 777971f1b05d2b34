"""A session's own NSS trust store, `$HOME/.pki/nssdb`, holding its CAs.

Chromium on Linux trusts, besides its built-in roots, the NSS database in
`$HOME/.pki/nssdb` (sql: format). Each session has its own HOME, so its CAs
never touch the host's stores or another session's.

Building a store costs a `certutil` process. Its SQLite writes fsync after
every certificate: 10 CAs in one batch took ~45 ms on disk here and ~14 ms
on tmpfs, so stores are built in /dev/shm when it is writable. Copying a
built store costs under a millisecond, so each distinct set of CAs is built
once, kept in a cache keyed by their fingerprints, and copied into each
session's HOME. Entries hold public certificates only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from certstore.validate import CACertificate

TRUST = "C,,"  # a trusted CA for TLS servers; not for e-mail or code signing
SHM = Path("/dev/shm")


class NSSError(RuntimeError):
    """certutil failed; the message is certutil's own (no secrets in it)."""


def nickname(index: int, cert: CACertificate) -> str:
    return f"sandbox-ca-{index:02d}-{cert.fingerprint[:16]}"


class NSSStores:
    def __init__(
        self,
        cache_dir: Path,
        certutil: str = "certutil",
        max_entries: int = 64,
        timeout: float = 20.0,
        scratch_dir: Path | None = None,
    ) -> None:
        self._cache = cache_dir
        if scratch_dir is None and os.access(SHM, os.W_OK):
            scratch_dir = SHM
        self._scratch = scratch_dir
        self._certutil = certutil
        self._max_entries = max_entries
        self._timeout = timeout
        self._lock = threading.Lock()

    def install(self, home: Path, certificates: Sequence[CACertificate]) -> Path:
        """Give `home` an NSS store trusting exactly `certificates`."""
        built = self._built(certificates)
        target = home / ".pki" / "nssdb"
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copytree(built, target)
        target.chmod(0o700)
        return target

    def add(self, home: Path, certificates: Sequence[CACertificate]) -> Path:
        """Add CAs to the store a running browser already opened (a pooled
        browser): Chromium uses certificates added after launch for hosts
        it has not contacted yet. Without a store, install one."""
        target = home / ".pki" / "nssdb"
        if not (target / "cert9.db").exists():
            return self.install(home, certificates)
        self._batch(target, certificates)
        return target

    def _built(self, certificates: Sequence[CACertificate]) -> Path:
        key = hashlib.sha256("".join(c.fingerprint for c in certificates).encode()).hexdigest()
        entry = self._cache / key[:32]
        with self._lock:  # one build per set, even when sessions start together
            if not entry.is_dir():
                self._cache.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._evict()
                self._build(entry, certificates)
        return entry

    def _build(self, entry: Path, certificates: Sequence[CACertificate]) -> None:
        scratch = Path(tempfile.mkdtemp(prefix=".sandbox-nss-", dir=self._scratch or self._cache))
        try:
            self._run("-N", "--empty-password", "-d", "sql:.", cwd=scratch)
            self._batch(scratch, certificates)
            # Copy, then rename within the cache: an entry is whole or absent.
            staged = Path(tempfile.mkdtemp(prefix=".stage-", dir=self._cache))
            shutil.copytree(scratch, staged, dirs_exist_ok=True)
            os.replace(staged, entry)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _batch(self, db: Path, certificates: Sequence[CACertificate]) -> None:
        """Add every CA in one certutil process (~4 ms a CA instead of ~9)."""
        work = Path(tempfile.mkdtemp(prefix=".sandbox-ca-", dir=self._scratch or db))
        try:
            lines = []
            for index, cert in enumerate(certificates):
                (work / f"ca-{index}.pem").write_bytes(cert.pem)
                pem = work / f"ca-{index}.pem"
                lines.append(f'-A -t "{TRUST}" -n {nickname(index, cert)} -i {pem}\n')
            (work / "batch").write_text("".join(lines))
            self._run("-B", "-i", str(work / "batch"), "-d", f"sql:{db}", cwd=work)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _run(self, *args: str, cwd: Path) -> None:
        try:
            done = subprocess.run(
                [self._certutil, *args],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=self._timeout,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NSSError(f"certutil did not run: {exc}") from None
        if done.returncode != 0:
            raise NSSError(f"certutil {args[0]} failed: {done.stderr.strip()[:300]}")

    def _evict(self) -> None:
        entries = sorted(
            (p for p in self._cache.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
        )
        for old in entries[: max(0, len(entries) - self._max_entries + 1)]:
            shutil.rmtree(old, ignore_errors=True)
