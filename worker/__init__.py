"""sandbox-worker: a daemon that runs isolated headless Chromium sessions.

The gRPC layer lives in `servicer`, session lifecycle and capacity in
`manager` and `session`, Chromium flags and processes in `launcher`, and the
CDP client in `cdp`. Start reading at `server.serve`.
"""

__version__ = "0.1.0"
