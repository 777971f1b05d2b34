"""Extension ZIPs are checked before a session starts and unpacked where the
browser's own user can read them."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from pathlib import Path

import pytest

from helpers.addons import manifest, marker_extension, zip_of
from worker.browser import extensions
from worker.errors import InvalidArgument

FIELD = "extensions[0].location.s3"


def refusal(data: bytes) -> str:
    with pytest.raises(InvalidArgument) as refused:
        extensions.check(FIELD, data)
    assert refused.value.field == FIELD
    return refused.value.reason


def test_a_good_extension_is_named_by_its_manifest() -> None:
    assert extensions.check(FIELD, marker_extension()) == "page marker"


def test_a_link_in_the_zip_is_refused() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("manifest.json", json.dumps(manifest()))
        link = zipfile.ZipInfo("mark.js")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/shadow")
    assert "a symbolic link" in refusal(out.getvalue())


@pytest.mark.parametrize(
    ("files", "why"),
    [
        ({"manifest.json": "{}", "/abs.js": "x"}, "a path outside"),
        ({"manifest.json": "{}", "a/../../b.js": "x"}, "a path outside"),
        ({"manifest.json": "not json"}, "is not JSON"),
        ({"manifest.json": "[3]"}, "must hold a JSON object"),
        ({"manifest.json": json.dumps(manifest(name=" "))}, "has no name"),
        ({"manifest.json": json.dumps(manifest(version=1))}, "no version string"),
        ({"manifest.json": json.dumps(manifest(manifest_version=2))}, "manifest_version is 2"),
        ({"sub/manifest.json": "{}"}, "no manifest.json at its root"),
    ],
)
def test_a_bad_extension_is_refused_saying_why(files: dict[str, str], why: str) -> None:
    assert why in refusal(zip_of(dict(files)))


def test_a_zip_that_unpacks_past_the_limit_is_refused_before_unpacking() -> None:
    big = {"manifest.json": json.dumps(manifest()), "zeros.bin": b"\0" * (101 * 1024 * 1024)}
    assert "unpacks to more than 100 MB" in refusal(zip_of(dict(big)))


def test_unpacked_files_are_readable_by_other_users(tmp_path: Path) -> None:
    data = zip_of({"manifest.json": json.dumps(manifest()), "js/mark.js": "1"})
    extensions.unpack(data, tmp_path / "ext")
    script = tmp_path / "ext" / "js" / "mark.js"
    assert script.read_text() == "1"
    assert stat.S_IMODE(script.stat().st_mode) == 0o644
    assert stat.S_IMODE(script.parent.stat().st_mode) == 0o755
