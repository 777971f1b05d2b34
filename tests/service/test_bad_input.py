"""Input users got wrong, refused with the field and the reason (issue 20's
findings): binary certificates, too many certificates, a browser's
unusable certificates, listing tokens, and host names in Unicode."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from service.conftest import fake_config

from helpers.requests import certificates
from helpers.workers import RunningWorker, running_worker
from worker.pb import sandbox_pb2 as pb


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    path = tmp_path / "secrets"
    path.mkdir()
    cas = [trustme.CA(organization_name=f"CA {i}") for i in range(12)]
    pems = [ca.cert_pem.bytes() for ca in cas]
    (path / "one.pem").write_bytes(pems[0])
    (path / "pair.pem").write_bytes(pems[0] + pems[1])
    (path / "eleven.pem").write_bytes(b"".join(pems[1:12]))
    (path / "six.pem").write_bytes(b"".join(pems[:6]))
    (path / "five.pem").write_bytes(b"".join(pems[6:11]))
    der = x509.load_pem_x509_certificate(pems[0]).public_bytes(Encoding.DER)
    (path / "ca.der").write_bytes(der)
    leaf = cas[0].issue_cert("leaf.company.test")
    (path / "leaf.pem").write_bytes(leaf.cert_chain_pems[0].bytes())
    return path


@pytest_asyncio.fixture
async def worker(
    tmp_path: Path, fake_binary: Path, secrets_dir: Path
) -> AsyncIterator[RunningWorker]:
    async with running_worker(fake_config(tmp_path, fake_binary, secrets_dir=secrets_dir)) as w:
        yield w


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def test_a_der_certificate_is_invalid_input_saying_it_must_be_pem(
    worker: RunningWorker,
) -> None:
    error = await refused(worker.start(certificates=certificates("file:ca.der")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "") == (
        "certificates[0].location.secrets_manager.secret_arn: secret 'file:ca.der' is binary"
        " (for example DER), not text: it must hold PEM CA certificates"
        " (-----BEGIN CERTIFICATE-----)"
    )


async def test_certificates_are_counted_not_secrets(worker: RunningWorker) -> None:
    error = await refused(worker.start(certificates=certificates("file:eleven.pem")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "") == ("certificates: 1 secret(s) hold 11 certificates; at most 10")
    error = await refused(worker.start(certificates=certificates("file:six.pem", "file:five.pem")))
    assert "2 secret(s) hold 11 certificates" in (error.details() or "")
    started = await worker.start(certificates=certificates("file:six.pem", "file:pair.pem"))
    assert started.status == pb.READY  # 8 certificates


async def test_a_browser_with_an_unusable_certificate_is_refused_at_creation(
    worker: RunningWorker,
) -> None:
    create = pb.CreateBrowserRequest(name="leafy", certificates=certificates("file:leaf.pem"))
    error = await refused(worker.browsers.CreateBrowser(create))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(
        "certificates[0].location.secrets_manager.secret_arn: secret 'file:leaf.pem'"
    )
    missing = pb.CreateBrowserRequest(name="gone", certificates=certificates("file:nothing.pem"))
    error = await refused(worker.browsers.CreateBrowser(missing))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    listed = await worker.browsers.ListBrowsers(pb.ListBrowsersRequest(type=pb.CUSTOM))
    assert not listed.browsers
    fine = pb.CreateBrowserRequest(name="fine", certificates=certificates("file:pair.pem"))
    assert (await worker.browsers.CreateBrowser(fine)).status == pb.BROWSER_READY


async def test_a_description_with_a_nul_is_refused_naming_it_and_lines_are_kept(
    worker: RunningWorker,
) -> None:
    # Refused on every store alike: a fleet's PostgreSQL cannot keep a NUL in text.
    for create in (
        worker.browsers.CreateBrowser(pb.CreateBrowserRequest(name="nul", description="a\x00b")),
        worker.profiles.CreateBrowserProfile(
            pb.CreateBrowserProfileRequest(name="nul", description="a\x00b")
        ),
    ):
        error = await refused(create)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == "description: must not contain the NUL character (U+0000)"
    lines = "first line\n\tsecond, indented"
    made = await worker.browsers.CreateBrowser(
        pb.CreateBrowserRequest(name="lines", description=lines)
    )
    got = await worker.browsers.GetBrowser(pb.GetBrowserRequest(browser_id=made.browser_id))
    assert got.description == lines


async def test_browsers_are_listed_by_type(worker: RunningWorker) -> None:
    created = await worker.browsers.CreateBrowser(pb.CreateBrowserRequest(name="mine"))

    async def listed(kind: int) -> list[str]:
        page = await worker.browsers.ListBrowsers(pb.ListBrowsersRequest(type=kind))
        return [b.browser_id for b in page.browsers]

    assert await listed(pb.SYSTEM) == ["aws.browser.v1"]
    assert await listed(pb.CUSTOM) == [created.browser_id]
    assert await listed(0) == ["aws.browser.v1", created.browser_id]


async def test_the_built_in_browser_has_the_time_its_worker_state_was_made(
    tmp_path: Path, fake_binary: Path
) -> None:
    config = fake_config(tmp_path, fake_binary)
    request = pb.GetBrowserRequest(browser_id="aws.browser.v1")
    async with running_worker(config) as worker:
        first = await worker.browsers.GetBrowser(request)
    async with running_worker(config) as worker:
        again = await worker.browsers.GetBrowser(request)
    assert first.created_at.seconds > 1_700_000_000  # not 1970
    assert first.created_at == again.created_at == again.last_updated_at


async def test_next_tokens_are_opaque_and_checked(worker: RunningWorker) -> None:
    for name in ("a", "b", "c"):
        await worker.browsers.CreateBrowser(pb.CreateBrowserRequest(name=name))
    ids = [(await worker.start()).session_id for _ in range(3)]
    first = await worker.browsers.ListBrowsers(pb.ListBrowsersRequest(max_results=2))
    rest = await worker.browsers.ListBrowsers(
        pb.ListBrowsersRequest(max_results=2, next_token=first.next_token)
    )
    assert len(first.browsers) + len(rest.browsers) == 4 and not rest.next_token
    sessions = await worker.sessions.ListBrowserSessions(
        pb.ListBrowserSessionsRequest(max_results=1)
    )
    assert sessions.items[0].session_id == ids[-1]
    forged = first.next_token[:-2] + ("AA" if not first.next_token.endswith("AA") else "BB")
    for garbage in ("abc", ids[0], first.next_token, forged, "x.y", "."):
        error = await refused(
            worker.sessions.ListBrowserSessions(pb.ListBrowserSessionsRequest(next_token=garbage))
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (error.details() or "").startswith("next_token:")
    error = await refused(
        worker.browsers.ListBrowsers(pb.ListBrowsersRequest(next_token=sessions.next_token))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_host_names_in_unicode_become_their_punycode_form(worker: RunningWorker) -> None:
    proxy = pb.ProxyConfiguration(
        proxies=[
            pb.Proxy(
                external_proxy=pb.ExternalProxy(
                    server="proxy.bücher.test", port=3128, domain_patterns=[".bücher.company.test"]
                )
            )
        ],
        bypass=pb.ProxyBypass(domain_patterns=["straße.example"]),
    )
    started = await worker.start(proxy_configuration=proxy)
    shown = (await worker.get(started.session_id)).proxy_configuration
    assert shown.proxies[0].external_proxy.server == "proxy.xn--bcher-kva.test"
    assert list(shown.proxies[0].external_proxy.domain_patterns) == [".xn--bcher-kva.company.test"]
    assert list(shown.bypass.domain_patterns) == ["xn--strae-oqa.example"]
    bad = pb.ProxyConfiguration(bypass=pb.ProxyBypass(domain_patterns=["a..bü"]))
    bad.proxies.append(proxy.proxies[0])
    error = await refused(worker.start(proxy_configuration=bad))
    assert (error.details() or "") == (
        "proxy_configuration.bypass.domain_patterns[0]: is not a valid internationalised host"
        " name; give its xn-- (punycode) form"
    )
