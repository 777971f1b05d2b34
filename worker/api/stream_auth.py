"""Who may open a session's automation or live-view stream: the holder of
its token (`Authorization: Bearer`, or `?token=` for clients that cannot
set headers), or a request signed with one of the HTTP API's access keys
(SigV4 headers, or a presigned URL for the live view). One check for the
worker's own endpoint and the fleet gateway's relay, which runs it before
it reaches a worker. Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit, urlunsplit

from worker.api import sigv4

SERVICE = "bedrock-agentcore"  # what the hosted SDK signs its websockets for


def presented_token(path: str, headers: Mapping[str, str]) -> str:
    header = headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    values = parse_qs(urlsplit(path).query).get("token", [])
    return values[0] if values else ""


def matches(token: str, expected: str) -> bool:
    return hmac.compare_digest(token.encode(), expected.encode())


def check(
    path: str,
    headers: Mapping[str, str],
    token_ok: Callable[[str], bool],
    keys: Mapping[str, str],
    kind: str,
) -> tuple[HTTPStatus, str] | None:
    """None when the token or a SigV4 signature is good, else the refusal."""
    token = presented_token(path, headers)
    if token and token_ok(token):
        return None
    url = urlsplit(path)
    signed = headers.get("Authorization", "").startswith(sigv4.ALGORITHM)
    presigned = "X-Amz-Signature" in parse_qs(url.query)
    if not signed and not presigned:
        return HTTPStatus.UNAUTHORIZED, "missing or wrong token"
    host = headers.get("Host", "")
    try:
        if signed:
            sigv4.verify("GET", f"https://{host}{path}", headers, b"", keys, SERVICE)
        else:
            # The live view's page is presigned; its websocket reuses the
            # page's query, so it is checked against the page's path.
            page_path = url.path.removesuffix("/ws") if kind == "live-view/ws" else url.path
            page = urlunsplit(("https", host, page_path, url.query, ""))
            sigv4.verify_presigned("GET", page, host, keys, SERVICE)
    except sigv4.SignatureError as err:
        return HTTPStatus.FORBIDDEN, str(err)
    return None
