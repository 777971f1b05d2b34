"""`sandbox-worker`: run the daemon, or drive a running one over gRPC.

    sandbox-worker serve [--state-dir DIR] [--grpc-listen H:P] ...
    sandbox-worker gateway [--grpc-listen H:P] ...         (SANDBOX_STORE_URL)
    sandbox-worker fleet [--workers N]                     a local fleet, until Ctrl-C
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from worker import logs, server
from worker.cli.commands import COMMANDS, client_options, runner
from worker.config import Config, ConfigError


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


def _gateway(args: argparse.Namespace) -> int:
    # The store URL holds a password: only the environment, never argv.
    from worker.fleet import gateway

    config = Config.from_env(
        os.environ,
        grpc_listen=args.grpc_listen,
        automation_listen=args.automation_listen,
        http_api_listen=args.http_api_listen,
        metrics_listen=args.metrics_listen,
        public_automation_url=args.public_automation_url,
        log_format=args.log_format,
        log_level=args.log_level,
        ready_file=args.ready_file,
    )
    logs.configure(config.log_format, config.log_level)
    asyncio.run(gateway.serve(config))
    return 0


# ------------------------------------------------------------------- loadtest


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
    client, with_browser = client_options()
    _add_serve(commands)
    _add_gateway(commands)
    _add_fleet(commands)
    _add_client_commands(commands, client, with_browser)
    _add_replay(commands)
    _add_loadtest(commands, with_browser)
    return parser


Subparsers = Any  # argparse's _SubParsersAction, which it does not export


def _add_serve(commands: Subparsers) -> None:
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


def _add_gateway(commands: Subparsers) -> None:
    gateway = commands.add_parser(
        "gateway",
        help="one endpoint for a fleet of workers (SANDBOX_STORE_URL names its store)",
    )
    gateway.add_argument("--grpc-listen", metavar="HOST:PORT")
    gateway.add_argument("--automation-listen", metavar="HOST:PORT")
    gateway.add_argument("--http-api-listen", metavar="HOST:PORT", help="'' to disable")
    gateway.add_argument("--metrics-listen", metavar="HOST:PORT", help="'' to disable")
    gateway.add_argument("--public-automation-url", metavar="URL")
    gateway.add_argument("--log-format", choices=["auto", "json", "console"])
    gateway.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    gateway.add_argument("--ready-file", type=Path, help="write bound addresses here as JSON")
    gateway.set_defaults(run=_gateway)


def _add_fleet(commands: Subparsers) -> None:
    fleet = commands.add_parser(
        "fleet", help="a local fleet: PostgreSQL, N workers and a gateway, until Ctrl-C"
    )
    fleet.add_argument("--workers", type=int, default=3)
    fleet.add_argument("--grpc-listen", default="127.0.0.1:50051", metavar="HOST:PORT")
    fleet.add_argument("--automation-listen", default="127.0.0.1:9223", metavar="HOST:PORT")
    fleet.add_argument("--http-api-listen", default="127.0.0.1:8090", metavar="HOST:PORT")
    fleet.add_argument("--metrics-listen", default="127.0.0.1:9464", metavar="HOST:PORT")
    fleet.set_defaults(run=_fleet)


def _fleet(args: argparse.Namespace) -> int:
    from worker.cli import local_fleet

    flags = [
        "--grpc-listen", args.grpc_listen,
        "--automation-listen", args.automation_listen,
        "--http-api-listen", args.http_api_listen,
        "--metrics-listen", args.metrics_listen,
    ]  # fmt: skip
    return local_fleet.run(args.workers, flags)


def _add_client_commands(
    commands: Subparsers, client: argparse.ArgumentParser, with_browser: argparse.ArgumentParser
) -> None:
    """One sub-command per row of the table in `commands`."""
    groups = {
        "session": commands.add_parser("session", help="start, inspect and stop sessions"),
        "browser": commands.add_parser("browser", help="create and manage browsers"),
        "profile": commands.add_parser(
            "profile", help="browser profiles: saved cookies and local storage"
        ),
    }
    verbs = {
        name: group.add_subparsers(metavar="VERB", required=True) for name, group in groups.items()
    }
    for command in COMMANDS:
        parents = [with_browser if command.with_browser else client]
        where = verbs[command.group] if command.group else commands
        verb = where.add_parser(command.verb, parents=parents, help=command.help or None)
        command.arguments(verb)
        verb.set_defaults(run=runner(command))


def _add_replay(commands: Subparsers) -> None:
    replay = commands.add_parser(
        "replay", help="write (and open) a recording's viewer as one HTML file"
    )
    replay.add_argument("source", help="a session id (this worker's), s3://bucket/key/ or a folder")
    replay.add_argument("--out", default="", metavar="FILE.html")
    replay.add_argument("--open", action="store_true", help="open it in the default browser")
    replay.add_argument("--state-dir", type=Path, help="the worker's state (for a session id)")
    replay.set_defaults(run=_replay)


def _add_loadtest(commands: Subparsers, with_browser: argparse.ArgumentParser) -> None:
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


if __name__ == "__main__":
    sys.exit(main())
