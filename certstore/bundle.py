"""A per-session PEM bundle: the system's roots plus the session's CAs.

Chromium reads NSS; other TLS clients inside a session's environment (a
script, Node, curl) read a PEM file named by `SSL_CERT_FILE` or
`NODE_EXTRA_CA_CERTS`. The system bundle is read once per process.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from certstore.validate import CACertificate

SYSTEM_BUNDLES = (
    Path("/etc/ssl/certs/ca-certificates.crt"),  # Debian, Ubuntu, Alpine
    Path("/etc/pki/tls/certs/ca-bundle.crt"),  # Fedora, RHEL
)


@functools.cache
def system_roots() -> bytes:
    for path in SYSTEM_BUNDLES:
        if path.is_file():
            return path.read_bytes()
    return b""


def write(path: Path, certificates: Sequence[CACertificate]) -> Path:
    roots = system_roots()
    parts = [roots] if roots.endswith(b"\n") or not roots else [roots, b"\n"]
    parts += [c.pem for c in certificates]
    path.write_bytes(b"".join(parts))
    path.chmod(0o600)
    return path
