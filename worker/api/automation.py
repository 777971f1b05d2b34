"""The automation endpoint: CDP over websocket, one URL per session.

`/browser-streams/{browserId}/sessions/{sessionId}/automation`, guarded by
the session's token, sent as `Authorization: Bearer <token>` or, for clients
that cannot set headers, as the query parameter `token`. Clients written for
the hosted service sign the handshake instead, with SigV4 headers (as its
SDK's `generate_ws_headers` does) or, for the live view, a presigned URL
(`X-Amz-*` query parameters, 300 s at most); both are checked against the
HTTP API's access keys. A signature covers the URL's path, so a signature
for one session never opens another. Refusals happen in the HTTP handshake
(404 unknown session, 401 no or wrong token, 403 a bad signature or a
disabled stream), so a refused client never reaches the browser. Tokens are
compared in constant time and never logged.

The same port serves the live view (`worker/live_view.py`): its page at
`.../live-view` and its websocket at `.../live-view/ws`, with the same token.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from worker.api import stream_auth
from worker.cdp import CDPError
from worker.cdp.screencast import Viewer
from worker.sessions.manager import SessionManager
from worker.sessions.model import DISABLED
from worker.sessions.session import Session

log = structlog.get_logger(__name__)


PATH = re.compile(
    r"/browser-streams/([^/]+)/sessions/([^/]+)/(automation|live-view|live-view/ws)/?"
)
LIVE_VIEW_PAGE = (Path(__file__).parent / "live_view.html").read_bytes()


def stream_target(target: str) -> re.Match[str] | None:
    """The stream a request target names (browser, session, kind), or None:
    also for a target that is no URL at all (`//[x`, which urlsplit
    refuses), so that anyone's bad request is a 404, not our error."""
    try:
        path = urlsplit(target).path
    except ValueError:
        return None
    return PATH.fullmatch(path)


def endpoint_path(browser_id: str, session_id: str) -> str:
    return f"/browser-streams/{browser_id}/sessions/{session_id}/automation"


def live_view_path(browser_id: str, session_id: str) -> str:
    return f"/browser-streams/{browser_id}/sessions/{session_id}/live-view"


class AutomationServer:
    def __init__(self, manager: SessionManager, keys: Mapping[str, str]) -> None:
        self._manager = manager
        self._keys = keys  # SigV4 access key id -> secret key
        self._server: Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port."""
        config = self._manager.config
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._authorize,
            max_size=config.max_client_message_bytes,
            # Screenshots are already compressed; deflating them costs CPU
            # on the daemon's loop for nothing.
            compression=None,
            max_queue=64,
        )
        sockname = next(iter(self._server.sockets)).getsockname()
        return int(sockname[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _session_for(self, request: Request) -> tuple[Session | None, str]:
        match = stream_target(request.path)
        if match is None:
            return None, ""
        return self._manager.stream_session(match.group(1), match.group(2)), match.group(3)

    def _authorize(self, connection: ServerConnection, request: Request) -> Response | None:
        session, kind = self._session_for(request)
        if session is None:
            return self._refuse(connection, HTTPStatus.NOT_FOUND, "no such live session")
        refused = self._authenticate(request, session, kind)
        if refused is not None:
            return self._refuse(connection, *refused)
        if kind == "live-view":
            # An ordinary page load, not a websocket: the viewer itself.
            headers = Headers(
                [
                    ("Content-Type", "text/html; charset=utf-8"),
                    ("Cache-Control", "no-store"),
                    ("Referrer-Policy", "no-referrer"),  # the URL holds the token
                    ("Content-Length", str(len(LIVE_VIEW_PAGE))),
                ]
            )
            return Response(200, "OK", headers, LIVE_VIEW_PAGE)
        if kind == "automation" and session.record.stream_status == DISABLED:
            return self._refuse(connection, HTTPStatus.FORBIDDEN, "automation stream disabled")
        return None

    def _authenticate(
        self, request: Request, session: Session, kind: str
    ) -> tuple[HTTPStatus, str] | None:
        """None when the session's token or a SigV4 signature is good."""
        return stream_auth.check(
            request.path,
            request.headers,
            lambda token: stream_auth.matches(token, session.token),
            self._keys,
            kind,
        )

    def _refuse(self, connection: ServerConnection, status: HTTPStatus, why: str) -> Response:
        self._manager.metrics.automation_refused.labels(status.phrase.lower()).inc()
        log.info("automation.refused", status=int(status), reason=why)
        return connection.respond(status, why + "\n")

    async def _handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None  # set once the handshake passed
        session, kind = self._session_for(connection.request)
        if session is None or session.mux is None:
            await connection.close(1011, "session ended")
            return
        if kind == "live-view/ws":
            await self._live_view(connection, session)
            return
        mux = session.mux  # a closed session lets go of it
        session.log.info("automation.connected", clients=len(mux.clients) + 1)
        await mux.serve(connection)
        session.log.info("automation.disconnected", clients=len(mux.clients))

    async def _live_view(self, connection: ServerConnection, session: Session) -> None:
        assert connection.request is not None and session.process is not None
        query = parse_qs(urlsplit(connection.request.path).query)
        read_only = query.get("mode", [""])[0] == "view"
        record = session.record

        def interactive() -> bool:
            return not read_only and record.stream_status == DISABLED

        size = (record.viewport.width, record.viewport.height)
        viewer = Viewer(
            session.process.connection, connection.send, interactive, size, session.in_use
        )
        helpers = [
            asyncio.ensure_future(viewer.pump()),
            asyncio.ensure_future(viewer.follow_control()),
        ]
        self._manager.metrics.live_viewers.inc()
        session.log.info("live_view.connected", read_only=read_only)
        try:
            await viewer.open()
            async for raw in connection:
                await viewer.handle(raw)
        except (CDPError, ConnectionClosed):
            pass  # the browser or the viewer went away
        finally:
            viewer.close()
            for helper in helpers:
                helper.cancel()
            self._manager.metrics.live_viewers.dec()
            session.log.info("live_view.disconnected", frames=viewer.frames)
