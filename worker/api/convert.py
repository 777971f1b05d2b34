"""Proto messages <-> domain records, in both directions, and nothing else.

Requests come in through `validation` (each field checked once, errors
naming it); answers go out with secret references only, never a secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from worker.api import validation
from worker.api.automation import endpoint_path, live_view_path
from worker.errors import InvalidArgument
from worker.network.routing import ProxyConfig
from worker.pb import sandbox_pb2 as pb
from worker.sessions.manager import ARN_PREFIX
from worker.sessions.model import (
    BrowserConfig,
    PolicyFile,
    ProfileRecord,
    S3Object,
    SessionRecord,
)

FLAVOURS: dict[int, str] = {pb.CHROMIUM: "chromium", pb.HEADLESS_SHELL: "headless-shell"}
FLAVOUR_PB: dict[str, Any] = {name: value for value, name in FLAVOURS.items()}


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def flavour_name(value: int) -> str:
    if value == pb.BROWSER_FLAVOUR_UNSPECIFIED:
        return "chromium"
    if value not in FLAVOURS:
        raise InvalidArgument("flavour", "must be CHROMIUM or HEADLESS_SHELL")
    return FLAVOURS[value]


def certificates_to_pb(arns: Sequence[str]) -> list[pb.Certificate]:
    return [
        pb.Certificate(
            location=pb.CertificateLocation(
                secrets_manager=pb.SecretsManagerLocation(secret_arn=arn)
            )
        )
        for arn in arns
    ]


def certificate_arns(field: str, certificates: Any) -> tuple[str, ...]:
    return validation.certificate_arns(
        field, [c.location.secrets_manager.secret_arn for c in certificates]
    )


def _location(message: Any) -> tuple[str, str, str]:
    s3 = message.location.s3
    return s3.bucket, s3.prefix, s3.version_id


def extensions_from_pb(messages: Any) -> tuple[S3Object, ...]:
    return validation.extensions([_location(m) for m in messages])


def policies_from_pb(field: str, messages: Any) -> tuple[PolicyFile, ...]:
    files = [(pb.PolicyType.Name(m.type), _location(m)) for m in messages]
    return validation.policy_files(field, files)


def _resource(obj: S3Object) -> pb.ResourceLocation:
    return pb.ResourceLocation(
        s3=pb.S3Location(bucket=obj.bucket, prefix=obj.key, version_id=obj.version_id)
    )


def extensions_to_pb(objects: Sequence[S3Object]) -> list[pb.BrowserExtension]:
    return [pb.BrowserExtension(location=_resource(obj)) for obj in objects]


def policies_to_pb(files: Sequence[PolicyFile]) -> list[pb.EnterprisePolicy]:
    return [pb.EnterprisePolicy(location=_resource(f.location), type=f.kind) for f in files]


def proxy_from_pb(message: Any, present: bool) -> ProxyConfig | None:
    proxies = [
        (
            p.external_proxy.server,
            p.external_proxy.port,
            list(p.external_proxy.domain_patterns),
            p.external_proxy.credentials.basic_auth.secret_arn,
        )
        for p in message.proxies
    ]
    return validation.proxy_configuration(proxies, list(message.bypass.domain_patterns), present)


def proxy_to_pb(config: ProxyConfig) -> pb.ProxyConfiguration:
    """The session's routing as given: secret references, never credentials."""
    return pb.ProxyConfiguration(
        proxies=[
            pb.Proxy(
                external_proxy=pb.ExternalProxy(
                    server=p.server,
                    port=p.port,
                    domain_patterns=p.domain_patterns,
                    credentials=pb.ProxyCredentials(
                        basic_auth=pb.BasicAuth(secret_arn=p.secret_ref)
                    )
                    if p.secret_ref
                    else None,
                )
            )
            for p in config.proxies
        ],
        bypass=pb.ProxyBypass(domain_patterns=config.bypass) if config.bypass else None,
    )


def browser_to_pb(browser: BrowserConfig) -> pb.Browser:
    return pb.Browser(
        browser_id=browser.browser_id,
        browser_arn=ARN_PREFIX + browser.browser_id,
        name=browser.name,
        description=browser.description,
        flavour=FLAVOUR_PB[browser.flavour],
        recording=pb.RecordingConfig(
            enabled=browser.recording.enabled,
            s3_location=pb.S3Location(
                bucket=browser.recording.bucket, prefix=browser.recording.prefix
            ),
        ),
        certificates=certificates_to_pb(browser.certificate_arns),
        status=pb.BROWSER_READY,
        created_at=timestamp(browser.created_at),
        last_updated_at=timestamp(browser.updated_at),
        built_in=browser.built_in,
        execution_role_arn=browser.recording.role_arn,
        enterprise_policies=policies_to_pb(browser.policies),
    )


PROFILE_ARN_PREFIX = "arn:aws:bedrock-agentcore:local:000000000000:browser-profile/"


def profile_to_pb(profile: ProfileRecord) -> pb.BrowserProfile:
    answer = pb.BrowserProfile(
        profile_id=profile.profile_id,
        profile_arn=PROFILE_ARN_PREFIX + profile.profile_id,
        name=profile.name,
        description=profile.description,
        status=profile.status,
        created_at=timestamp(profile.created_at),
        last_updated_at=timestamp(profile.updated_at),
        last_saved_browser_session_id=profile.saved_session_id,
        last_saved_browser_id=profile.saved_browser_id,
    )
    if profile.saved_at:
        answer.last_saved_at.CopyFrom(timestamp(profile.saved_at))
    return answer


def session_to_pb(
    record: SessionRecord, token: str, endpoint_base: str, page_base: str
) -> pb.BrowserSession:
    """A session as the API shows it; the token only in Start's answer."""
    endpoint = endpoint_base + endpoint_path(record.browser_id, record.session_id)
    message = pb.BrowserSession(
        browser_identifier=record.browser_id,
        session_id=record.session_id,
        name=record.name,
        created_at=timestamp(record.created_at),
        last_updated_at=timestamp(record.updated_at),
        view_port=pb.ViewPort(width=record.viewport.width, height=record.viewport.height),
        session_timeout_seconds=record.timeout_s,
        status=record.status,
        termination_reason=record.termination_reason or None,
        streams=pb.Streams(
            automation_stream=pb.AutomationStream(
                stream_endpoint=endpoint,
                stream_status=record.stream_status,
                token=token,
            ),
            live_view_stream=pb.LiveViewStream(
                stream_endpoint=page_base + live_view_path(record.browser_id, record.session_id)
            ),
        ),
        flavour=FLAVOUR_PB[record.flavour],
        certificates=certificates_to_pb(record.certificate_arns),
        session_replay_artifact=record.replay_artifact,
        extensions=extensions_to_pb([S3Object(**e) for e in record.extensions]),
        enterprise_policies=policies_to_pb([PolicyFile.from_dict(p) for p in record.policies]),
    )
    if record.profile_id:
        message.profile_configuration.profile_identifier = record.profile_id
    proxy = record.proxy_config
    if proxy is not None:
        message.proxy_configuration.CopyFrom(proxy_to_pb(proxy))
    return message
