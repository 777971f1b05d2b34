"""What a Start reads from secrets before anything starts, so that a missing,
unreadable or malformed secret leaves nothing behind: each proxy's
Proxy-Authorization value, and the browser's and the session's CAs, checked.
Errors name the request field and the reference, never the content."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

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
        text = await secrets.fetch(field, ref, 'JSON {"username": ..., "password": ...}')
        return secret_resolver.basic_credentials(field, ref, text)

    return list(
        await asyncio.gather(*(resolve(i, p.secret_ref) for i, p in enumerate(proxy.proxies)))
    )


# Certificates, not secrets, are counted: a secret may hold a bundle.
MAX_PER_LIST = 10  # a browser's, or a session's own
MAX_IN_ALL = 20
PEM = "PEM CA certificates (-----BEGIN CERTIFICATE-----)"


async def certificates(
    secrets: SecretResolver, browser: BrowserConfig, request: StartRequest
) -> list[CACertificate]:
    """The browser's CAs, then the session's, each read, checked and counted."""
    own, session = await asyncio.gather(
        read_certificates(secrets, "browser.certificates", browser.certificate_arns),
        read_certificates(secrets, "certificates", request.certificate_arns),
    )
    if len(own) + len(session) > MAX_IN_ALL:
        raise InvalidArgument(
            "certificates",
            f"the browser's {len(own)} and the session's {len(session)} certificates are "
            f"{len(own) + len(session)}; at most {MAX_IN_ALL} in all",
        )
    return own + session


async def read_certificates(
    secrets: SecretResolver, field: str, arns: Sequence[str]
) -> list[CACertificate]:
    """What `arns` hold, checked, at most 10 certificates (bundles counted by
    their certificates); errors name the secret's field."""
    refs = [
        (f"{field}[{i}].location.secrets_manager.secret_arn", arn) for i, arn in enumerate(arns)
    ]
    texts = await asyncio.gather(*(secrets.fetch(f, ref, PEM) for f, ref in refs))
    checked: list[CACertificate] = []
    for (name, ref), text in zip(refs, texts, strict=True):
        try:
            checked += certstore_validate.parse(text)
        except CertificateError as err:
            raise InvalidArgument(name, f"secret '{ref}' {err.reason}") from None
    if len(checked) > MAX_PER_LIST:
        raise InvalidArgument(
            field, f"{len(arns)} secret(s) hold {len(checked)} certificates; at most {MAX_PER_LIST}"
        )
    return checked
