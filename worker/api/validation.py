"""Request validation: limits and patterns of the hosted API, one field at a time.

Pure functions over plain values; each failure raises InvalidArgument naming
the field (proto spelling) and the reason, before any resource is touched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import idna

from worker import tracing
from worker.errors import InvalidArgument
from worker.network.routing import ProxyConfig, ProxyServer, normalise_pattern
from worker.sessions import secret_resolver
from worker.sessions.model import (
    MANAGED,
    RECOMMENDED,
    PolicyFile,
    RecordingConfig,
    S3Object,
    Viewport,
)

BROWSER_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9_]{0,47}")
BROWSER_ID = re.compile(r"[a-zA-Z][a-zA-Z0-9_.]{0,47}(-[a-zA-Z0-9]{10})?")
SESSION_ID = re.compile(r"[0-9a-zA-Z]{1,40}")
# The hosted pattern; with the 33-256 length it admits boto3's uuid4 tokens.
CLIENT_TOKEN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,256}")
S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
ROLE_ARN = re.compile(r"arn:aws(-[a-z]+)*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}")

MAX_TIMEOUT_S = 28800
DEFAULT_TIMEOUT_S = 3600
MAX_CERTIFICATES = 10
MAX_PROXIES = 5
MAX_PATTERNS = 100
MAX_HOSTNAME = 253
HOSTNAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
PATTERN = re.compile(r"\.?" + HOSTNAME.pattern)


def _check(ok: bool, field: str, reason: str) -> None:
    if not ok:
        raise InvalidArgument(field, reason)


def _printable(value: str) -> bool:
    return value.isprintable()


def browser_name(name: str) -> str:
    _check(bool(name), "name", "is required")
    _check(
        BROWSER_NAME.fullmatch(name) is not None,
        "name",
        "must start with a letter and hold only letters, digits and '_' (at most 48)",
    )
    return name


def trace_context(request: Any) -> tracing.TraceContext:
    """The caller's trace context (trace_id, trace_parent) of a request."""
    checked = tracing.check(request.trace_id, request.trace_parent)
    if isinstance(checked, str):
        field, _, reason = checked.partition(": ")
        raise InvalidArgument(field, reason)
    return checked


PROFILE_ID = re.compile(r"[a-zA-Z][a-zA-Z0-9_]{0,47}-[a-zA-Z0-9]{10}")


def profile_id(value: str, field: str) -> str:
    _check(bool(value), field, "is required")
    _check(
        PROFILE_ID.fullmatch(value) is not None,
        field,
        "must be a profile id: NAME- plus 10 letters and digits",
    )
    return value


def description(text: str) -> str:
    _check(len(text) <= 4096, "description", "must be at most 4096 characters")
    # Any text, lines and tabs too, but not NUL: a fleet's PostgreSQL store
    # cannot keep it in text, and the same request must fare alike on both.
    _check("\x00" not in text, "description", "must not contain the NUL character (U+0000)")
    return text


def recording(enabled: bool, bucket: str, prefix: str, role_arn: str = "") -> RecordingConfig:
    if role_arn:
        _check(
            ROLE_ARN.fullmatch(role_arn) is not None,
            "execution_role_arn",
            "must be an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)",
        )
    if not enabled:
        return RecordingConfig(False, bucket, prefix, role_arn)
    _check(bool(bucket), "recording.s3_location.bucket", "is required when recording is enabled")
    _check(
        S3_BUCKET.fullmatch(bucket) is not None,
        "recording.s3_location.bucket",
        "must be a valid S3 bucket name (3-63 lower-case letters, digits, '.' and '-')",
    )
    _check(len(prefix) <= 1024, "recording.s3_location.prefix", "must be at most 1024 characters")
    _check(_printable(prefix), "recording.s3_location.prefix", "must be printable text")
    return RecordingConfig(True, bucket, prefix.strip("/"), role_arn)


MAX_EXTENSIONS = 10
MAX_POLICY_FILES = 10


def s3_object(field: str, bucket: str, key: str, version_id: str) -> S3Object:
    """An object's location (`prefix` is its key, as in the hosted API)."""
    _check(
        S3_BUCKET.fullmatch(bucket) is not None,
        f"{field}.bucket",
        "must be a valid S3 bucket name (3-63 lower-case letters, digits, '.' and '-')",
    )
    _check(1 <= len(key) <= 1024, f"{field}.prefix", "must be an object key of 1-1024 characters")
    _check(_printable(key), f"{field}.prefix", "must be printable text")
    _check(len(version_id) <= 1024, f"{field}.version_id", "must be at most 1024 characters")
    _check(_printable(version_id), f"{field}.version_id", "must be printable text")
    return S3Object(bucket, key, version_id)


def extensions(locations: Sequence[tuple[str, str, str]]) -> tuple[S3Object, ...]:
    _check(
        len(locations) <= MAX_EXTENSIONS,
        "extensions",
        f"must hold between 1 and {MAX_EXTENSIONS} extensions",
    )
    return tuple(
        s3_object(f"extensions[{i}].location.s3", *location) for i, location in enumerate(locations)
    )


def policy_files(
    field: str, files: Sequence[tuple[str, tuple[str, str, str]]]
) -> tuple[PolicyFile, ...]:
    """(type, (bucket, key, version)) per file: at most ten `.json` files."""
    _check(len(files) <= MAX_POLICY_FILES, field, f"at most {MAX_POLICY_FILES} policy files")
    checked = []
    for i, (kind, location) in enumerate(files):
        _check(
            kind in (MANAGED, RECOMMENDED), f"{field}[{i}].type", "must be MANAGED or RECOMMENDED"
        )
        where = f"{field}[{i}].location.s3"
        obj = s3_object(where, *location)
        _check(obj.key.endswith(".json"), f"{where}.prefix", "must name a .json file")
        checked.append(PolicyFile(obj, kind))
    return tuple(checked)


def certificate_arns(field: str, arns: list[str]) -> tuple[str, ...]:
    _check(len(arns) <= MAX_CERTIFICATES, field, f"at most {MAX_CERTIFICATES} certificates")
    for i, arn in enumerate(arns):
        secret_ref(f"{field}[{i}].location.secrets_manager.secret_arn", arn)
    return tuple(arns)


def secret_ref(field: str, value: str) -> str:
    _check(bool(value), field, "is required")
    _check(
        secret_resolver.is_reference(value),
        field,
        "must be a Secrets Manager secret ARN or 'file:NAME' (a file under the worker's "
        "secrets_dir)",
    )
    return value


# A proxy as the servicer hands it over: server, port, domain patterns and the
# credentials' secret reference ("" for none).
ProxyInput = tuple[str, int, Sequence[str], str]


def proxy_configuration(
    proxies: Sequence[ProxyInput], bypass: Sequence[str], present: bool
) -> ProxyConfig | None:
    if not present:
        return None
    field = "proxy_configuration.proxies"
    _check(
        1 <= len(proxies) <= MAX_PROXIES, field, f"must hold between 1 and {MAX_PROXIES} proxies"
    )
    checked = tuple(proxy(f"{field}[{i}].external_proxy", p) for i, p in enumerate(proxies))
    defaults = [i for i, p in enumerate(checked) if p.is_default]
    _check(
        len(defaults) <= 1,
        field,
        f"at most one proxy may omit domain_patterns (the default); proxies {defaults} do",
    )
    return ProxyConfig(
        proxies=checked,
        bypass=domain_patterns("proxy_configuration.bypass.domain_patterns", bypass),
    )


def proxy(field: str, value: ProxyInput) -> ProxyServer:
    server, port, patterns, ref = value
    return ProxyServer(
        server=proxy_server(f"{field}.server", server),
        port=proxy_port(f"{field}.port", port),
        domain_patterns=domain_patterns(f"{field}.domain_patterns", patterns),
        secret_ref=secret_ref(f"{field}.credentials.basic_auth.secret_arn", ref) if ref else "",
    )


def proxy_server(field: str, server: str) -> str:
    _check(bool(server), field, "is required")
    scheme, sep, host = server.partition("://")
    if not sep:
        host = server
    else:
        _check(
            not scheme.lower().startswith("socks"),
            field,
            f"{scheme}:// proxies are not supported: only HTTP proxies (which carry HTTPS "
            "through CONNECT)",
        )
        _check(
            scheme.lower() == "http",
            field,
            f"{scheme}:// is not supported: give a host name, or http://HOST",
        )
    host = ascii_host(field, host)
    _check(len(host) <= MAX_HOSTNAME, field, f"must be at most {MAX_HOSTNAME} characters")
    _check(
        HOSTNAME.fullmatch(host.lower()) is not None,
        field,
        "must be a host name or IPv4 address (the port goes in 'port')",
    )
    return host.lower()


def proxy_port(field: str, port: int) -> int:
    _check(1 <= port <= 65535, field, "must be between 1 and 65535")
    return port


def domain_patterns(field: str, patterns: Sequence[str]) -> tuple[str, ...]:
    """The patterns, host names in their ASCII (punycode) form."""
    _check(len(patterns) <= MAX_PATTERNS, field, f"at most {MAX_PATTERNS} patterns")
    checked = []
    for i, pattern in enumerate(patterns):
        name = f"{field}[{i}]"
        _check(bool(pattern), name, "must not be empty")
        _check(
            "*" not in pattern,
            name,
            f"wildcards are not supported: use '.{pattern.lstrip('*.')}' to match "
            f"{pattern.lstrip('*.')} and all its subdomains",
        )
        dot = "." if pattern.startswith(".") else ""
        pattern = dot + ascii_host(name, pattern.removeprefix("."))
        _check(len(pattern) <= MAX_HOSTNAME, name, f"must be at most {MAX_HOSTNAME} characters")
        _check(
            PATTERN.fullmatch(normalise_pattern(pattern)) is not None,
            name,
            "must be a host name ('example.com') or a domain with a leading dot ('.example.com')",
        )
        checked.append(pattern)
    return tuple(checked)


def ascii_host(field: str, host: str) -> str:
    """A host name given in Unicode (`bücher.example`) in the form Chromium
    sends and proxies see: IDNA 2008 (UTS #46) punycode, `xn--bcher-kva.example`.
    A port after the name is kept."""
    if host.isascii():
        return host
    name, sep, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    try:
        ascii_name = idna.encode(name, uts46=True).decode()
    except idna.IDNAError:
        raise InvalidArgument(
            field, "is not a valid internationalised host name; give its xn-- (punycode) form"
        ) from None
    return ascii_name + sep + port


def browser_id(value: str, field: str = "browser_identifier") -> str:
    _check(bool(value), field, "is required")
    _check(
        len(value) <= 128 and BROWSER_ID.fullmatch(value) is not None,
        field,
        "is not a browser id",
    )
    return value


def session_id(value: str) -> str:
    _check(bool(value), "session_id", "is required")
    _check(SESSION_ID.fullmatch(value) is not None, "session_id", "must match [0-9a-zA-Z]{1,40}")
    return value


def session_name(name: str) -> str:
    _check(len(name) <= 100, "name", "must be at most 100 characters")
    _check(_printable(name), "name", "must be printable text")
    return name


def session_timeout(seconds: int) -> int:
    if seconds == 0:
        return DEFAULT_TIMEOUT_S
    _check(
        1 <= seconds <= MAX_TIMEOUT_S,
        "session_timeout_seconds",
        f"must be between 1 and {MAX_TIMEOUT_S}",
    )
    return seconds


def viewport(width: int, height: int, default: Viewport, present: bool) -> Viewport:
    if not present:
        return default
    _check(320 <= width <= 3840, "view_port.width", "must be between 320 and 3840")
    _check(240 <= height <= 2160, "view_port.height", "must be between 240 and 2160")
    return Viewport(width, height)


def client_token(token: str) -> str:
    if not token:
        return ""
    _check(
        33 <= len(token) <= 256 and CLIENT_TOKEN.fullmatch(token) is not None,
        "client_token",
        "must be 33-256 letters, digits and '-'",
    )
    return token


def max_results(value: int) -> int:
    if value == 0:
        return 10
    _check(1 <= value <= 100, "max_results", "must be between 1 and 100")
    return value
