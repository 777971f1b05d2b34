"""Which way a request goes: bypass, a proxy by domain pattern, the default.

Pure data and matching, shared by the daemon (validation, Get responses) and
the relay process (every request). It imports nothing from the worker so the
relay starts fast.

Precedence, as in the hosted API: a host matching a bypass pattern goes
direct; otherwise the first proxy (in array order) with a matching pattern;
otherwise the proxy without patterns (the default); with no default, direct.

Patterns: `.example.com` matches `example.com` and every subdomain (not
`notexample.com`); `example.com` matches only itself. Case-insensitive; the
port of the request (and any `:port` on a pattern) is ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any

DIRECT = -1  # route index meaning "no proxy"


def normalise_host(host: str) -> str:
    """Lower-case, without a trailing dot or IPv6 brackets."""
    return host.strip().lower().rstrip(".").strip("[]")


def normalise_pattern(pattern: str) -> str:
    """A pattern as matched: lower-case, without its port."""
    value = pattern.strip().lower()
    if value.startswith("[") and "]" in value:  # [::1] or [::1]:8080
        return value[1 : value.index("]")]
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".") if value != "." else value


def matches(pattern: str, host: str) -> bool:
    """Does a normalised pattern match a normalised host?"""
    if pattern.startswith("."):
        return host == pattern[1:] or host.endswith(pattern)
    return host == pattern


@dataclasses.dataclass(frozen=True)
class ProxyServer:
    server: str
    port: int
    domain_patterns: tuple[str, ...] = ()
    secret_ref: str = ""  # where the Basic credentials live; "" = none

    @property
    def is_default(self) -> bool:
        return not self.domain_patterns


@dataclasses.dataclass(frozen=True)
class ProxyConfig:
    proxies: tuple[ProxyServer, ...]
    bypass: tuple[str, ...] = ()

    def route(self, host: str) -> int:
        """The index of the proxy `host` goes through, or DIRECT."""
        name = normalise_host(host)
        if any(matches(normalise_pattern(p), name) for p in self.bypass):
            return DIRECT
        default = DIRECT
        for index, proxy in enumerate(self.proxies):
            if proxy.is_default:
                default = index if default == DIRECT else default
            elif any(matches(normalise_pattern(p), name) for p in proxy.domain_patterns):
                return index
        return default

    def to_dict(self) -> dict[str, Any]:
        return {
            "proxies": [
                {
                    "server": p.server,
                    "port": p.port,
                    "domain_patterns": list(p.domain_patterns),
                    "secret_ref": p.secret_ref,
                }
                for p in self.proxies
            ],
            "bypass": list(self.bypass),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProxyConfig:
        proxies = tuple(
            ProxyServer(
                server=p["server"],
                port=int(p["port"]),
                domain_patterns=tuple(p.get("domain_patterns", ())),
                secret_ref=p.get("secret_ref", ""),
            )
            for p in data["proxies"]
        )
        return cls(proxies=proxies, bypass=tuple(data.get("bypass", ())))
