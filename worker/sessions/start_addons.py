"""What a Start reads from S3 before anything starts: its extensions, and
its browser's and its own enterprise policy files. They are fetched at once
and checked (a bad one fails the Start naming its field, and nothing is left
behind); the session then unpacks them into its own directory."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from worker.browser import extensions, policies
from worker.errors import FailedPrecondition
from worker.sessions.host import HostServices
from worker.sessions.model import MANAGED, BrowserConfig, PolicyFile, S3Object, StartRequest

MAX_EXTENSION_BYTES = 10 * 1024 * 1024
MAX_POLICY_BYTES = 5 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Addons:
    extensions: tuple[bytes, ...] = ()  # checked ZIPs
    managed: tuple[bytes, ...] = ()  # checked policy files, the browser's first
    recommended: tuple[bytes, ...] = ()

    @property
    def has_policies(self) -> bool:
        return bool(self.managed or self.recommended)


def wanted(browser: BrowserConfig, request: StartRequest) -> bool:
    return bool(request.extensions or request.policies or browser.policies)


async def read(host: HostServices, browser: BrowserConfig, request: StartRequest) -> Addons:
    """Refuse what this browser or host cannot do, then fetch and check."""
    if request.extensions and browser.flavour != "chromium":
        raise FailedPrecondition(
            "extensions",
            "the headless shell cannot load extensions; use a browser of flavour CHROMIUM",
        )
    if (request.policies or browser.policies) and host.policies_refused:
        raise FailedPrecondition(
            "enterprise_policies" if request.policies else "browser_identifier",
            f"this worker cannot give a browser policies of its own: {host.policies_refused}",
        )
    zips, browser_files, own_files = await asyncio.gather(
        asyncio.gather(
            *(
                _extension(host, f"extensions[{n}].location.s3", location)
                for n, location in enumerate(request.extensions)
            )
        ),
        read_policies(host, "browser.enterprise_policies", browser.policies),
        read_policies(host, "enterprise_policies", request.policies),
    )
    files = [*browser_files, *own_files]
    return Addons(
        extensions=tuple(zips),
        managed=tuple(data for kind, data in files if kind == MANAGED),
        recommended=tuple(data for kind, data in files if kind != MANAGED),
    )


async def read_policies(
    host: HostServices, field: str, files: Sequence[PolicyFile]
) -> list[tuple[str, bytes]]:
    """Each file's kind and bytes, each checked to be a JSON object."""

    async def one(n: int, policy: PolicyFile) -> tuple[str, bytes]:
        name = f"{field}[{n}].location.s3"
        data = await host.objects.read(name, policy.location, MAX_POLICY_BYTES)
        policies.check(name, data)
        return policy.kind, data

    return list(await asyncio.gather(*(one(n, p) for n, p in enumerate(files))))


async def _extension(host: HostServices, field: str, location: S3Object) -> bytes:
    data = await host.objects.read(field, location, MAX_EXTENSION_BYTES)
    await asyncio.to_thread(extensions.check, field, data)
    return data
