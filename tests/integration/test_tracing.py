"""Trace context: a caller's traceparent and X-Amzn-Trace-Id on Start and
Stop become the parent of the worker's spans, exported over OTLP/HTTP to a
collector (here a loopback server that decodes what it receives), and ride
on the session's log lines and its recording's metadata."""

from __future__ import annotations

import contextlib
import http.server
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from helpers.daemon import cli, daemon
from helpers.hosted import client, keys_file
from helpers.workers import make_config, running_worker
from worker.cli.loopback import serving
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"
AMZN = "Root=1-67891233-abcdef012345678912345678"


@contextlib.contextmanager
def collector() -> Iterator[tuple[str, list[Any]]]:
    """An OTLP/HTTP trace endpoint on loopback; yields its URL and the spans."""
    spans: list[Any] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                export = ExportTraceServiceRequest.FromString(body)
                for resource in export.resource_spans:
                    for scope in resource.scope_spans:
                        spans.extend(scope.spans)
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serving(Receiver) as url:
        yield url, spans


def test_start_and_stop_spans_are_children_of_the_callers_trace(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with (
        collector() as (endpoint, spans),
        daemon(state, env={"SANDBOX_OTLP_ENDPOINT": endpoint}) as (proc, info),
    ):
        if True:
            browser = cli(info["grpc"], "browser", "create", "traced", "--record-bucket", "recs")
            with grpc.insecure_channel(info["grpc"]) as channel:
                sessions = pb_grpc.BrowserSessionsStub(channel)
                started = sessions.StartBrowserSession(
                    pb.StartBrowserSessionRequest(
                        browser_identifier=browser["browserId"],
                        trace_id=AMZN,
                        trace_parent=TRACEPARENT,
                    )
                )
                sessions.StopBrowserSession(
                    pb.StopBrowserSessionRequest(
                        browser_identifier=browser["browserId"],
                        session_id=started.session_id,
                        trace_parent=TRACEPARENT,
                    )
                )
                with pytest.raises(grpc.RpcError) as bad:
                    sessions.StartBrowserSession(
                        pb.StartBrowserSessionRequest(trace_parent="00-nothex-01")
                    )
                assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "trace_parent: must be a W3C traceparent" in str(bad.value.details())
            proc.send_signal(signal.SIGTERM)  # flushes the spans on the way out
            assert proc.wait(30) == 0
    named = {span.name: span for span in spans}
    for name in ("StartBrowserSession", "StopBrowserSession"):
        span = named[name]
        assert span.trace_id.hex() == TRACE and span.parent_span_id.hex() == PARENT, name
        attributes = {a.key: a.value.string_value for a in span.attributes}
        assert attributes["session_id"] == started.session_id
    start_attributes = {
        a.key: a.value.string_value for a in named["StartBrowserSession"].attributes
    }
    assert start_attributes["aws.xray.trace_id"] == AMZN
    # The session's log lines and its recording's metadata carry both.
    lines = [json.loads(line) for line in (tmp_path / "daemon.log").read_text().splitlines()]
    mine = [line for line in lines if line.get("session_id") == started.session_id]
    missing = {line["event"] for line in mine if line.get("trace_parent") != TRACEPARENT}
    assert mine and not missing, missing
    [metadata] = list(state.rglob(f"{started.session_id}/metadata.json"))
    meta = json.loads(metadata.read_text())
    assert (meta["traceId"], meta["traceParent"]) == (AMZN, TRACEPARENT)


async def test_boto3_sends_the_trace_context_as_headers_and_it_is_kept(tmp_path: Path) -> None:
    config = make_config(tmp_path, http_api_keys_file=keys_file(tmp_path))
    async with running_worker(config) as api:
        data = client(api, "bedrock-agentcore")
        started = await data.start_browser_session(
            browserIdentifier="aws.browser.v1", traceId=AMZN, traceParent=TRACEPARENT
        )
        live = api.server.manager.live[started["sessionId"]]
        assert (live.record.trace_id, live.record.trace_parent) == (AMZN, TRACEPARENT)
        await data.stop_browser_session(
            browserIdentifier="aws.browser.v1",
            sessionId=started["sessionId"],
            traceParent=TRACEPARENT,
        )
