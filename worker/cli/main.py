"""`sandbox-worker`: run the daemon, or drive a running one over gRPC.

    sandbox-worker serve [--state-dir DIR] [--grpc-listen H:P] ...
    sandbox-worker session start|get|list|stop|stream ... [--json] [--target H:P]
    sandbox-worker browser create|get|list|delete ...      [--json] [--target H:P]
    sandbox-worker status                                  [--json] [--target H:P]
    sandbox-worker replay SESSION_ID|s3://...|DIR          [--out FILE] [--open]

`--json` prints the API's answer as JSON (camelCase, like the hosted API);
without it a short human summary. Errors go to stderr with the gRPC code,
and the exit status is 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from worker import logs, server
from worker.config import Config, ConfigError
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc
from worker.sessions.model import DEFAULT_BROWSER_ID

DEFAULT_TARGET = "127.0.0.1:50051"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        result: int = args.run(args)
        return result
    except ConfigError as err:
        print(f"sandbox-worker: {err}", file=sys.stderr)
        return 2
    except grpc.RpcError as err:
        print(f"sandbox-worker: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1


# ------------------------------------------------------------------- serve


def _serve(args: argparse.Namespace) -> int:
    config = Config.from_env(
        os.environ,
        state_dir=args.state_dir,
        grpc_listen=args.grpc_listen,
        automation_listen=args.automation_listen,
        metrics_listen=args.metrics_listen,
        http_api_listen=args.http_api_listen,
        warm_pool=tuple(args.warm_pool) if args.warm_pool else None,
        tls_cert_file=args.tls_cert_file,
        tls_key_file=args.tls_key_file,
        tls_client_ca_file=args.tls_client_ca_file,
        public_automation_url=args.public_automation_url,
        max_sessions=args.max_sessions,
        default_flavour=args.default_flavour,
        drain_timeout_s=args.drain_timeout,
        log_format=args.log_format,
        log_level=args.log_level,
        ready_file=args.ready_file,
    )
    logs.configure(config.log_format, config.log_level)
    asyncio.run(server.serve(config))
    return 0


# ------------------------------------------------------------------- clients


def _channel(args: argparse.Namespace) -> grpc.Channel:
    if not args.tls_ca:
        return grpc.insecure_channel(args.target)
    key = Path(args.tls_key).read_bytes() if args.tls_key else None
    chain = Path(args.tls_cert).read_bytes() if args.tls_cert else None
    credentials = grpc.ssl_channel_credentials(Path(args.tls_ca).read_bytes(), key, chain)
    return grpc.secure_channel(args.target, credentials)


def _stubs(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    channel = _channel(args)
    return (
        pb_grpc.BrowserSessionsStub(channel),
        pb_grpc.BrowsersStub(channel),
        pb_grpc.WorkerStub(channel),
    )


def _emit(args: argparse.Namespace, message: Any, human: Callable[[Any], str]) -> int:
    if args.json:
        print(json.dumps(MessageToDict(message), indent=2))
    else:
        print(human(message))
    return 0


def _session_line(s: Any) -> str:
    status = pb.SessionStatus.Name(s.status)
    if s.termination_reason:
        status += f" ({pb.TerminationReason.Name(s.termination_reason)})"
    return f"{s.session_id}  {status:<26} {s.name or '-'}"


def _session_human(s: Any) -> str:
    lines = [_session_line(s), f"  automation: {s.streams.automation_stream.stream_endpoint}"]
    if s.session_replay_artifact:
        lines.append(f"  recording:  {s.session_replay_artifact}")
    if s.streams.automation_stream.token:
        lines.append(f"  token:      {s.streams.automation_stream.token}")
    return "\n".join(lines)


def _session_start(args: argparse.Namespace) -> int:
    sessions, _, _ = _stubs(args)
    request = pb.StartBrowserSessionRequest(
        browser_identifier=args.browser,
        name=args.name,
        session_timeout_seconds=args.timeout,
        client_token=args.client_token,
    )
    if args.viewport:
        width, _, height = args.viewport.partition("x")
        if not (width.isdigit() and height.isdigit()):
            raise ConfigError("--viewport: expected WIDTHxHEIGHT, e.g. 1280x720")
        request.view_port.CopyFrom(pb.ViewPort(width=int(width), height=int(height)))
    return _emit(args, sessions.StartBrowserSession(request), _session_human)


def _session_get(args: argparse.Namespace) -> int:
    sessions, _, _ = _stubs(args)
    request = pb.GetBrowserSessionRequest(browser_identifier=args.browser, session_id=args.id)
    return _emit(args, sessions.GetBrowserSession(request), _session_human)


def _session_list(args: argparse.Namespace) -> int:
    sessions, _, _ = _stubs(args)
    request = pb.ListBrowserSessionsRequest(
        browser_identifier=args.browser,
        max_results=args.max_results,
        next_token=args.next_token,
        status=args.status or None,
    )
    answer = sessions.ListBrowserSessions(request)
    return _emit(
        args,
        answer,
        lambda a: (
            "\n".join([_session_line(s) for s in a.items] or ["(no sessions)"])
            + (f"\nnext: {a.next_token}" if a.next_token else "")
        ),
    )


def _session_stop(args: argparse.Namespace) -> int:
    sessions, _, _ = _stubs(args)
    request = pb.StopBrowserSessionRequest(browser_identifier=args.browser, session_id=args.id)
    return _emit(args, sessions.StopBrowserSession(request), _session_line)


def _session_stream(args: argparse.Namespace) -> int:
    sessions, _, _ = _stubs(args)
    status = pb.ENABLED if args.state == "enable" else pb.DISABLED
    request = pb.UpdateBrowserStreamRequest(
        browser_identifier=args.browser,
        session_id=args.id,
        stream_update=pb.StreamUpdate(
            automation_stream_update=pb.AutomationStreamUpdate(stream_status=status)
        ),
    )
    return _emit(args, sessions.UpdateBrowserStream(request), _session_human)


def _browser_line(b: Any) -> str:
    return f"{b.browser_id}  {pb.BrowserFlavour.Name(b.flavour):<15} {b.description}"


def _browser_create(args: argparse.Namespace) -> int:
    _, browsers, _ = _stubs(args)
    request = pb.CreateBrowserRequest(
        name=args.name,
        description=args.description,
        flavour=args.flavour.upper().replace("-", "_"),
        execution_role_arn=args.execution_role_arn,
    )
    if args.record_bucket:
        request.recording.enabled = True
        request.recording.s3_location.bucket = args.record_bucket
        request.recording.s3_location.prefix = args.record_prefix
    return _emit(args, browsers.CreateBrowser(request), _browser_line)


def _browser_get(args: argparse.Namespace) -> int:
    _, browsers, _ = _stubs(args)
    return _emit(args, browsers.GetBrowser(pb.GetBrowserRequest(browser_id=args.id)), _browser_line)


def _browser_list(args: argparse.Namespace) -> int:
    _, browsers, _ = _stubs(args)
    answer = browsers.ListBrowsers(pb.ListBrowsersRequest(max_results=args.max_results))
    return _emit(args, answer, lambda a: "\n".join(_browser_line(b) for b in a.browsers))


def _browser_delete(args: argparse.Namespace) -> int:
    _, browsers, _ = _stubs(args)
    request = pb.DeleteBrowserRequest(browser_id=args.id)
    return _emit(args, browsers.DeleteBrowser(request), _browser_line)


def _status(args: argparse.Namespace) -> int:
    _, _, worker = _stubs(args)
    answer = worker.GetWorkerStatus(pb.GetWorkerStatusRequest())
    return _emit(
        args,
        answer,
        lambda s: (
            f"{s.worker_id} v{s.version}: {s.sessions_in_use}/{s.capacity} sessions"
            + (" (draining)" if s.draining else "")
        ),
    )


def _loadtest(args: argparse.Namespace) -> int:
    from worker.cli import loadtest  # its imports are only for this command

    options = loadtest.Options(
        target=args.target,
        concurrency=args.concurrency,
        sessions=args.sessions,
        duration_s=args.duration,
        url=args.url,
        browser_id=args.browser,
        metrics_url=args.metrics,
        progress=not args.quiet,
        record_bucket=args.record,
    )
    if options.concurrency < 1 or options.duration_s <= 0:
        raise ConfigError("--concurrency and --duration: must be positive")
    result = asyncio.run(loadtest.run(options))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.chart:
        loadtest.chart(result, Path(args.chart))
    summary = {k: v for k, v in result.items() if k != "timeline"}
    print(json.dumps(summary) if args.json else _loadtest_human(summary))
    return 0 if result["succeeded"] else 1


def _loadtest_human(r: dict[str, Any]) -> str:
    start, whole = r["start_ms"], r["scenario_ms"]
    lines = [
        f"{r['succeeded']}/{r['sessions']} sessions in {r['duration_s']} s "
        f"at concurrency {r['concurrency']}: {r['sessions_per_s']} sessions/s",
        f"start -> first CDP answer: p50 {start.get('p50')} p95 {start.get('p95')} "
        f"p99 {start.get('p99')} ms",
        f"whole scenario: p50 {whole.get('p50')} p95 {whole.get('p95')} ms",
    ]
    if r["failures"]:
        lines.append("failures: " + ", ".join(f"{k} x{v}" for k, v in r["failures"].items()))
    if r["worker"]:
        lines.append("worker: " + ", ".join(f"{k} {v}" for k, v in r["worker"].items()))
    return "\n".join(lines)


# ------------------------------------------------------------------- replay


def _replay(args: argparse.Namespace) -> int:
    from recorder import replay  # the viewer needs nothing of the daemon

    source = args.source
    if not (source.startswith(("s3://", "file://")) or Path(source).is_dir()):
        source = _artifact(args.state_dir, source)
    s3 = None
    if source.startswith("s3://"):
        import boto3

        endpoint = os.environ.get("SANDBOX_S3_ENDPOINT_URL") or None
        s3 = boto3.client("s3", endpoint_url=endpoint)
    try:
        meta, events = replay.load(source, s3)
    except replay.NotARecording as err:
        print(f"sandbox-worker: {err}", file=sys.stderr)
        return 1
    name = meta.get("sessionId") or Path(source.rstrip("/")).name
    out = Path(args.out or f"replay-{name}.html")
    out.write_text(replay.render(meta, events), encoding="utf-8")
    print(out)
    if args.open:
        import webbrowser

        webbrowser.open(out.resolve().as_uri())
    return 0


def _artifact(state_dir: Path | None, session_id: str) -> str:
    """A session's recording folder, from the worker's state."""
    from worker.sessions.store import Store

    config = Config.from_env(os.environ, state_dir=state_dir)
    if not config.db_path.exists():
        raise ConfigError(f"state_dir: no worker state at {config.state_dir}")
    store = Store(config.db_path)
    try:
        record = store.get_session(session_id)
    finally:
        store.close()
    if record is None:
        raise ConfigError(f"source: no session '{session_id}' in {config.state_dir}")
    if not record.replay_artifact:
        raise ConfigError(f"source: session '{session_id}' was not recorded")
    return record.replay_artifact


# ------------------------------------------------------------------- parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sandbox-worker", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the daemon (settings: SANDBOX_* env)")
    serve.add_argument("--state-dir", type=Path)
    serve.add_argument("--grpc-listen", metavar="HOST:PORT")
    serve.add_argument("--automation-listen", metavar="HOST:PORT")
    serve.add_argument("--metrics-listen", metavar="HOST:PORT", help="'' to disable /metrics")
    serve.add_argument(
        "--http-api-listen", metavar="HOST:PORT", help="the hosted API over HTTP; '' to disable"
    )
    serve.add_argument("--public-automation-url", metavar="URL")
    serve.add_argument("--max-sessions", type=int)
    serve.add_argument(
        "--warm-pool", nargs="+", metavar="FLAVOUR=N", help="browsers launched ahead of demand"
    )
    serve.add_argument("--default-flavour", choices=["chromium", "headless-shell"])
    serve.add_argument("--drain-timeout", type=float, metavar="SECONDS")
    serve.add_argument("--log-format", choices=["auto", "json", "console"])
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--ready-file", type=Path, help="write bound addresses here as JSON")
    serve.add_argument("--tls-cert-file", type=Path, help="gRPC server certificate chain")
    serve.add_argument("--tls-key-file", type=Path, help="gRPC server key")
    serve.add_argument("--tls-client-ca-file", type=Path, help="require client certificates")
    serve.set_defaults(run=_serve)

    client = argparse.ArgumentParser(add_help=False)
    client.add_argument(
        "--target", default=os.environ.get("SANDBOX_TARGET", DEFAULT_TARGET), metavar="H:P"
    )
    client.add_argument("--json", action="store_true", help="print the answer as JSON")
    tls = {"ca": "CA that signed the worker's certificate", "cert": "client chain (mTLS)"}
    for name, text in {**tls, "key": "client key (mTLS)"}.items():
        env = f"SANDBOX_CLIENT_TLS_{name.upper()}"
        client.add_argument(
            f"--tls-{name}", default=os.environ.get(env, ""), help=f"{text}; ${env}"
        )
    with_browser = argparse.ArgumentParser(add_help=False, parents=[client])
    with_browser.add_argument("--browser", default=DEFAULT_BROWSER_ID, metavar="BROWSER_ID")

    session = commands.add_parser("session", help="start, inspect and stop sessions")
    verbs = session.add_subparsers(metavar="VERB", required=True)
    start = verbs.add_parser("start", parents=[with_browser])
    start.add_argument("--name", default="")
    start.add_argument("--timeout", type=int, default=0, metavar="SECONDS")
    start.add_argument("--viewport", metavar="WxH")
    start.add_argument("--client-token", default="")
    start.set_defaults(run=_session_start)
    for name, run in (("get", _session_get), ("stop", _session_stop)):
        verb = verbs.add_parser(name, parents=[with_browser])
        verb.add_argument("id", metavar="SESSION_ID")
        verb.set_defaults(run=run)
    listing = verbs.add_parser("list", parents=[with_browser])
    listing.add_argument("--status", choices=["READY", "TERMINATED"])
    listing.add_argument("--max-results", type=int, default=0)
    listing.add_argument("--next-token", default="")
    listing.set_defaults(run=_session_list)
    stream = verbs.add_parser("stream", parents=[with_browser], help="enable/disable automation")
    stream.add_argument("id", metavar="SESSION_ID")
    stream.add_argument("state", choices=["enable", "disable"])
    stream.set_defaults(run=_session_stream)

    browser = commands.add_parser("browser", help="create and manage browsers")
    bverbs = browser.add_subparsers(metavar="VERB", required=True)
    create = bverbs.add_parser("create", parents=[client])
    create.add_argument("name")
    create.add_argument("--flavour", choices=["chromium", "headless-shell"], default="chromium")
    create.add_argument("--description", default="")
    create.add_argument("--record-bucket", default="", help="record sessions to this bucket")
    create.add_argument("--record-prefix", default="", help="key prefix for recordings")
    create.add_argument("--execution-role-arn", default="", help="write recordings as this role")
    create.set_defaults(run=_browser_create)
    for name, run in (("get", _browser_get), ("delete", _browser_delete)):
        verb = bverbs.add_parser(name, parents=[client])
        verb.add_argument("id", metavar="BROWSER_ID")
        verb.set_defaults(run=run)
    blist = bverbs.add_parser("list", parents=[client])
    blist.add_argument("--max-results", type=int, default=0)
    blist.set_defaults(run=_browser_list)

    status = commands.add_parser("status", parents=[client], help="capacity and drain state")
    status.set_defaults(run=_status)

    replay = commands.add_parser(
        "replay", help="write (and open) a recording's viewer as one HTML file"
    )
    replay.add_argument("source", help="a session id (this worker's), s3://bucket/key/ or a folder")
    replay.add_argument("--out", default="", metavar="FILE.html")
    replay.add_argument("--open", action="store_true", help="open it in the default browser")
    replay.add_argument("--state-dir", type=Path, help="the worker's state (for a session id)")
    replay.set_defaults(run=_replay)

    load = commands.add_parser(
        "loadtest", parents=[with_browser], help="run sessions against a worker and measure"
    )
    load.add_argument("--concurrency", type=int, default=2, metavar="N")
    load.add_argument("--sessions", type=int, default=20, metavar="M", help="0: until --duration")
    load.add_argument("--duration", type=float, default=60.0, metavar="SECONDS")
    load.add_argument("--url", default="", help="page to load (default: one served here)")
    load.add_argument("--metrics", default="", metavar="URL", help="the worker's /metrics")
    load.add_argument("--out", default="", metavar="FILE.json", help="full report with timeline")
    load.add_argument("--chart", default="", metavar="FILE.png", help="latency and throughput")
    load.add_argument("--quiet", action="store_true", help="no progress bar")
    load.add_argument("--record", default="", metavar="BUCKET", help="record every session")
    load.set_defaults(run=_loadtest)
    return parser


if __name__ == "__main__":
    sys.exit(main())
