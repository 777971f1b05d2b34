"""What never goes into a recording: credentials in headers and parameters.

Header values of `Authorization`, `Cookie`, `Set-Cookie`, `Proxy-Authorization`
(any case) become "[redacted]". In CDP command parameters, any key that
names a secret is redacted wherever it sits, and long strings and large
collections are cut so one `Page.setDocumentContent` cannot bloat a batch.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[redacted]"
SECRET_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})
_SECRET_KEY = re.compile(r"password|passwd|secret|token|authorization|cookie|credential", re.I)
MAX_STRING = 1000
MAX_ITEMS = 50
MAX_DEPTH = 6


# What a client types through CDP: the page may be a password field, which
# rrweb masks, so the command that typed it must not tell either. Named keys
# (Enter, Tab, ArrowDown) stay; a character key loses everything naming it.
TEXT_METHODS = ("Input.insertText", "Input.imeSetComposition")
KEY_FIELDS = (
    "text",
    "unmodifiedText",
    "key",
    "code",
    "keyIdentifier",
    "windowsVirtualKeyCode",
    "nativeVirtualKeyCode",
)


def command(method: str, value: Any) -> Any:
    """A client command's parameters as recorded."""
    out = params(value)
    if not isinstance(out, dict):
        return out
    if method in TEXT_METHODS and isinstance(out.get("text"), str):
        out["text"] = f"[typed: {len(out['text'])} characters]"
    elif method == "Input.dispatchKeyEvent":
        key = out.get("key")
        if out.get("text") or (isinstance(key, str) and len(key) == 1):
            for field in KEY_FIELDS:
                if field in out:
                    out[field] = REDACTED
    return out


def headers(values: Any) -> dict[str, str]:
    """A CDP headers object with secret values replaced."""
    if not isinstance(values, dict):
        return {}
    return {
        str(name): REDACTED if str(name).lower() in SECRET_HEADERS else _cut(str(value))
        for name, value in values.items()
    }


def params(value: Any, depth: int = 0) -> Any:
    """A bounded copy of CDP parameters with secret-named keys redacted."""
    if depth >= MAX_DEPTH:
        return "…"
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for i, (key, item) in enumerate(value.items()):
            if i >= MAX_ITEMS:
                out["…"] = f"{len(value) - MAX_ITEMS} more keys"
                break
            key = str(key)
            if key.lower() == "headers":
                out[key] = headers(item) if isinstance(item, dict) else _header_list(item)
            elif _SECRET_KEY.search(key):
                out[key] = REDACTED
            else:
                out[key] = params(item, depth + 1)
        return out
    if isinstance(value, list):
        items = [params(item, depth + 1) for item in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"… {len(value) - MAX_ITEMS} more items")
        return items
    if isinstance(value, str):
        return _cut(value)
    return value


def _header_list(value: Any) -> Any:
    # Fetch.* and Network.setExtraHTTPHeaders variants: [{name, value}].
    if not isinstance(value, list):
        return params(value, MAX_DEPTH - 1)
    out = []
    for entry in value[:MAX_ITEMS]:
        if isinstance(entry, dict) and str(entry.get("name", "")).lower() in SECRET_HEADERS:
            out.append({**entry, "value": REDACTED})
        else:
            out.append(params(entry, 1))
    return out


def _cut(text: str) -> str:
    if len(text) <= MAX_STRING:
        return text
    return f"{text[:MAX_STRING]}… ({len(text)} characters)"
