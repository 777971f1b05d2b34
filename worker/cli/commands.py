"""The gRPC client commands (`session ...`, `browser ...`, `status`), as one
table: each row names its group and verb, its arguments, the call it makes,
how it builds the request from the arguments, and how a person reads the
answer. `--json` prints the answer as JSON (camelCase, like the hosted API);
without it, the row's summary."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError

from worker.config import ConfigError
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc
from worker.sessions.model import DEFAULT_BROWSER_ID

DEFAULT_TARGET = "127.0.0.1:50051"
STUBS: dict[str, Callable[[grpc.Channel], Any]] = {
    "sessions": pb_grpc.BrowserSessionsStub,
    "browsers": pb_grpc.BrowsersStub,
    "worker": pb_grpc.WorkerStub,
    "profiles": pb_grpc.BrowserProfilesStub,
}


# ------------------------------------------------------------------- answers


def session_line(s: Any) -> str:
    status = pb.SessionStatus.Name(s.status)
    if s.termination_reason:
        status += f" ({pb.TerminationReason.Name(s.termination_reason)})"
    return f"{s.session_id}  {status:<26} {s.name or '-'}"


def session_summary(s: Any) -> str:
    lines = [session_line(s), f"  automation: {s.streams.automation_stream.stream_endpoint}"]
    if s.session_replay_artifact:
        lines.append(f"  recording:  {s.session_replay_artifact}")
    if s.streams.automation_stream.token:
        lines.append(f"  token:      {s.streams.automation_stream.token}")
    return "\n".join(lines)


def session_list(a: Any) -> str:
    lines = [session_line(s) for s in a.items] or ["(no sessions)"]
    return "\n".join(lines) + (f"\nnext: {a.next_token}" if a.next_token else "")


def invoke_summary(a: Any) -> str:
    line = f"{a.action}: {pb.ActionStatus.Name(a.status)}"
    if a.error:
        line += f" ({a.error})"
    if a.data:
        line += f"\n  {len(a.data)} bytes of PNG (--json carries them, base64, in 'data')"
    return line


def profile_line(p: Any) -> str:
    saved = p.last_saved_at.ToJsonString() if p.HasField("last_saved_at") else "never saved"
    return f"{p.profile_id}  {p.status:<8} {saved}  {p.description}"


def profile_list(a: Any) -> str:
    lines = [profile_line(p) for p in a.profile_summaries] or ["(no profiles)"]
    return "\n".join(lines) + (f"\nnext: {a.next_token}" if a.next_token else "")


def _profile_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="PROFILE_ID")


def _profile_create_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")
    parser.add_argument("--description", default="")


def _profile_list_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="")
    parser.add_argument("--max-results", type=int, default=0)
    parser.add_argument("--next-token", default="")


def _profile_save_args(parser: argparse.ArgumentParser) -> None:
    _profile_id(parser)
    parser.add_argument("session", metavar="SESSION_ID")


def browser_line(b: Any) -> str:
    return f"{b.browser_id}  {pb.BrowserFlavour.Name(b.flavour):<15} {b.description}"


def browser_list(a: Any) -> str:
    return "\n".join(browser_line(b) for b in a.browsers)


def worker_status(s: Any) -> str:
    draining = " (draining)" if s.draining else ""
    return f"{s.worker_id} v{s.version}: {s.sessions_in_use}/{s.capacity} sessions{draining}"


# ------------------------------------------------------------------- requests


def start_request(args: argparse.Namespace) -> Any:
    request = pb.StartBrowserSessionRequest(
        browser_identifier=args.browser,
        name=args.name,
        session_timeout_seconds=args.timeout,
        client_token=args.client_token,
    )
    if args.profile:
        request.profile_configuration.CopyFrom(
            pb.ProfileConfiguration(profile_identifier=args.profile)
        )
    request.extensions.extend(
        pb.BrowserExtension(location=_s3_location("--extension", uri)) for uri in args.extension
    )
    request.enterprise_policies.extend(_policies(args.policy))
    if args.viewport:
        width, _, height = args.viewport.partition("x")
        if not (width.isdigit() and height.isdigit()):
            raise ConfigError("--viewport: expected WIDTHxHEIGHT, e.g. 1280x720")
        request.view_port.CopyFrom(pb.ViewPort(width=int(width), height=int(height)))
    return request


def _s3_location(option: str, uri: str) -> Any:
    """s3://BUCKET/KEY, optionally ?versionId=V, as a ResourceLocation."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise ConfigError(f"{option}: expected s3://BUCKET/KEY, got {uri!r}")
    version = urllib.parse.parse_qs(parsed.query).get("versionId", [""])[0]
    return pb.ResourceLocation(
        s3=pb.S3Location(bucket=parsed.netloc, prefix=parsed.path[1:], version_id=version)
    )


def _policies(values: list[str]) -> list[Any]:
    """KIND=s3://BUCKET/KEY.json each (KIND: managed or recommended)."""
    files = []
    for value in values:
        kind, _, uri = value.partition("=")
        if kind.upper() not in ("MANAGED", "RECOMMENDED"):
            raise ConfigError("--policy: expected managed=s3://... or recommended=s3://...")
        location = _s3_location("--policy", uri)
        files.append(pb.EnterprisePolicy(location=location, type=kind.upper()))
    return files


def stream_request(args: argparse.Namespace) -> Any:
    status = pb.ENABLED if args.state == "enable" else pb.DISABLED
    return pb.UpdateBrowserStreamRequest(
        browser_identifier=args.browser,
        session_id=args.id,
        stream_update=pb.StreamUpdate(
            automation_stream_update=pb.AutomationStreamUpdate(stream_status=status)
        ),
    )


def create_request(args: argparse.Namespace) -> Any:
    request = pb.CreateBrowserRequest(
        name=args.name,
        description=args.description,
        flavour=args.flavour.upper().replace("-", "_"),
        execution_role_arn=args.execution_role_arn,
    )
    request.enterprise_policies.extend(_policies(args.policy))
    if args.record_bucket:
        request.recording.enabled = True
        request.recording.s3_location.bucket = args.record_bucket
        request.recording.s3_location.prefix = args.record_prefix
    return request


# ------------------------------------------------------------------- the table

Arguments = Callable[[argparse.ArgumentParser], None]


@dataclasses.dataclass(frozen=True)
class Command:
    group: str  # "" for a top-level command
    verb: str
    stub: str  # a key of STUBS
    rpc: str
    request: Callable[[argparse.Namespace], Any]
    summary: Callable[[Any], str]
    arguments: Arguments = lambda _parser: None
    with_browser: bool = False  # takes --browser (default the built-in one)
    help: str = ""


def _session_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="SESSION_ID")


def _browser_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="BROWSER_ID")


def _start_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="")
    parser.add_argument("--timeout", type=int, default=0, metavar="SECONDS")
    parser.add_argument("--viewport", metavar="WxH")
    parser.add_argument("--client-token", default="")
    parser.add_argument("--profile", default="", metavar="PROFILE_ID", help="start with its state")
    parser.add_argument(
        "--extension",
        action="append",
        default=[],
        metavar="s3://BUCKET/KEY.zip",
        help="load this extension (repeatable; full Chromium only)",
    )
    _policy_arg(parser, "this session's")


def _policy_arg(parser: argparse.ArgumentParser, whose: str) -> None:
    parser.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="KIND=s3://BUCKET/KEY.json",
        help=f"{whose} Chromium policies; KIND managed or recommended (repeatable)",
    )


def _list_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", choices=["READY", "TERMINATED"])
    parser.add_argument("--max-results", type=int, default=0)
    parser.add_argument("--next-token", default="")


def _stream_args(parser: argparse.ArgumentParser) -> None:
    _session_id(parser)
    parser.add_argument("state", choices=["enable", "disable"])


def _invoke_args(parser: argparse.ArgumentParser) -> None:
    _session_id(parser)
    parser.add_argument(
        "action",
        metavar="ACTION_JSON",
        help="one action as the hosted API writes it, e.g. "
        '\'{"mouseClick": {"x": 100, "y": 200}}\' or \'{"screenshot": {}}\'',
    )


def invoke_request(args: argparse.Namespace) -> Any:
    try:
        action = ParseDict(json.loads(args.action), pb.BrowserAction())
    except (ValueError, ParseError) as exc:
        raise ConfigError(f"ACTION_JSON: {exc}") from None
    return pb.InvokeBrowserRequest(
        browser_identifier=args.browser, session_id=args.id, action=action
    )


def _create_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")
    parser.add_argument("--flavour", choices=["chromium", "headless-shell"], default="chromium")
    parser.add_argument("--description", default="")
    parser.add_argument("--record-bucket", default="", help="record sessions to this bucket")
    parser.add_argument("--record-prefix", default="", help="key prefix for recordings")
    parser.add_argument("--execution-role-arn", default="", help="write recordings as this role")
    _policy_arg(parser, "every session's")


def _max_results(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-results", type=int, default=0)


COMMANDS = (
    Command(
        "session", "start", "sessions", "StartBrowserSession",
        start_request, session_summary, _start_args, with_browser=True,
    ),
    Command(
        "session", "get", "sessions", "GetBrowserSession",
        lambda a: pb.GetBrowserSessionRequest(browser_identifier=a.browser, session_id=a.id),
        session_summary, _session_id, with_browser=True,
    ),
    Command(
        "session", "list", "sessions", "ListBrowserSessions",
        lambda a: pb.ListBrowserSessionsRequest(
            browser_identifier=a.browser,
            max_results=a.max_results,
            next_token=a.next_token,
            status=a.status or None,
        ),
        session_list, _list_args, with_browser=True,
    ),
    Command(
        "session", "stop", "sessions", "StopBrowserSession",
        lambda a: pb.StopBrowserSessionRequest(browser_identifier=a.browser, session_id=a.id),
        session_line, _session_id, with_browser=True,
    ),
    Command(
        "session", "stream", "sessions", "UpdateBrowserStream",
        stream_request, session_summary, _stream_args, with_browser=True,
        help="enable/disable automation",
    ),
    Command(
        "session", "invoke", "sessions", "InvokeBrowser",
        invoke_request, invoke_summary, _invoke_args, with_browser=True,
        help="click, type, press keys or take a screenshot (InvokeBrowser)",
    ),
    Command(
        "browser", "create", "browsers", "CreateBrowser",
        create_request, browser_line, _create_args,
    ),
    Command(
        "browser", "get", "browsers", "GetBrowser",
        lambda a: pb.GetBrowserRequest(browser_id=a.id), browser_line, _browser_id,
    ),
    Command(
        "browser", "list", "browsers", "ListBrowsers",
        lambda a: pb.ListBrowsersRequest(max_results=a.max_results), browser_list, _max_results,
    ),
    Command(
        "browser", "delete", "browsers", "DeleteBrowser",
        lambda a: pb.DeleteBrowserRequest(browser_id=a.id), browser_line, _browser_id,
    ),
    Command(
        "profile", "create", "profiles", "CreateBrowserProfile",
        lambda a: pb.CreateBrowserProfileRequest(name=a.name, description=a.description),
        profile_line, _profile_create_args,
    ),
    Command(
        "profile", "get", "profiles", "GetBrowserProfile",
        lambda a: pb.GetBrowserProfileRequest(profile_id=a.id), profile_line, _profile_id,
    ),
    Command(
        "profile", "list", "profiles", "ListBrowserProfiles",
        lambda a: pb.ListBrowserProfilesRequest(
            name=a.name, max_results=a.max_results, next_token=a.next_token
        ),
        profile_list, _profile_list_args,
    ),
    Command(
        "profile", "delete", "profiles", "DeleteBrowserProfile",
        lambda a: pb.DeleteBrowserProfileRequest(profile_id=a.id), profile_line, _profile_id,
    ),
    Command(
        "profile", "save", "sessions", "SaveBrowserSessionProfile",
        lambda a: pb.SaveBrowserSessionProfileRequest(
            profile_identifier=a.id, browser_identifier=a.browser, session_id=a.session
        ),
        lambda a: f"{a.profile_identifier} saved from {a.session_id}",
        _profile_save_args, with_browser=True,
        help="a session's cookies and local storage replace the profile's",
    ),
    Command(
        "", "status", "worker", "GetWorkerStatus",
        lambda _a: pb.GetWorkerStatusRequest(), worker_status, help="capacity and drain state",
    ),
)  # fmt: skip


# ------------------------------------------------------------------- running one


def client_options() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The options every client command takes, and those plus --browser."""
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
    return client, with_browser


def channel(args: argparse.Namespace) -> grpc.Channel:
    if not args.tls_ca:
        return grpc.insecure_channel(args.target)
    key = Path(args.tls_key).read_bytes() if args.tls_key else None
    chain = Path(args.tls_cert).read_bytes() if args.tls_cert else None
    credentials = grpc.ssl_channel_credentials(Path(args.tls_ca).read_bytes(), key, chain)
    return grpc.secure_channel(args.target, credentials)


def runner(command: Command) -> Callable[[argparse.Namespace], int]:
    """Stub -> request -> answer, printed: the same for every command."""

    def run(args: argparse.Namespace) -> int:
        request = command.request(args)
        with channel(args) as open_channel:
            stub = STUBS[command.stub](open_channel)
            answer = getattr(stub, command.rpc)(request)
        if args.json:
            print(json.dumps(MessageToDict(answer), indent=2))
        else:
            print(command.summary(answer))
        return 0

    return run
