"""A session's CAs, before its first TLS connection: in its own NSS store
(which Chromium reads from `$HOME/.pki/nssdb`) and in a PEM bundle of the
system roots plus its CAs (for any other client the session runs, through
`SSL_CERT_FILE` and `NODE_EXTRA_CA_CERTS`). Never on the host's stores."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from certstore import bundle
from certstore.nssdb import NSSStores
from certstore.validate import CACertificate
from worker.browser import launcher, users


def install(
    trust: NSSStores,
    spec: launcher.LaunchSpec,
    certificates: Sequence[CACertificate],
    uid: int | None,
) -> launcher.LaunchSpec:
    """Before the browser starts: its store and bundle, and the environment
    that names the bundle. Without CAs the bundle holds the system roots, so
    that a pooled browser's environment names a file its session's CAs can be
    added to later."""
    if certificates:
        trust.install(spec.home_dir, list(certificates))
    pem = str(bundle.write(spec.home_dir / "ca-bundle.pem", list(certificates)))
    if uid is not None:
        users.hand_over(spec.home_dir, uid)
    return dataclasses.replace(
        spec, extra_env=(("SSL_CERT_FILE", pem), ("NODE_EXTRA_CA_CERTS", pem))
    )


def add(
    trust: NSSStores, home: Path, certificates: Sequence[CACertificate], uid: int | None
) -> None:
    """To a running browser that has made no TLS connection yet (a pooled
    browser being claimed): Chromium honours certificates added before its
    first contact with a host."""
    trust.add(home, list(certificates))
    bundle.write(home / "ca-bundle.pem", list(certificates))
    if uid is not None:
        users.hand_over(home, uid)
