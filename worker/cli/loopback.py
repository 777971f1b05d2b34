"""A web server on 127.0.0.1, on a port the kernel picks: the page the load
generator's sessions load, and the pages the tests serve from a directory.

Its threads are daemons and it never logs, so a browser stopped in the
middle of a request (the normal end of a session under load) is not an
error worth a line.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # sessions open their connections at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a browser stopped mid-request


@contextlib.contextmanager
def serving(handler: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve with `handler` (a request handler class or factory) on `host`
    (a loopback address) until the block ends; yields the base URL, without
    a trailing slash."""
    server = _Server((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def serving_directory(directory: Path) -> contextlib.AbstractContextManager[str]:
    """Serve the files under `directory`."""
    return serving(functools.partial(QuietHandler, directory=str(directory)))


def serving_bytes(
    body: bytes, content_type: str = "text/html"
) -> contextlib.AbstractContextManager[str]:
    """Serve `body` at every path."""

    class OnePage(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(ConnectionError):  # a browser killed mid-request
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return serving(OnePage)
