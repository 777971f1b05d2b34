"""Every operation of the hosted service's two HTTP APIs, from the botocore
service models (the same ones a client of this worker signs with), so a
request for one this worker does not serve is answered as such: a
ValidationException naming the operation ("not supported by this worker"),
not a 404 that reads like a missing resource. Requests that match no
operation at all are told which method and path were not recognised."""

from __future__ import annotations

import functools
import re

import botocore.session

SERVICES = ("bedrock-agentcore", "bedrock-agentcore-control")


@functools.cache
def _operations() -> tuple[tuple[str, re.Pattern[str], str], ...]:
    """(method, path pattern, operation name) for every modelled operation."""
    session = botocore.session.get_session()
    found = []
    for service in SERVICES:
        model = session.get_service_model(service)
        for name in model.operation_names:
            http = model.operation_model(name).http
            path = http["requestUri"].split("?", 1)[0]
            found.append((http["method"], _pattern(path), name))
    return tuple(found)


def _pattern(uri: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", uri)
    regex = "".join(
        ("(.+)" if part.endswith("+}") else "([^/]+)") if part.startswith("{") else re.escape(part)
        for part in parts
    )
    return re.compile(regex.rstrip("/") + "/?")


def operation(method: str, path: str) -> str:
    """The hosted operation `method path` calls, or ""."""
    for verb, pattern, name in _operations():
        if verb == method and pattern.fullmatch(path):
            return name
    return ""
