"""Requests on the stream ports whose URL does not parse (a target like
`//[x`, or a Host header like `[`, which urlsplit refuses): a worker's
automation port and a gateway's relay refuse them as they refuse any
unknown path or bad signature, not with an error of their own (a 500 and a
traceback in the log, or a dropped connection)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from helpers.handshakes import handshake_status
from helpers.workers import RunningWorker
from worker.fleet.metrics import GatewayMetrics
from worker.fleet.placement import WorkerView
from worker.fleet.relay import StreamRelay, Target

NO_URLS = (b"//[x", b"//[::1/browser-streams/b/sessions/s/automation", b"http://[/")
PRESIGNED = (
    "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20261205%2Fus-east-1"
    "%2Fbedrock-agentcore%2Faws4_request&X-Amz-Date=20261205T000000Z&X-Amz-Expires=300"
    "&X-Amz-SignedHeaders=host&X-Amz-Signature=00"
)


async def test_the_worker_refuses_a_target_that_is_no_url_as_not_found(
    worker: RunningWorker,
) -> None:
    started = await worker.start()
    endpoint = started.streams.automation_stream.stream_endpoint
    port = int(endpoint.split(":")[2].split("/")[0])
    assert [await handshake_status(port, t) for t in NO_URLS] == [b"HTTP/1.1 404 Not Found"] * 3
    signed = (endpoint.split(str(port), 1)[1] + PRESIGNED).encode()
    assert await handshake_status(port, signed, host=b"[") == b"HTTP/1.1 403 Forbidden"


async def test_the_gateway_relay_refuses_a_target_that_is_no_url_as_not_found() -> None:
    unhandled: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, what: unhandled.append(what))
    looked_up: list[str] = []

    # Where a session would be: its worker is never reached in this test.
    worker = WorkerView("w1", "127.0.0.1:9", "", "ws://127.0.0.1:9", 3, 1, 0, {}, False, False, 0)

    async def lookup(session_id: str) -> Target:
        looked_up.append(session_id)
        return Target(worker, True, hashlib.sha256(b"its token").hexdigest())

    metrics = GatewayMetrics()
    relay = StreamRelay(lookup, {"AKID": "secret"}, metrics)
    port = await relay.start("127.0.0.1", 0)
    try:
        answers = [await handshake_status(port, t) for t in NO_URLS]
        signed = b"/browser-streams/b/sessions/S1/automation" + PRESIGNED.encode()
        bad_host = await handshake_status(port, signed, host=b"[")
    finally:
        await relay.stop()
    assert answers == [b"HTTP/1.1 404 Not Found"] * 3
    assert bad_host == b"HTTP/1.1 403 Forbidden"
    assert looked_up == ["S1"] and not unhandled
    refused = lambda reason: metrics.registry.get_sample_value(  # noqa: E731
        "sandbox_automation_refused_total", {"reason": reason}
    )
    assert (refused("not found"), refused("forbidden")) == (3, 1)
