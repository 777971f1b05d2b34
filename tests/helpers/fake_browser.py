"""A stand-in for Chromium that speaks just enough CDP over the pipe.

The service layer of the tests points the worker's browser paths at this
script (written out with this interpreter on its first line), so the
session manager and the servicers run their whole logic (capacity, client
tokens, drain, timeouts, the registry and the store) without a real browser:
a start costs a Python process, not a Chromium boot.

It reads commands from fd 3 and answers on fd 4, NUL-terminated JSON as
`--remote-debugging-pipe` does. Every command is answered (an empty result
unless it is one the worker's start needs); `Browser.close` and end of input
end it, as SIGTERM does.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

ANSWERS: dict[str, dict[str, Any]] = {
    "Browser.getVersion": {
        "protocolVersion": "1.3",
        "product": "FakeChrome/0.0",
        "userAgent": "FakeChrome",
        "jsVersion": "0",
    },
    "Target.attachToBrowserTarget": {"sessionId": "fake-browser-session"},
}


def answer(command: dict[str, Any]) -> dict[str, Any]:
    reply: dict[str, Any] = {"id": command.get("id"), "result": ANSWERS.get(command["method"], {})}
    if "sessionId" in command:
        reply["sessionId"] = command["sessionId"]
    return reply


def serve(reader: int, writer: int) -> None:
    pending = b""
    while chunk := os.read(reader, 65536):
        pending += chunk
        *frames, pending = pending.split(b"\0")
        for frame in frames:
            command = json.loads(frame)
            os.write(writer, json.dumps(answer(command)).encode() + b"\0")
            if command.get("method") == "Browser.close":
                return


def script(python: str = sys.executable) -> str:
    """This module as an executable file's text, run by `python`."""
    return f"#!{python}\n" + Path(__file__).read_text()


if __name__ == "__main__":
    serve(3, 4)
