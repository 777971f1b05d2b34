"""Property tests over every RPC's request space (hypothesis), against a
real daemon: any request is answered OK or with a client-side code and a
message, never INTERNAL or UNKNOWN, and no browser outlives the requests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.daemon import daemon
from helpers.workers import browser_root
from worker.browser import reaper
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

CLIENT_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
}
FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "aws.browser.v1", "x" * 300, "a-b", "ok_name", "*.example.com"]),
)
numbers = st.one_of(
    st.integers(min_value=-(2**31), max_value=2**31 - 1), st.sampled_from([0, 1, 320, 3840])
)
secret_refs = st.sampled_from(["", "file:missing", "not-an-arn", "file:../etc/passwd", "file:"])
proxies = st.builds(
    lambda server, port, patterns, ref: pb.Proxy(
        external_proxy=pb.ExternalProxy(
            server=server,
            port=port,
            domain_patterns=patterns,
            credentials=pb.ProxyCredentials(basic_auth=pb.BasicAuth(secret_arn=ref)),
        )
    ),
    texts,
    numbers,
    st.lists(texts, max_size=3),
    secret_refs,
)
certificates = st.lists(
    secret_refs.map(
        lambda ref: pb.Certificate(
            location=pb.CertificateLocation(
                secrets_manager=pb.SecretsManagerLocation(secret_arn=ref)
            )
        )
    ),
    max_size=12,
)


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state = tmp_path_factory.mktemp("fuzz") / "state"
    # Secrets Manager answers nothing here: a refused connection, at once.
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "SANDBOX_SECRET_TIMEOUT_S": "2"}
    with (
        daemon(state, "--max-sessions", "2", env={**env}) as (_, info),
        grpc.insecure_channel(info["grpc"]) as channel,
    ):
        yield {
            "state": state,
            "browsers": pb_grpc.BrowsersStub(channel),
            "sessions": pb_grpc.BrowserSessionsStub(channel),
        }


def answer(call: Any, request: Any) -> tuple[grpc.StatusCode, Any]:
    try:
        return grpc.StatusCode.OK, call(request, timeout=30)
    except grpc.RpcError as err:
        code, details = err.code(), err.details() or ""
        assert code in CLIENT_CODES, f"{code}: {details}"
        assert details and "Traceback" not in details
        return code, details


def no_browser_left(stubs: dict[str, Any]) -> None:
    """Stop answers once the browser exited; the sweep of its helpers
    (crashpad) follows within moments."""
    runtime = browser_root(Path(stubs["state"]))
    deadline = time.monotonic() + 10
    while (left := reaper.pids_referencing(runtime)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left


VALID_START: dict[str, st.SearchStrategy[Any]] = {
    "browser": st.sampled_from(["", "aws.browser.v1"]),
    "name": st.sampled_from(["", "fuzzed"]),
    "timeout": st.sampled_from([0, 60]),
    "width": st.just(0),
    "height": st.just(0),
    "token": st.just(""),
    "routes": st.just([]),
    "bypass": st.just([]),
    "certs": st.just([]),
}
FUZZED_START: dict[str, st.SearchStrategy[Any]] = {
    "browser": texts,
    "name": texts,
    "timeout": numbers,
    "width": numbers,
    "height": numbers,
    "token": texts,
    "routes": st.lists(proxies, max_size=6),
    "bypass": st.lists(texts, max_size=3),
    "certs": certificates,
}


@st.composite
def start_fields(draw: Any) -> dict[str, Any]:
    """A valid request with none, one or several fields fuzzed: random
    requests alone are almost never valid, and valid ones start browsers."""
    broken = draw(st.sets(st.sampled_from(sorted(FUZZED_START)), max_size=3))
    return {
        name: draw(FUZZED_START[name] if name in broken else VALID_START[name])
        for name in FUZZED_START
    }


@FUZZ
@given(fields=start_fields())
def test_any_start_request_is_answered_with_a_client_code_and_leaves_nothing(
    stubs: dict[str, Any], fields: dict[str, Any]
) -> None:
    request = pb.StartBrowserSessionRequest(
        browser_identifier=fields["browser"],
        name=fields["name"],
        session_timeout_seconds=fields["timeout"],
        client_token=fields["token"],
        certificates=fields["certs"],
    )
    if fields["width"] or fields["height"]:  # an unset view port is the default
        request.view_port.CopyFrom(pb.ViewPort(width=fields["width"], height=fields["height"]))
    if fields["routes"] or fields["bypass"]:
        request.proxy_configuration.CopyFrom(
            pb.ProxyConfiguration(
                proxies=fields["routes"],
                bypass=pb.ProxyBypass(domain_patterns=fields["bypass"]),
            )
        )
    code, started = answer(stubs["sessions"].StartBrowserSession, request)
    if code == grpc.StatusCode.OK:
        stop = pb.StopBrowserSessionRequest(
            browser_identifier=started.browser_identifier, session_id=started.session_id
        )
        stubs["sessions"].StopBrowserSession(stop, timeout=30)
    no_browser_left(stubs)


@FUZZ
@given(
    name=texts,
    description=texts,
    flavour=numbers,
    enabled=st.booleans(),
    bucket=texts,
    prefix=texts,
    role=st.one_of(texts, st.just("arn:aws:iam::123456789012:role/r")),
    certs=certificates,
    token=texts,
)
def test_any_create_browser_request_is_answered_with_a_client_code(
    stubs: dict[str, Any], **fields: Any
) -> None:
    request = pb.CreateBrowserRequest(
        name=fields["name"],
        description=fields["description"],
        flavour=fields["flavour"],
        recording=pb.RecordingConfig(
            enabled=fields["enabled"],
            s3_location=pb.S3Location(bucket=fields["bucket"], prefix=fields["prefix"]),
        ),
        certificates=fields["certs"],
        client_token=fields["token"],
        execution_role_arn=fields["role"],
    )
    code, created = answer(stubs["browsers"].CreateBrowser, request)
    if code == grpc.StatusCode.OK:
        delete = pb.DeleteBrowserRequest(browser_id=created.browser_id)
        stubs["browsers"].DeleteBrowser(delete, timeout=30)


@FUZZ
@given(browser=texts, session=texts, token=texts, status=numbers, limit=numbers, next_token=texts)
def test_get_list_stop_and_update_answer_any_identifiers_with_a_client_code(
    stubs: dict[str, Any], **f: Any
) -> None:
    sessions, browsers = stubs["sessions"], stubs["browsers"]
    answer(
        sessions.GetBrowserSession,
        pb.GetBrowserSessionRequest(browser_identifier=f["browser"], session_id=f["session"]),
    )
    answer(
        sessions.ListBrowserSessions,
        pb.ListBrowserSessionsRequest(
            browser_identifier=f["browser"],
            max_results=f["limit"],
            next_token=f["next_token"],
            status=f["status"],
        ),
    )
    answer(
        sessions.StopBrowserSession,
        pb.StopBrowserSessionRequest(
            browser_identifier=f["browser"], session_id=f["session"], client_token=f["token"]
        ),
    )
    answer(
        sessions.UpdateBrowserStream,
        pb.UpdateBrowserStreamRequest(
            browser_identifier=f["browser"],
            session_id=f["session"],
            stream_update=pb.StreamUpdate(
                automation_stream_update=pb.AutomationStreamUpdate(stream_status=f["status"])
            ),
            client_token=f["token"],
        ),
    )
    answer(browsers.GetBrowser, pb.GetBrowserRequest(browser_id=f["browser"]))
    answer(
        browsers.ListBrowsers,
        pb.ListBrowsersRequest(max_results=f["limit"], next_token=f["next_token"]),
    )
    answer(browsers.DeleteBrowser, pb.DeleteBrowserRequest(browser_id=f["browser"]))
    no_browser_left(stubs)


def test_the_fuzzed_daemon_is_still_healthy(stubs: dict[str, Any]) -> None:
    code, started = answer(stubs["sessions"].StartBrowserSession, pb.StartBrowserSessionRequest())
    assert code == grpc.StatusCode.OK
    stubs["sessions"].StopBrowserSession(
        pb.StopBrowserSessionRequest(
            browser_identifier=started.browser_identifier, session_id=started.session_id
        ),
        timeout=30,
    )
    no_browser_left(stubs)
