"""Proxy configuration as pure logic: patterns, precedence, limits, secrets."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from worker.api import validation
from worker.errors import FailedPrecondition, InvalidArgument
from worker.network.routing import DIRECT, ProxyConfig, ProxyServer, matches, normalise_pattern
from worker.sessions import secret_resolver
from worker.sessions.model import StartRequest, Viewport
from worker.sessions.secret_resolver import SecretResolver, is_reference

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:proxy-AbCdEf"


def config(*proxies: tuple[str, ...], bypass: tuple[str, ...] = ()) -> ProxyConfig:
    return ProxyConfig(
        proxies=tuple(ProxyServer(f"p{i}", 3128, patterns) for i, patterns in enumerate(proxies)),
        bypass=bypass,
    )


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        (".example.com", "example.com", True),
        (".example.com", "a.b.example.com", True),
        (".example.com", "notexample.com", False),
        ("example.com", "example.com", True),
        ("example.com", "www.example.com", False),
        (".Example.COM", "WWW.example.com", True),
        ("example.com:8443", "example.com", True),
    ],
)
def test_patterns_match_a_domain_or_one_host(pattern: str, host: str, expected: bool) -> None:
    assert matches(normalise_pattern(pattern), host.lower()) is expected


def test_bypass_wins_over_every_proxy() -> None:
    routes = config((".example.com",), (), bypass=("www.example.com",))
    assert routes.route("www.example.com") == DIRECT
    assert routes.route("api.example.com") == 0


def test_the_first_matching_proxy_wins_in_array_order() -> None:
    routes = config(("api.example.com",), (".example.com",))
    assert routes.route("api.example.com") == 0
    assert routes.route("web.example.com") == 1


def test_unmatched_hosts_take_the_default_proxy_wherever_it_sits() -> None:
    routes = config((), (".example.com",))
    assert routes.route("other.test") == 0
    assert routes.route("a.example.com") == 1


def test_unmatched_hosts_go_direct_without_a_default() -> None:
    assert config((".example.com",)).route("other.test") == DIRECT


def test_hosts_match_case_insensitively_and_without_a_trailing_dot() -> None:
    assert config((".example.com",)).route("API.Example.com.") == 0


def test_a_configuration_survives_its_stored_form() -> None:
    routes = ProxyConfig(
        (ProxyServer("proxy.corp", 8080, (".corp",), "file:creds"),), bypass=("a.corp",)
    )
    assert ProxyConfig.from_dict(json.loads(json.dumps(routes.to_dict()))) == routes


# ------------------------------------------------------------- validation


def validate(*proxies: Any, bypass: tuple[str, ...] = ()) -> ProxyConfig | None:
    return validation.proxy_configuration(list(proxies), list(bypass), True)


def rejected(*proxies: Any, bypass: tuple[str, ...] = ()) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        validate(*proxies, bypass=bypass)
    return caught.value


def test_no_configuration_means_direct() -> None:
    assert validation.proxy_configuration([], [], False) is None


def test_a_valid_configuration_is_kept_as_given() -> None:
    got = validate(("proxy.corp", 3128, [".corp"], ARN), ("http://10.0.0.2", 80, [], ""))
    assert got is not None
    assert got.proxies[0] == ProxyServer("proxy.corp", 3128, (".corp",), ARN)
    assert got.proxies[1].server == "10.0.0.2" and got.proxies[1].is_default


@pytest.mark.parametrize(
    ("proxies", "bypass", "field", "reason"),
    [
        ([], (), "proxy_configuration.proxies", "between 1 and 5"),
        ([("p", 80, [f"h{i}.test"], "") for i in range(6)], (), "proxies", "between 1 and 5"),
        ([("p", 80, [], ""), ("q", 80, [], "")], (), "proxies", "at most one proxy"),
        ([("p", 0, [], "")], (), "proxies[0].external_proxy.port", "between 1 and 65535"),
        ([("p", 65536, [], "")], (), "external_proxy.port", "between 1 and 65535"),
        ([("", 80, [], "")], (), "external_proxy.server", "is required"),
        ([("a" * 254, 80, [], "")], (), "external_proxy.server", "at most 253"),
        ([("socks5://p", 1080, [], "")], (), "external_proxy.server", "socks5:// proxies"),
        ([("ftp://p", 21, [], "")], (), "external_proxy.server", "ftp:// is not supported"),
        ([("p:3128", 80, [], "")], (), "external_proxy.server", "the port goes in 'port'"),
        ([("p", 80, ["*.example.com"], "")], (), "domain_patterns[0]", "use '.example.com'"),
        ([("p", 80, ["a" * 254], "")], (), "domain_patterns[0]", "at most 253"),
        ([("p", 80, [""], "")], (), "domain_patterns[0]", "must not be empty"),
        ([("p", 80, ["bad host"], "")], (), "domain_patterns[0]", "host name"),
        ([("p", 80, [f"h{i}.t" for i in range(101)], "")], (), "patterns", "at most 100"),
        ([("p", 80, [], "")], tuple(f"h{i}.t" for i in range(101)), "bypass", "at most 100"),
        ([("p", 80, [], "")], ("*.corp",), "bypass.domain_patterns[0]", "use '.corp'"),
        ([("p", 80, [], "not-an-arn")], (), "basic_auth.secret_arn", "Secrets Manager"),
        ([("p", 80, [], "file:../etc/shadow")], (), "basic_auth.secret_arn", "file:NAME"),
    ],
)
def test_each_limit_is_refused_naming_its_field(
    proxies: list[Any], bypass: tuple[str, ...], field: str, reason: str
) -> None:
    err = rejected(*proxies, bypass=bypass)
    assert field in err.field and reason in err.reason


def test_a_fingerprint_changes_with_the_routing() -> None:
    base = StartRequest("b", "", 60, Viewport(800, 600), "t" * 40)
    one = StartRequest("b", "", 60, Viewport(800, 600), "t" * 40, validate(("p", 80, [], "")))
    two = StartRequest("b", "", 60, Viewport(800, 600), "t" * 40, validate(("q", 80, [], "")))
    assert len({base.fingerprint(), one.fingerprint(), two.fingerprint()}) == 3


# ------------------------------------------------------------- credentials


def test_good_credentials_become_a_basic_header() -> None:
    header = secret_resolver.basic_credentials(
        "f", ARN, json.dumps({"username": "svc.user@corp", "password": "p4ss-word!"})
    )
    assert header == "Basic " + base64.b64encode(b"svc.user@corp:p4ss-word!").decode()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "must hold JSON"),
        (json.dumps(["user", "pw"]), "must hold JSON"),
        (json.dumps({"username": "u"}), "must hold JSON"),
        (json.dumps({"username": "u:x", "password": "pw"}), "username must be"),
        (json.dumps({"username": "u x", "password": "pw"}), "username must be"),
        (json.dumps({"username": "u", "password": "a:b"}), "password must be"),
        (json.dumps({"username": "u", "password": 'a"b'}), "password must be"),
        (json.dumps({"username": "u", "password": "a\nb"}), "password must be"),
        (json.dumps({"username": "u", "password": ""}), "password must be"),
    ],
)
def test_malformed_credentials_are_refused_without_their_content(text: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        secret_resolver.basic_credentials("field.secret_arn", ARN, text)
    assert reason in caught.value.reason and ARN in caught.value.reason
    for secret in ("pw", "a:b", "u:x"):
        assert secret not in caught.value.message.replace(ARN, "")


# ------------------------------------------------------------- file secrets


def test_references_are_arns_or_plain_file_names() -> None:
    assert is_reference(ARN) and is_reference("file:proxy/creds")
    for bad in ("file:/etc/passwd", "file:../x", "file:a/../b", "file:.hidden", "arn:aws:s3:::b"):
        assert not is_reference(bad)


async def test_a_file_secret_is_read_from_the_secrets_dir(tmp_path: Path) -> None:
    (tmp_path / "creds").write_text("value")
    assert await SecretResolver(tmp_path, 1.0).fetch("f", "file:creds") == "value"


async def test_a_symlink_out_of_the_secrets_dir_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("host secret")
    inside = tmp_path / "secrets"
    inside.mkdir()
    (inside / "link").symlink_to(outside)
    with pytest.raises(FailedPrecondition, match="outside the worker's secrets_dir"):
        await SecretResolver(inside, 1.0).fetch("f", "file:link")


async def test_a_missing_file_secret_names_the_reference(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="f: secret 'file:absent' does not exist"):
        await SecretResolver(tmp_path, 1.0).fetch("f", "file:absent")


async def test_file_secrets_need_a_secrets_dir() -> None:
    with pytest.raises(FailedPrecondition, match="no secrets_dir"):
        await SecretResolver(None, 1.0).fetch("f", "file:creds")
