"""Custom CA trust end to end: trustme CAs, HTTPS origins on loopback reached
by test host names, real Chromium in both flavours, Secrets Manager on
moto_server, mounted-file secrets, and mitmproxy intercepting TLS."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from playwright.async_api import Page

from helpers.requests import certificates
from helpers.upstreams import Interceptor, SecretsManager, TLSOrigin, tls_serving, unique_path
from helpers.waits import eventually
from helpers.workers import RunningWorker, browser_root, session_page, session_processes
from worker.pb import sandbox_pb2 as pb
from worker.sessions.model import RecordingConfig

HOST = "secure.company.test"


@pytest.fixture
def secrets_dir(tmp_path: Path, tls_origin: TLSOrigin, mitmproxy: Interceptor) -> Path:
    path = tmp_path / "secrets"
    path.mkdir()
    (path / "origin-ca").write_text(tls_origin.ca.cert_pem.bytes().decode())
    (path / "mitm-ca").write_text(mitmproxy.ca_pem)
    return path


@pytest.fixture
def worker(routed_worker: RunningWorker) -> RunningWorker:
    return routed_worker


async def status_of(page: Page, url: str) -> int:
    response = await page.goto(url, timeout=15000)
    assert response is not None
    return response.status


def host_trust_state() -> str:
    """What the host trusts: the system bundle, its directory, root's NSS DB."""
    digest = hashlib.sha256()
    for path in (
        Path("/etc/ssl/certs/ca-certificates.crt"),
        *sorted(Path.home().glob(".pki/**/*")),
    ):
        if path.is_file():
            digest.update(str(path).encode() + path.read_bytes())
    digest.update("\n".join(sorted(p.name for p in Path("/etc/ssl/certs").iterdir())).encode())
    return digest.hexdigest()


@pytest.mark.parametrize("flavour", [pb.CHROMIUM, pb.HEADLESS_SHELL])
async def test_a_session_trusts_its_ca_and_a_concurrent_one_without_it_does_not(
    worker: RunningWorker, tls_origin: TLSOrigin, moto: SecretsManager, flavour: int
) -> None:
    before = host_trust_state()
    arn = moto.put(f"origin-ca-{flavour}", tls_origin.ca.cert_pem.bytes().decode())
    created = await worker.browsers.CreateBrowser(
        pb.CreateBrowserRequest(name=f"trust{flavour}", flavour=flavour)
    )
    url = tls_origin.url(HOST, unique_path())
    async with (
        session_page(
            worker, browser_identifier=created.browser_id, certificates=certificates(arn)
        ) as (trusting, started),
        session_page(worker, browser_identifier=created.browser_id) as (plain, _),
    ):
        loaded, refused = await asyncio.gather(
            status_of(trusting, url), status_of(plain, url), return_exceptions=True
        )
        assert loaded == 200
        assert "net::ERR_CERT_AUTHORITY_INVALID" in str(refused)
        got = await worker.get(started.session_id, created.browser_id)
        assert list(got.certificates) == certificates(arn)
        assert b"BEGIN CERTIFICATE" not in got.SerializeToString()
    assert host_trust_state() == before


async def test_the_browsers_certificates_come_first_then_the_sessions(
    worker: RunningWorker, tls_origin: TLSOrigin, moto: SecretsManager
) -> None:
    second_ca = trustme.CA(organization_name="second CA")
    arn = moto.put("second-ca", second_ca.cert_pem.bytes().decode())
    created = await worker.browsers.CreateBrowser(
        pb.CreateBrowserRequest(name="layered", certificates=certificates("file:origin-ca"))
    )
    with tls_serving(second_ca) as second:
        async with session_page(
            worker, browser_identifier=created.browser_id, certificates=certificates(arn)
        ) as (page, started):
            assert await status_of(page, tls_origin.url(HOST, unique_path())) == 200
            assert await status_of(page, second.url("api.example.test", "/second")) == 200
            got = await worker.get(started.session_id, created.browser_id)
            assert list(got.certificates) == certificates("file:origin-ca", arn)
            db = browser_root(worker.config.state_dir, started.session_id) / "home/.pki/nssdb"
            names = await asyncio.to_thread(nicknames, db)
    fingerprints = [fingerprint(ca)[:16] for ca in (tls_origin.ca, second_ca)]
    assert names == [f"sandbox-ca-00-{fingerprints[0]}", f"sandbox-ca-01-{fingerprints[1]}"]


def nicknames(db: Path) -> list[str]:
    listing = subprocess.run(
        ["certutil", "-L", "-d", f"sql:{db}"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split()[0] for line in listing.splitlines() if "sandbox-ca-" in line]


def fingerprint(ca: trustme.CA) -> str:
    cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def expired_ca() -> str:
    ca = trustme.CA()
    cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    private = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    now = datetime.datetime.now(datetime.UTC)
    rebuilt = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.subject)
        .public_key(cert.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now - datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())  # type: ignore[arg-type]
    )
    return rebuilt.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize("level", ["session", "browser"])
async def test_a_refused_certificate_fails_the_start_naming_it_and_leaves_nothing(
    worker: RunningWorker, moto: SecretsManager, level: str
) -> None:
    arn = moto.put(f"expired-{level}", expired_ca())
    fields: dict[str, Any] = {"certificates": certificates("file:origin-ca", arn)}
    prefix = ""
    if level == "browser":
        # CreateBrowser refuses it now; a browser made while its certificate
        # was still valid meets the same check at every Start.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await worker.browsers.CreateBrowser(
                pb.CreateBrowserRequest(name="expired", certificates=certificates(arn))
            )
        assert (refused.value.details() or "").startswith(
            f"certificates[0].location.secrets_manager.secret_arn: secret '{arn}' expired on "
        )
        manager = worker.server.manager
        assert manager is not None
        created = await manager.browsers.create(
            "expired", "", "chromium", RecordingConfig(), (arn,)
        )
        fields = {"browser_identifier": created.browser_id}
        prefix = "browser."
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await worker.start(**fields)
    index = 1 if level == "session" else 0
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(
        f"{prefix}certificates[{index}].location.secrets_manager.secret_arn: "
        f"secret '{arn}' expired on "
    )
    manager = worker.server.manager
    assert manager is not None and manager.in_use == 0
    assert not list(worker.config.sessions_dir.iterdir())


async def test_a_missing_certificate_secret_is_a_failed_precondition(
    worker: RunningWorker,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await worker.start(certificates=certificates("file:absent"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "certificates[0]" in (caught.value.details() or "")


def environment_of(pid: int) -> dict[str, str]:
    items = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in items if b"=" in item)


def handshake(cafile: str, port: int) -> str:
    context = ssl.create_default_context(cafile=cafile)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        return str(tls.version())


async def test_other_clients_in_the_session_get_a_bundle_with_its_cas(
    worker: RunningWorker, tls_origin: TLSOrigin
) -> None:
    started = await worker.start(certificates=certificates("file:origin-ca"))
    # Start returns at the spawn: the browser names its tree once exec'd.
    pids = await eventually(
        lambda: session_processes(worker.config.state_dir, started.session_id), timeout=10
    )
    env = environment_of(pids[0])
    assert env["SSL_CERT_FILE"] == env["NODE_EXTRA_CA_CERTS"]
    pem = await asyncio.to_thread(Path(env["SSL_CERT_FILE"]).read_bytes)
    assert tls_origin.ca.cert_pem.bytes() in pem and pem.count(b"BEGIN CERTIFICATE") > 100
    # A real client trusting only that file reaches the private origin.
    assert await asyncio.to_thread(handshake, env["SSL_CERT_FILE"], tls_origin.server.port)
    await worker.stop(started.session_id)


async def test_a_tls_intercepting_proxy_works_with_its_ca_and_fails_without(
    worker: RunningWorker, tls_origin: TLSOrigin, mitmproxy: Interceptor
) -> None:
    routing = pb.ProxyConfiguration(
        proxies=[pb.Proxy(external_proxy=pb.ExternalProxy(server="127.0.0.1", port=mitmproxy.port))]
    )
    url = tls_origin.url(HOST, unique_path("mitm"))
    async with (
        session_page(
            worker, proxy_configuration=routing, certificates=certificates("file:mitm-ca")
        ) as (trusting, _),
        session_page(worker, proxy_configuration=routing) as (plain, _),
    ):
        response = await trusting.goto(url, timeout=15000)
        assert response is not None and response.status == 200
        details = await response.security_details()
        assert details is not None and "mitmproxy" in str(details.get("issuer"))
        with pytest.raises(Exception, match="net::ERR_CERT_AUTHORITY_INVALID"):
            await plain.goto(url, timeout=15000)
    assert tls_origin.server.requests_for(url.split(str(tls_origin.server.port))[1])
