"""Identifiers and configuration: pure logic."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from worker import ids
from worker.config import ENV_PREFIX, Config, ConfigError


def test_session_ids_fit_the_hosted_pattern_and_sort_by_creation_time() -> None:
    earlier = ids.new_session_id(now_ms=1_700_000_000_000)
    later = ids.new_session_id(now_ms=1_700_000_000_001)
    assert re.fullmatch(r"[0-9a-zA-Z]{1,40}", earlier) and len(earlier) == 26
    assert earlier < later


def test_browser_ids_are_the_name_plus_ten_alphanumerics() -> None:
    assert re.fullmatch(r"shop_bot-[a-zA-Z0-9]{10}", ids.new_browser_id("shop_bot"))


def test_tokens_are_unique_and_long() -> None:
    tokens = {ids.new_token() for _ in range(200)}
    assert len(tokens) == 200
    assert all(len(t) >= 43 for t in tokens)


def test_config_reads_prefixed_environment_and_flags_win() -> None:
    config = Config.from_env(
        {"SANDBOX_MAX_SESSIONS": "7", "SANDBOX_STATE_DIR": "/x", "SANDBOX_DRAIN_TIMEOUT_S": "2.5"},
        state_dir=Path("/y"),
    )
    assert config.max_sessions == 7
    assert config.drain_timeout_s == 2.5
    assert config.state_dir == Path("/y")


def test_config_names_the_variable_it_cannot_parse() -> None:
    with pytest.raises(ConfigError, match="SANDBOX_MAX_SESSIONS"):
        Config.from_env({"SANDBOX_MAX_SESSIONS": "many"})


def test_config_refuses_a_client_message_limit_that_would_wedge_the_pipe() -> None:
    with pytest.raises(ConfigError, match="max_client_message_bytes"):
        Config.from_env({}, max_client_message_bytes=100 * 1024 * 1024)


def test_config_is_frozen() -> None:
    config = Config.from_env({})
    with pytest.raises(AttributeError):
        config.max_sessions = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"session_retention_s": 0}, "session_retention_s: must be positive"),
        ({"session_purge_interval_s": -1}, "session_purge_interval_s: must be positive"),
        (
            {"worker_lost_after_s": 30, "worker_forget_after_s": 20},
            "worker_forget_after_s: must be at least worker_lost_after_s",
        ),
    ],
)
def test_config_refuses_retention_settings_that_would_delete_too_soon(
    fields: dict[str, float], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        Config.from_env({}, **fields)


def test_every_setting_is_documented_with_its_variable() -> None:
    documented = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    missing = [
        name
        for name in Config.__dataclass_fields__
        if f"`{ENV_PREFIX}{name.upper()}`" not in documented
    ]
    assert not missing
