"""Proxy routing as a request gives it, and a page load through it."""

from __future__ import annotations

from playwright.async_api import Page

from helpers.upstreams import Proxy
from worker.pb import sandbox_pb2 as pb


def external(proxy: Proxy, patterns: tuple[str, ...] = (), secret: str = "") -> pb.Proxy:
    return pb.Proxy(
        external_proxy=pb.ExternalProxy(
            server="127.0.0.1",
            port=proxy.port,
            domain_patterns=patterns,
            credentials=pb.ProxyCredentials(basic_auth=pb.BasicAuth(secret_arn=secret))
            if secret
            else None,
        )
    )


def routing(*proxies: pb.Proxy, bypass: tuple[str, ...] = ()) -> pb.ProxyConfiguration:
    return pb.ProxyConfiguration(
        proxies=proxies, bypass=pb.ProxyBypass(domain_patterns=bypass) if bypass else None
    )


async def load(page: Page, url: str) -> tuple[int, str]:
    response = await page.goto(url, timeout=15000)
    assert response is not None
    return response.status, await page.content()
