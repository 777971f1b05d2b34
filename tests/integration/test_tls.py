"""gRPC over TLS with client-certificate auth (mTLS), and the HTTP probes
that stand in for gRPC health when TLS is on."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
import trustme

from helpers.daemon import cli, daemon
from helpers.workers import make_config
from worker.config import ConfigError
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc
from worker.server import WorkerServer


class Pki:
    def __init__(self, root: Path) -> None:
        self.server_ca = trustme.CA()
        self.client_ca = trustme.CA()
        self.stranger_ca = trustme.CA()
        server = self.server_ca.issue_cert("localhost", "127.0.0.1")
        self.server_chain = root / "server.pem"
        self.server_key = root / "server.key"
        server.private_key_pem.write_to_path(str(self.server_key))
        self.server_chain.write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems))
        self.client_ca_file = root / "client-ca.pem"
        self.client_ca.cert_pem.write_to_path(str(self.client_ca_file))

    def channel(self, port: int, client: trustme.CA | None) -> grpc.aio.Channel:
        key = chain = None
        if client is not None:
            cert = client.issue_cert("orchestrator.example.test")
            key = cert.private_key_pem.bytes()
            chain = b"".join(b.bytes() for b in cert.cert_chain_pems)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.server_ca.cert_pem.bytes(),
            private_key=key,
            certificate_chain=chain,
        )
        return grpc.aio.secure_channel(f"localhost:{port}", credentials)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest_asyncio.fixture
async def tls_worker(tmp_path: Path, pki: Pki) -> AsyncIterator[WorkerServer]:
    config = make_config(
        tmp_path,
        tls_cert_file=pki.server_chain,
        tls_key_file=pki.server_key,
        tls_client_ca_file=pki.client_ca_file,
    )
    server = WorkerServer(config)
    try:
        await server.start()
        yield server
    finally:
        await server.stop(drain_timeout=0.1)


async def status(channel: grpc.aio.Channel) -> pb.WorkerStatus:
    async with channel:
        return await pb_grpc.WorkerStub(channel).GetWorkerStatus(
            pb.GetWorkerStatusRequest(), timeout=5
        )


async def test_a_client_with_a_certificate_from_the_client_ca_is_served(
    tls_worker: WorkerServer, pki: Pki
) -> None:
    answer = await status(pki.channel(tls_worker.grpc_port, pki.client_ca))
    assert answer.capacity == tls_worker.config.max_sessions


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate"])
async def test_clients_without_a_trusted_certificate_are_refused(
    tls_worker: WorkerServer, pki: Pki, who: str
) -> None:
    client = None if who == "no certificate" else pki.stranger_ca
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await status(pki.channel(tls_worker.grpc_port, client))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_plaintext_client_is_refused(tls_worker: WorkerServer) -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await status(grpc.aio.insecure_channel(f"127.0.0.1:{tls_worker.grpc_port}"))


def probe(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return err.code


async def test_http_probes_say_alive_and_ready_until_draining(tls_worker: WorkerServer) -> None:
    port = tls_worker.metrics_port
    assert await asyncio.to_thread(probe, port, "/healthz") == 200
    assert await asyncio.to_thread(probe, port, "/readyz") == 200
    assert tls_worker.manager is not None
    tls_worker.manager.draining = True
    assert await asyncio.to_thread(probe, port, "/readyz") == 503
    assert await asyncio.to_thread(probe, port, "/healthz") == 200


def test_tls_settings_must_come_in_pairs(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ConfigError, match="set both or neither"):
        make_config(tmp_path, tls_cert_file=pki.server_chain)
    with pytest.raises(ConfigError, match="tls_client_ca_file"):
        make_config(tmp_path, tls_client_ca_file=pki.client_ca_file)


def test_the_daemon_and_cli_speak_mtls(tmp_path: Path, pki: Pki) -> None:
    client = pki.client_ca.issue_cert("orchestrator.example.test")
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    pki.server_ca.cert_pem.write_to_path(str(tmp_path / "server-ca.pem"))
    flags = (
        "--tls-cert-file", str(pki.server_chain),
        "--tls-key-file", str(pki.server_key),
        "--tls-client-ca-file", str(pki.client_ca_file),
    )  # fmt: skip
    with daemon(tmp_path / "state", *flags) as (_, info):
        target = f"localhost:{info['grpc_port']}"
        answer = cli(
            target,
            "status",
            "--tls-ca", str(tmp_path / "server-ca.pem"),
            "--tls-cert", str(tmp_path / "client.pem"),
            "--tls-key", str(tmp_path / "client.key"),
        )  # fmt: skip
        assert answer["capacity"] >= 1
