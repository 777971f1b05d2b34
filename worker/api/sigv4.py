"""Checking AWS Signature Version 4 on requests to the HTTP front end, so the
stock SDKs (boto3, the AWS CLI) authenticate with keys the worker knows.

The canonical request is rebuilt from what arrived, restricted to the headers
the client says it signed, and signed again with botocore's own signer: the
two sides then cannot disagree about encoding rules. The comparison is
constant-time; a request older or newer than `max_skew_s` is refused, like
AWS does, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import calendar
import hmac
import json
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from worker.config import Config, ConfigError

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_PRESIGNED_EXPIRES_S = 300  # the hosted service's maximum for live-view URLs
URL_UNPARSED = "the request's URL (its path or Host header) does not parse"


class SignatureError(Exception):
    """The request is not signed, or not signed by a key this worker knows."""


def load_keys(path: Path) -> dict[str, str]:
    """Access key id -> secret key, from a JSON object in a file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read access keys from {path}: {type(exc).__name__}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in data.items()
    ):
        raise ValueError(f"{path}: must be a JSON object of access key id -> secret key")
    return dict(data)


def verify(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    keys: Mapping[str, str],
    service: str,
    max_skew_s: float = 900.0,
) -> str:
    """Check a request's signature; returns the access key id that signed it."""
    header = headers.get("Authorization", "")
    algorithm, _, fields = header.partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureError("the request is not signed with AWS Signature Version 4")
    parts = dict(p.strip().split("=", 1) for p in fields.split(",") if "=" in p)
    try:
        credential, signed, signature = (
            parts["Credential"],
            parts["SignedHeaders"],
            parts["Signature"],
        )
        key_id, day, region, signed_service, terminator = credential.split("/")
    except (KeyError, ValueError):
        raise SignatureError("the Authorization header is malformed") from None
    secret = _secret(keys, key_id, signed_service, terminator, service)
    stamp = headers.get("X-Amz-Date", "")
    _check_time(stamp, day, max_skew_s)
    names = signed.split(";")
    if "host" not in names:
        raise SignatureError("the Host header must be signed")
    request = AWSRequest(
        method=method,
        url=url,
        data=body,
        headers={name: headers.get(name, "") for name in names},
    )
    request.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(key_id, secret), signed_service, region)
    try:
        canonical = signer.canonical_request(request)
    except ValueError:  # the URL (its Host) does not parse: nothing was signed for it
        raise SignatureError(URL_UNPARSED) from None
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, signature):
        raise SignatureError("the request signature does not match")
    return key_id


def verify_presigned(
    method: str,
    url: str,
    host: str,
    keys: Mapping[str, str],
    service: str,
    max_expires_s: int = MAX_PRESIGNED_EXPIRES_S,
) -> str:
    """Check a presigned URL (`X-Amz-*` query parameters, signed for its
    path and the Host header); returns the access key id that signed it."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise SignatureError(URL_UNPARSED) from None
    query = parse_qsl(parts.query, keep_blank_values=True)
    params = dict(query)
    if params.get("X-Amz-Algorithm") != ALGORITHM:
        raise SignatureError("the URL is not presigned with AWS Signature Version 4")
    try:
        key_id, day, region, signed_service, terminator = params["X-Amz-Credential"].split("/")
        stamp, signature = params["X-Amz-Date"], params["X-Amz-Signature"]
        expires = int(params["X-Amz-Expires"])
    except (KeyError, ValueError):
        raise SignatureError("the presigned URL is malformed") from None
    secret = _secret(keys, key_id, signed_service, terminator, service)
    if params.get("X-Amz-SignedHeaders") != "host":
        raise SignatureError("a presigned URL must sign exactly the Host header")
    if not 1 <= expires <= max_expires_s:
        raise SignatureError(f"X-Amz-Expires must be from 1 to {max_expires_s} seconds")
    signed_at = _signed_at(stamp, day)
    if not signed_at - 60 <= time.time() <= signed_at + expires:
        raise SignatureError("the presigned URL has expired (or is not valid yet)")
    # The other parameters exactly as they arrived: the signer hashed their
    # encoded form.
    unsigned = "&".join(p for p in parts.query.split("&") if not p.startswith("X-Amz-Signature="))
    request = AWSRequest(
        method=method,
        url=urlunsplit((parts.scheme, parts.netloc, parts.path, unsigned, "")),
        headers={"host": host},
    )
    request.context["timestamp"] = stamp
    signer = SigV4QueryAuth(Credentials(key_id, secret), signed_service, region, expires)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, signature):
        raise SignatureError("the URL signature does not match")
    return key_id


def _signed_at(stamp: str, day: str) -> int:
    try:
        signed_at = calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        raise SignatureError("X-Amz-Date is missing or malformed") from None
    if not stamp.startswith(day):
        raise SignatureError("X-Amz-Date does not match the credential scope")
    return signed_at


def _secret(
    keys: Mapping[str, str], key_id: str, signed_service: str, terminator: str, service: str
) -> str:
    """The secret of the key that signed, for the service it was signed for."""
    secret = keys.get(key_id)
    if secret is None:
        raise SignatureError("the access key id is not known to this worker")
    if signed_service != service or terminator != "aws4_request":
        raise SignatureError(f"the request is not signed for the service '{service}'")
    return secret


def _check_time(stamp: str, day: str, max_skew_s: float) -> None:
    if abs(time.time() - _signed_at(stamp, day)) > max_skew_s:
        raise SignatureError("the request was signed too long ago (or in the future)")


def access_keys(config: Config) -> dict[str, str] | None:
    """The SigV4 keys of the HTTP API (None: it checks no signature).
    Websockets accept signatures by the same keys beside their token."""
    if config.http_api_auth != "sigv4" or config.http_api_keys_file is None:
        return None if config.http_api_auth != "sigv4" else {}
    try:
        return load_keys(config.http_api_keys_file)
    except ValueError as err:
        raise ConfigError(f"http_api_keys_file: {err}") from None
