"""Proxy routing end to end: real Chromium, the worker's relay, tinyproxy,
squid with Basic auth, Secrets Manager on moto_server, loopback origins.

Which way each request went is read from the proxies' own access logs and
from what the origin saw (`Via` names the proxy; no `Via` means direct).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from playwright.async_api import Page

from helpers.daemon import daemon
from helpers.faults import report_fault
from helpers.routes import external, load, routing
from helpers.upstreams import (
    HOST_OVERRIDES,
    PROXY_PASSWORD,
    PROXY_USER,
    FlakyHTTP,
    Origin,
    Proxy,
    SecretsManager,
    TLSOrigin,
    free_port,
    unique_path,
)
from helpers.waits import eventually
from helpers.workers import (
    RunningWorker,
    browser_root,
    connected_page,
    make_config,
    running_worker,
    session_page,
    session_processes,
)
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc

SECRET_FILE = "squid-credentials"
ORIGIN_CA = "origin-ca"
TRUST_ORIGIN = [
    pb.Certificate(
        location=pb.CertificateLocation(
            secrets_manager=pb.SecretsManagerLocation(secret_arn=f"file:{ORIGIN_CA}")
        )
    )
]


@pytest.fixture
def secrets_dir(tmp_path: Path, tls_origin: TLSOrigin) -> Path:
    path = tmp_path / "secrets"
    path.mkdir()
    body = json.dumps({"username": PROXY_USER, "password": PROXY_PASSWORD})
    (path / SECRET_FILE).write_text(body)
    (path / ORIGIN_CA).write_text(tls_origin.ca.cert_pem.bytes().decode())
    return path


@pytest.fixture
def worker(routed_worker: RunningWorker) -> RunningWorker:
    return routed_worker


@contextlib.asynccontextmanager
async def proxied_page(
    worker: RunningWorker, proxy: pb.ProxyConfiguration | None, **fields: Any
) -> AsyncIterator[tuple[Page, Any]]:
    async with session_page(worker, proxy_configuration=proxy, **fields) as opened:
        yield opened


@pytest.mark.parametrize("flavour", [pb.CHROMIUM, pb.HEADLESS_SHELL])
async def test_requests_follow_bypass_then_first_pattern_then_default(
    worker: RunningWorker,
    origin: Origin,
    tls_origin: TLSOrigin,
    tinyproxy: Proxy,
    squid: Proxy,
    moto: SecretsManager,
    flavour: int,
) -> None:
    arn = moto.put_credentials(f"route-{flavour}", PROXY_USER, PROXY_PASSWORD)
    created = await worker.browsers.CreateBrowser(
        pb.CreateBrowserRequest(name=f"route{flavour}", flavour=flavour)
    )
    proxy = routing(
        external(tinyproxy, ("api.company.test",)),
        external(squid, (".company.test",), secret=arn),
        external(tinyproxy),  # the default
        bypass=("www.example.test",),
    )
    paths = {name: unique_path(name) for name in ("first", "second", "default", "bypass", "tls")}
    async with proxied_page(
        worker, proxy, browser_identifier=created.browser_id, certificates=TRUST_ORIGIN
    ) as (page, _):
        for name, host in (
            ("first", "api.company.test"),
            ("second", "other.company.test"),
            ("default", "web.example.test"),
            ("bypass", "www.example.test"),
        ):
            status, body = await load(page, origin.url(host, paths[name]))
            assert status == 200 and f"{host}{paths[name]}" in body
        status, _ = await load(page, tls_origin.url("secure.company.test", paths["tls"]))
        assert status == 200

    # First match wins: api.company.test matches both; tinyproxy is first.
    assert "tinyproxy" in origin.requests_for(paths["first"])[0].via
    assert tinyproxy.log_lines(paths["first"]) and not squid.log_lines(paths["first"])
    # The second proxy's pattern, with the secret's user, credentials added
    # by the relay (and not passed on to the origin).
    second = origin.requests_for(paths["second"])[0]
    assert "squid" in second.via and not second.proxy_authorization
    assert any(f" {PROXY_USER} " in line for line in squid.log_lines(paths["second"]))
    # No pattern matched: the default proxy.
    assert "tinyproxy" in origin.requests_for(paths["default"])[0].via
    # Bypass goes direct: no proxy saw it.
    assert origin.requests_for(paths["bypass"])[0].via == ""
    assert not tinyproxy.log_lines(paths["bypass"]) and not squid.log_lines(paths["bypass"])
    # HTTPS goes through CONNECT on the pattern's proxy, authenticated.
    tunnel = f"CONNECT secure.company.test:{tls_origin.server.port}"
    assert any(f" {PROXY_USER} " in line for line in squid.wait_lines(tunnel))
    assert tls_origin.server.requests_for(paths["tls"])


async def test_hosts_no_pattern_matches_go_direct_when_there_is_no_default(
    worker: RunningWorker, origin: Origin, tinyproxy: Proxy
) -> None:
    proxy = routing(external(tinyproxy, (".company.test",)))
    direct, routed = unique_path("direct"), unique_path("routed")
    async with proxied_page(worker, proxy) as (page, _):
        assert (await load(page, origin.url("web.example.test", direct)))[0] == 200
        assert (await load(page, origin.url("api.company.test", routed)))[0] == 200
    assert origin.requests_for(direct)[0].via == "" and not tinyproxy.log_lines(direct)
    assert "tinyproxy" in origin.requests_for(routed)[0].via


@pytest.mark.parametrize("route", ["proxy", "direct"])
async def test_request_bodies_and_kept_alive_requests_pass_intact(
    worker: RunningWorker, origin: Origin, tinyproxy: Proxy, route: str
) -> None:
    patterns = ("nothing.invalid",) if route == "direct" else ()
    async with proxied_page(worker, routing(external(tinyproxy, patterns))) as (page, _):
        await load(page, origin.url("web.example.test", unique_path()))
        answers = await page.evaluate(
            """async () => {
                const body = new Uint8Array(3 * 1024 * 1024).map((_, i) => i % 251);
                const answers = [];
                for (let i = 0; i < 5; i++) {
                    const r = await fetch('/post/' + i, {method: 'POST', body});
                    answers.push(await r.text());
                }
                return answers;
            }"""
        )
    body = bytes(i % 251 for i in range(3 * 1024 * 1024))
    assert answers == [f"{len(body)} {hashlib.sha256(body).hexdigest()}"] * 5


async def test_wrong_credentials_show_a_407_once_and_are_counted(
    worker: RunningWorker,
    origin: Origin,
    tls_origin: TLSOrigin,
    squid: Proxy,
    moto: SecretsManager,
) -> None:
    arn = moto.put_credentials("wrong-password", PROXY_USER, "not-the-password")
    path = unique_path("denied")
    # The headless shell makes no background requests of its own, so the
    # page's request is the first the proxy refuses.
    shell = await worker.browsers.CreateBrowser(
        pb.CreateBrowserRequest(name="shell", flavour=pb.HEADLESS_SHELL)
    )
    proxy = routing(external(squid, secret=arn))
    async with proxied_page(worker, proxy, browser_identifier=shell.browser_id) as (
        page,
        started,
    ):
        for _ in range(3):
            status, body = await load(page, origin.url("web.example.test", path))
            assert status == 407
            assert "rejected the session's credentials" in body
        with pytest.raises(Exception, match="ERR_PROXY_AUTH_UNSUPPORTED"):
            await page.goto(tls_origin.url("secure.company.test", path), timeout=15000)
        assert worker.server.relay is not None
        stats = await worker.server.relay.stats(started.session_id)
    # Every refused request is counted (favicons may add more)...
    assert stats["0"]["auth_failures"] >= 4
    # ...but after the first rejection the relay answers itself: the proxy
    # saw one failed login for the page, none for its reloads or the tunnel.
    assert len([line for line in squid.log_lines(path) if "/407 " in line]) == 1
    tunnel = f"CONNECT secure.company.test:{tls_origin.server.port}"
    assert not [line for line in squid.log_lines(tunnel) if "/407 " in line]
    assert not origin.requests_for(path)


async def test_credentials_from_a_mounted_file_authenticate(
    worker: RunningWorker, origin: Origin, squid: Proxy
) -> None:
    path = unique_path("file")
    proxy = routing(external(squid, secret=f"file:{SECRET_FILE}"))
    async with proxied_page(worker, proxy) as (page, _):
        assert (await load(page, origin.url("web.example.test", path)))[0] == 200
    assert any(f" {PROXY_USER} " in line for line in squid.log_lines(path))


async def test_concurrent_sessions_keep_their_own_routes_and_credentials(
    worker: RunningWorker, origin: Origin, tinyproxy: Proxy, squid: Proxy
) -> None:
    authed = routing(external(squid, secret=f"file:{SECRET_FILE}"))
    open_route = routing(external(tinyproxy))
    path_a, path_b = unique_path("a"), unique_path("b")
    async with (
        proxied_page(worker, authed) as (page_a, _),
        proxied_page(worker, open_route) as (page_b, _),
    ):
        results = await asyncio.gather(
            load(page_a, origin.url("web.example.test", path_a)),
            load(page_b, origin.url("web.example.test", path_b)),
        )
        assert [status for status, _ in results] == [200, 200]
    assert squid.log_lines(path_a) and not tinyproxy.log_lines(path_a)
    assert tinyproxy.log_lines(path_b) and not squid.log_lines(path_b)
    assert not origin.requests_for(path_b)[0].proxy_authorization


async def test_a_page_cannot_reach_another_sessions_relay(
    worker: RunningWorker, origin: Origin, squid: Proxy
) -> None:
    authed = routing(external(squid, (".company.test",), secret=f"file:{SECRET_FILE}"))
    direct_only = routing(external(squid, ("nothing.invalid",)))
    async with (
        proxied_page(worker, authed) as (_, started_a),
        proxied_page(worker, direct_only) as (page_b, _),
    ):
        manager = worker.server.manager
        assert manager is not None
        port_a = manager.live[started_a.session_id].proxy_port
        status, body = await load(page_b, f"http://127.0.0.1:{port_a}/")
    assert status == 403 and "does not connect to itself" in body


async def test_an_unreachable_proxy_shows_an_error_page_and_is_counted(
    worker: RunningWorker, origin: Origin
) -> None:
    dead = Proxy(free_port(), Path("/nonexistent"))
    async with proxied_page(worker, routing(external(dead))) as (page, started):
        status, body = await load(page, origin.url("web.example.test", unique_path()))
        assert status == 502 and "cannot reach upstream" in body
        assert worker.server.relay is not None
        stats = await worker.server.relay.stats(started.session_id)
    assert stats["0"]["errors"] >= 1  # the page, and any background request


async def test_get_returns_the_routing_with_secret_references_only(
    worker: RunningWorker, tinyproxy: Proxy, squid: Proxy
) -> None:
    proxy = routing(
        external(squid, (".company.test",), secret=f"file:{SECRET_FILE}"),
        external(tinyproxy),
        bypass=("www.example.test",),
    )
    started = await worker.start(proxy_configuration=proxy)
    got = await worker.get(started.session_id)
    assert got.proxy_configuration == proxy
    assert started.proxy_configuration == proxy
    await worker.stop(started.session_id)


@pytest.mark.parametrize(
    ("secret", "code", "detail"),
    [
        ("missing", grpc.StatusCode.FAILED_PRECONDITION, "does not exist"),
        ("not json", grpc.StatusCode.INVALID_ARGUMENT, "must hold JSON"),
        ("colon", grpc.StatusCode.INVALID_ARGUMENT, "password must be"),
    ],
)
async def test_a_bad_secret_fails_the_start_and_leaves_nothing(
    worker: RunningWorker,
    moto: SecretsManager,
    tinyproxy: Proxy,
    secret: str,
    code: grpc.StatusCode,
    detail: str,
) -> None:
    hidden = "hunter2:with-colon"
    if secret == "missing":
        arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:absent-AbCdEf"
    elif secret == "not json":
        arn = moto.put(f"bad-{os.getpid()}-json", f"user {hidden}")
    else:
        arn = moto.put_credentials(f"bad-{os.getpid()}-colon", PROXY_USER, hidden)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await worker.start(proxy_configuration=routing(external(tinyproxy, secret=arn)))
    assert caught.value.code() == code
    message = caught.value.details() or ""
    assert detail in message and arn in message and "hunter2" not in message
    assert "credentials.basic_auth.secret_arn" in message
    manager = worker.server.manager
    assert manager is not None and manager.in_use == 0
    assert not list(worker.config.sessions_dir.iterdir())
    listed = await worker.sessions.ListBrowserSessions(pb.ListBrowserSessionsRequest())
    assert not listed.items


async def test_secrets_manager_failing_at_start_is_unavailable_and_leaves_nothing(
    tmp_path: Path, moto: SecretsManager, tinyproxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = moto.put_credentials(f"outage-{os.getpid()}", PROXY_USER, "hunter2-outage")
    # Every request to Secrets Manager answered 503/500 by the injector;
    # moto behind it keeps the secret.
    flaky = FlakyHTTP(int(moto.endpoint.rsplit(":", 1)[1]), fail_every=1)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", f"http://127.0.0.1:{flaky.port}")
    try:
        async with running_worker(make_config(tmp_path)) as worker:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await worker.start(proxy_configuration=routing(external(tinyproxy, secret=arn)))
            manager = worker.server.manager
            assert manager is not None and manager.in_use == 0
            assert not list(worker.config.sessions_dir.iterdir())
            assert not session_processes(worker.config.state_dir, "")
            listed = await worker.sessions.ListBrowserSessions(pb.ListBrowserSessionsRequest())
            assert not listed.items
            monkeypatch.delenv("AWS_ENDPOINT_URL_SECRETS_MANAGER")
    finally:
        flaky.close()
    assert flaky.failed >= 2  # botocore retried before giving up
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    message = caught.value.details() or ""
    assert "credentials.basic_auth.secret_arn" in message and arn in message
    assert "try again" in message and "hunter2" not in message
    report_fault(
        "Secrets Manager answers every request 500/503 during StartBrowserSession",
        f"UNAVAILABLE naming the field, after {flaky.failed} tries; no session, process or"
        " directory left",
        "n/a",
        "nothing started, the secret never logged",
    )


async def test_a_relay_that_dies_comes_back_with_every_listener(
    worker: RunningWorker, origin: Origin, tinyproxy: Proxy
) -> None:
    relay = worker.server.relay
    assert relay is not None
    async with proxied_page(worker, routing(external(tinyproxy))) as (page, _):
        first_pid = relay.pid
        os.kill(first_pid, 9)

        async def routed_again() -> bool:
            if relay.pid == first_pid:
                return False
            with contextlib.suppress(Exception):
                path = unique_path("again")
                await load(page, origin.url("web.example.test", path))
                return bool(tinyproxy.log_lines(path))
            return False

        assert await eventually(routed_again, timeout=15)
    assert relay.restarts == 1
    report_fault(
        "proxy relay process SIGKILLed mid-session",
        "relay restarted with every listener on its old port; the page routes again",
        "the session itself kept",
        "n/a",
    )


async def test_sessions_without_a_proxy_never_touch_the_relay(
    worker: RunningWorker, origin: Origin
) -> None:
    path = unique_path("plain")
    async with proxied_page(worker, None) as (page, started):
        assert (await load(page, origin.url("web.example.test", path)))[0] == 200
        manager = worker.server.manager
        assert manager is not None and manager.live[started.session_id].proxy_port == 0
    assert origin.requests_for(path)[0].via == ""


def secret_needles() -> list[bytes]:
    """The password, and the header value that would carry it."""
    token = base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode())
    return [PROXY_PASSWORD.encode(), token]


def process_view(pid: int) -> dict[str, bytes]:
    """What any local user may read of a process: its argv and environment."""
    view = {}
    for name in ("cmdline", "environ"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            view[f"process {pid} {name}"] = Path(f"/proc/{pid}/{name}").read_bytes()
    return view


def files_under(root: Path) -> Iterator[tuple[Path, bytes]]:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 50_000_000:
            with contextlib.suppress(OSError):
                yield path, path.read_bytes()


async def test_the_password_is_in_no_log_response_state_file_or_browser_process(
    tmp_path: Path, origin: Origin, squid: Proxy, moto: SecretsManager
) -> None:
    arn = moto.put_credentials("leak-check", PROXY_USER, PROXY_PASSWORD)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "creds").write_text(json.dumps({"username": PROXY_USER, "password": PROXY_PASSWORD}))
    state = tmp_path / "state"
    env = {
        "SANDBOX_HOST_OVERRIDES": " ".join(HOST_OVERRIDES),
        "SANDBOX_SECRETS_DIR": str(secrets),
    }
    seen: dict[str, bytes] = {}
    tokens: list[bytes] = []
    with daemon(state, "--log-level", "debug", env=env) as (proc, info):
        seen.update(process_view(info["relay_pid"]))
        async with grpc.aio.insecure_channel(info["grpc"]) as channel:
            sessions = pb_grpc.BrowserSessionsStub(channel)
            for secret in (arn, "file:creds"):
                started = await sessions.StartBrowserSession(
                    pb.StartBrowserSessionRequest(
                        proxy_configuration=routing(external(squid, secret=secret))
                    )
                )
                sid = started.session_id
                tokens.append(started.streams.automation_stream.token.encode())
                path = unique_path("leak")
                async with connected_page(started) as page:
                    assert (await load(page, origin.url("web.example.test", path)))[0] == 200
                    pids = session_processes(state.resolve(), sid)
                    assert pids
                    for pid in pids:
                        seen.update(process_view(pid))
                    for tree in (state / "sessions" / sid, browser_root(state, sid)):
                        for file, body in files_under(tree):
                            seen[str(file)] = body
                assert squid.log_lines(path), "the request did not go through squid"
                got = await sessions.GetBrowserSession(pb.GetBrowserSessionRequest(session_id=sid))
                listed = await sessions.ListBrowserSessions(pb.ListBrowserSessionsRequest())
                stopped = await sessions.StopBrowserSession(
                    pb.StopBrowserSessionRequest(session_id=sid)
                )
                for label, message in (
                    ("start", started),
                    ("get", got),
                    ("list", listed),
                    ("stop", stopped),
                ):
                    seen[f"{label} response {sid}"] = message.SerializeToString()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    seen["daemon log"] = (tmp_path / "daemon.log").read_bytes()
    for file, body in files_under(state):
        seen[str(file)] = body
    assert b"relay" in seen["daemon log"] or b"session.proxy_traffic" in seen["daemon log"]
    assert len([k for k in seen if k.startswith("process ")]) >= 6
    for needle in secret_needles():
        leaks = [where for where, body in seen.items() if needle in body]
        assert not leaks, f"the credentials leaked into {leaks}"
    # Automation tokens belong in Start's answer only: not in the log, the
    # state files or a browser process.
    for token in tokens:
        places = [where for where, body in seen.items() if token in body]
        assert len(places) == 1 and places[0].startswith("start response "), places
