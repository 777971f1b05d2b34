"""Identifiers and secrets: session ids, browser ids, automation tokens.

Session ids are ULIDs (26 Crockford base32 characters, time-ordered), which
fit the hosted API's `[0-9a-zA-Z]{1,40}` and sort by creation time.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ALNUM = string.ascii_letters + string.digits


def new_session_id(now_ms: int | None = None) -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_browser_id(name: str) -> str:
    """`NAME-` plus 10 alphanumerics, the hosted API's browser id shape."""
    return name + "-" + "".join(secrets.choice(_ALNUM) for _ in range(10))


def new_token() -> str:
    """An automation token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the fleet's store keeps of a session's token: enough to check
    one presented to a gateway, not enough to make one."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_worker_id() -> str:
    return "w" + "".join(secrets.choice(_ALNUM) for _ in range(11))
