"""Browser profiles at rest: sealed with AES-256-GCM, each bound to its
profile id (a sealed state copied onto another profile does not open).

The key is 32 bytes in a file: `profile_key_file` when set (for a fleet,
one key shared by every worker, from a Secret), else one generated on first
use under the state directory, 0600. The file may hold the raw bytes or
their base64.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from worker.config import ConfigError

KEY_BYTES = 32
NONCE_BYTES = 12
GENERATED = "profile-key"


class VaultError(Exception):
    """A sealed state that does not open with this key."""


class Vault:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def load(cls, key_file: Path | None, state_dir: Path) -> Vault:
        if key_file is None:
            return cls(_generated(state_dir / GENERATED))
        try:
            raw = key_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"profile_key_file: cannot be read ({exc.strerror})") from None
        return cls(_key(raw))

    def seal(self, data: bytes, profile_id: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data, profile_id.encode())

    def open(self, sealed: bytes, profile_id: str) -> bytes:
        try:
            return self._aead.decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], profile_id.encode()
            )
        except (InvalidTag, ValueError):
            raise VaultError("the profile's state does not open with this worker's key") from None


def _key(raw: bytes) -> bytes:
    if len(raw) == KEY_BYTES:
        return raw
    try:
        decoded = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != KEY_BYTES:
        raise ConfigError("profile_key_file: must hold a 256-bit key (32 bytes, or their base64)")
    return decoded


def _generated(path: Path) -> bytes:
    try:
        return _key(path.read_bytes())
    except FileNotFoundError:
        key = secrets.token_bytes(KEY_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key
