"""The Chrome DevTools Protocol, and nothing about sessions: the pipe
transport and client (connection), many clients on one browser
(multiplexer), the screencast a live viewer watches (screencast), and the
actions a person takes at the screen (actions, with key names in keys)."""

from worker.cdp.connection import (
    CDPError,
    Connection,
    ConnectionClosed,
    Message,
    PipeTransport,
)

__all__ = ["CDPError", "Connection", "ConnectionClosed", "Message", "PipeTransport"]
