"""List pages' next tokens: opaque to clients, and checked.

A token carries the listing it belongs to and the last item of the page it
follows, with an HMAC-SHA256 tag under a key of this worker's (made once,
0600, in the state directory). A client can neither forge a token, nor
edit one, nor use one listing's token for another: anything else is a
validation error naming `next_token`, never a page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from worker.errors import InvalidArgument

TAG_BYTES = 16
KEY_FILE = "page-token.key"


class PageTokens:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def for_state_dir(cls, state_dir: Path) -> PageTokens:
        """The worker's key, made on first use; tokens stay valid across restarts."""
        path = state_dir / KEY_FILE
        try:
            return cls(path.read_bytes())
        except FileNotFoundError:
            key = secrets.token_bytes(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key)
            return cls(key)

    def issue(self, listing: str, after: str) -> str:
        """The token for the page after `after` ("" when there is none)."""
        if not after:
            return ""
        body = json.dumps([listing, after], separators=(",", ":")).encode()
        return _b64(body) + "." + _b64(self._tag(body))

    def read(self, listing: str, token: str) -> str:
        """Where the next page starts; "" for the first page."""
        if not token:
            return ""
        body_text, _, tag_text = token.partition(".")
        try:
            body, tag = _unb64(body_text), _unb64(tag_text)
            valid = hmac.compare_digest(tag, self._tag(body))
            kind, after = json.loads(body) if valid else ("", "")
        except (ValueError, binascii.Error):
            valid, kind, after = False, "", ""
        if not valid or kind != listing or not isinstance(after, str) or not after:
            raise InvalidArgument("next_token", "is not a token this listing gave out")
        return after

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:TAG_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or len(text) > 2048:
        raise ValueError("empty or too long")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
