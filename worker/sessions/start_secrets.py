"""What a Start reads from secrets before anything starts, so that a missing,
unreadable or malformed secret leaves nothing behind: each proxy's
Proxy-Authorization value, and the browser's and the session's CAs, checked.
Errors name the request field and the reference, never the content."""

from __future__ import annotations

import asyncio

from certstore import validate as certstore_validate
from certstore.validate import CACertificate, CertificateError
from worker.errors import InvalidArgument
from worker.network.routing import ProxyConfig
from worker.sessions import secret_resolver
from worker.sessions.model import BrowserConfig, StartRequest
from worker.sessions.secret_resolver import SecretResolver


async def proxy_authorizations(secrets: SecretResolver, proxy: ProxyConfig | None) -> list[str]:
    """Each proxy's Proxy-Authorization value ("" without credentials)."""
    if proxy is None:
        return []

    async def resolve(index: int, ref: str) -> str:
        if not ref:
            return ""
        field = (
            f"proxy_configuration.proxies[{index}].external_proxy.credentials.basic_auth.secret_arn"
        )
        text = await secrets.fetch(field, ref)
        return secret_resolver.basic_credentials(field, ref, text)

    return list(
        await asyncio.gather(*(resolve(i, p.secret_ref) for i, p in enumerate(proxy.proxies)))
    )


async def certificates(
    secrets: SecretResolver, browser: BrowserConfig, request: StartRequest
) -> list[CACertificate]:
    """The browser's CAs, then the session's, each read and checked."""
    refs = [
        (f"{prefix}certificates[{i}].location.secrets_manager.secret_arn", arn)
        for prefix, arns in (
            ("browser.", browser.certificate_arns),
            ("", request.certificate_arns),
        )
        for i, arn in enumerate(arns)
    ]
    texts = await asyncio.gather(*(secrets.fetch(field, ref) for field, ref in refs))
    checked: list[CACertificate] = []
    for (field, ref), text in zip(refs, texts, strict=True):
        try:
            checked += certstore_validate.parse(text)
        except CertificateError as err:
            raise InvalidArgument(field, f"secret '{ref}' {err.reason}") from None
    return checked
