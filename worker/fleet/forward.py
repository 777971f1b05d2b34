"""Calls a gateway makes to workers: over the fleet link to a worker that
offers one (worker/fleet/link.py), else over gRPC, one channel per worker
kept while the gateway runs. A worker's refusal comes back as the error it
was there (field and reason apart), so a caller cannot tell a gateway's
answer from a worker's. A worker that does not answer is UNAVAILABLE
naming the worker, never its traceback. Each call is counted by how the
worker answered."""

from __future__ import annotations

from typing import Any

import grpc

from worker.api.rpc import rebuild, refused_on_purpose
from worker.errors import Unavailable, WorkerError
from worker.fleet.link import SERVICES, methods
from worker.fleet.link_client import LinkDown, WorkerLink
from worker.fleet.metrics import GatewayMetrics
from worker.fleet.placement import WorkerView
from worker.pb import sandbox_pb2_grpc as pb_grpc

STUBS: dict[str, Any] = {
    "sessions": pb_grpc.BrowserSessionsStub,
    "browsers": pb_grpc.BrowsersStub,
    "profiles": pb_grpc.BrowserProfilesStub,
    "worker": pb_grpc.WorkerStub,
}


class Forwarder:
    def __init__(self, link_key: bytes, metrics: GatewayMetrics) -> None:
        self._link_key = link_key
        self._metrics = metrics
        self._methods = methods()
        self._links: dict[str, WorkerLink] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[tuple[str, str], Any] = {}

    async def call(
        self,
        worker: WorkerView,
        service: str,
        method: str,
        request: Any,
        timeout: float,
        request_id: str = "",
    ) -> Any:
        code = "CANCELLED"  # the caller gave up before the worker answered
        try:
            if worker.link:
                answer = await self._over_link(
                    worker.link, service, method, request, timeout, request_id
                )
            else:
                answer = await self._over_grpc(
                    worker.grpc, service, method, request, timeout, request_id
                )
            code = "OK"
            return answer
        except WorkerUnreachable:
            code = "UNREACHABLE"
            raise
        except WorkerError as err:
            code = err.code.name
            raise
        except Exception:
            code = "INTERNAL"
            raise
        finally:
            self._metrics.forwarded.labels(method, code).inc()

    async def _over_link(
        self, address: str, service: str, method: str, request: Any, timeout: float, rid: str
    ) -> Any:
        link = self._links.get(address)
        if link is None:
            link = self._links[address] = WorkerLink(address, self._link_key)
        try:
            return await link.call(
                self._methods[f"{SERVICES[service]}/{method}"], request, timeout, rid
            )
        except (LinkDown, TimeoutError):
            raise WorkerUnreachable(address) from None

    async def _over_grpc(
        self, address: str, service: str, method: str, request: Any, timeout: float, rid: str
    ) -> Any:
        stub = self._stub(address, service)
        metadata = (("x-request-id", rid),) if rid else ()
        try:
            return await getattr(stub, method)(request, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as err:
            if refused_on_purpose(err):
                raise rebuild(err) from None  # the worker's own answer
            if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise WorkerUnreachable(address) from None
            raise rebuild(err) from None  # INTERNAL, generic

    def _stub(self, address: str, service: str) -> Any:
        stub = self._stubs.get((address, service))
        if stub is None:
            channel = self._channels.get(address)
            if channel is None:
                channel = grpc.aio.insecure_channel(address)
                self._channels[address] = channel
            stub = STUBS[service](channel)
            self._stubs[(address, service)] = stub
        return stub

    @property
    def addresses(self) -> set[str]:
        """The workers' addresses this gateway keeps a connection to."""
        return {*self._links, *self._channels}

    async def forget(self, addresses: set[str]) -> None:
        """Close the connections to addresses no worker has any more."""
        for address in [a for a in self._links if a not in addresses]:
            await self._links.pop(address).close()
        for address in [a for a in self._channels if a not in addresses]:
            await self._channels.pop(address).close()
            for key in [k for k in self._stubs if k[0] == address]:
                del self._stubs[key]

    async def close(self) -> None:
        for link in self._links.values():
            await link.close()
        for channel in self._channels.values():
            await channel.close()
        self._links.clear()
        self._channels.clear()
        self._stubs.clear()


class WorkerUnreachable(Unavailable):
    """The worker did not answer (its process or machine is gone, or the
    network between): a Start may try another."""

    def __init__(self, address: str) -> None:
        super().__init__("", f"the worker at {address} did not answer; try again")
