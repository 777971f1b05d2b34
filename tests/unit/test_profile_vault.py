"""Browser profiles at rest: sealing, binding to the profile, and the key
file's forms and errors."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from worker.config import ConfigError
from worker.sessions.profile_vault import GENERATED, Vault, VaultError


def test_a_sealed_state_opens_only_for_its_own_profile(tmp_path: Path) -> None:
    vault = Vault.load(None, tmp_path)
    sealed = vault.seal(b'{"cookies": [{"value": "s3cret"}]}', "shop-AAAAAAAAAA")
    assert b"s3cret" not in sealed
    assert vault.open(sealed, "shop-AAAAAAAAAA") == b'{"cookies": [{"value": "s3cret"}]}'
    with pytest.raises(VaultError):
        vault.open(sealed, "other-BBBBBBBBBB")  # copied onto another profile
    with pytest.raises(VaultError):
        vault.open(sealed[:-1] + bytes([sealed[-1] ^ 1]), "shop-AAAAAAAAAA")  # tampered


def test_the_generated_key_is_private_and_stays(tmp_path: Path) -> None:
    sealed = Vault.load(None, tmp_path).seal(b"state", "p-AAAAAAAAAA")
    assert (tmp_path / GENERATED).stat().st_mode & 0o777 == 0o600
    assert Vault.load(None, tmp_path).open(sealed, "p-AAAAAAAAAA") == b"state"


def test_a_shared_key_file_takes_raw_or_base64_bytes(tmp_path: Path) -> None:
    key = os.urandom(32)
    raw, text = tmp_path / "raw", tmp_path / "b64"
    raw.write_bytes(key)
    text.write_text(base64.b64encode(key).decode() + "\n")
    sealed = Vault.load(raw, tmp_path).seal(b"state", "p-AAAAAAAAAA")
    assert Vault.load(text, tmp_path).open(sealed, "p-AAAAAAAAAA") == b"state"
    short = tmp_path / "short"
    short.write_bytes(b"too short")
    with pytest.raises(ConfigError, match="profile_key_file: must hold a 256-bit key"):
        Vault.load(short, tmp_path)
    with pytest.raises(ConfigError, match="profile_key_file: cannot be read"):
        Vault.load(tmp_path / "missing", tmp_path)
