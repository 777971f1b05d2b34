"""A browser's own /etc/chromium: the host's files copied, the session's
policy files added by kind, and the host's directory left alone."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from worker.browser import policies
from worker.errors import InvalidArgument


def test_the_view_keeps_the_hosts_files_and_adds_each_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = tmp_path / "etc-chromium"
    (host / "policies" / "managed").mkdir(parents=True)
    (host / "master_preferences").write_text("{}")
    (host / "policies" / "managed" / "site.json").write_text('{"A": 1}')
    monkeypatch.setattr(policies, "CHROMIUM_ETC", host)
    before = sorted(str(p) for p in host.rglob("*"))
    view = policies.build_view(tmp_path / "view", [b'{"B": 2}'], [b'{"C": 3}', b'{"D": 4}'])
    found = sorted(str(p.relative_to(view)) for p in view.rglob("*.json"))
    assert found == [
        "policies/managed/sandbox-worker-00.json",
        "policies/managed/site.json",
        "policies/recommended/sandbox-worker-00.json",
        "policies/recommended/sandbox-worker-01.json",
    ]
    assert (view / "master_preferences").exists()
    assert stat.S_IMODE((view / "policies" / "recommended").stat().st_mode) == 0o755
    assert sorted(str(p) for p in host.rglob("*")) == before


def test_the_browser_is_wrapped_in_a_mount_namespace_with_paths_as_arguments() -> None:
    argv = policies.wrap(Path("/state/s 1/etc-chromium"), ["/usr/bin/chromium", "--a"])
    assert argv[1:4] == ["--mount", "--propagation", "private"]
    assert argv[-3:] == ["/state/s 1/etc-chromium", "/usr/bin/chromium", "--a"]
    assert "/state" not in argv[6]  # the script names no path: no quoting to get wrong


@pytest.mark.parametrize(("data", "why"), [(b"\xff", "is not a JSON file"), (b"[]", "JSON object")])
def test_a_policy_file_must_be_a_json_object(data: bytes, why: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        policies.check("enterprise_policies[0]", data)
    assert why in refused.value.reason
