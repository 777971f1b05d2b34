"""Chromium extensions from ZIP files: checked before a session starts
(a ZIP, manifest.json at its root, manifest version 3, nothing that unpacks
outside its folder or past a size), then unpacked into the session's own
directory, which the browser loads with --load-extension."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from pathlib import Path, PurePosixPath

from worker.errors import InvalidArgument

MAX_UNPACKED_BYTES = 100 * 1024 * 1024  # a ZIP of at most 10 MB, ten to one
MAX_ENTRIES = 10_000


def check(field: str, data: bytes) -> str:
    """The extension's name, or InvalidArgument saying what is wrong."""
    archive = _open(field, data)
    entries = archive.infolist()
    if len(entries) > MAX_ENTRIES:
        raise InvalidArgument(field, f"holds more than {MAX_ENTRIES} files")
    unpacked, seen = 0, set()
    for entry in entries:
        _check_entry(field, entry)
        name = entry.filename.rstrip("/")
        if name in seen:
            raise InvalidArgument(field, f"holds '{name}' twice")
        seen.add(name)
        unpacked += entry.file_size
    if unpacked > MAX_UNPACKED_BYTES:
        raise InvalidArgument(
            field, f"unpacks to more than {MAX_UNPACKED_BYTES // (1024 * 1024)} MB"
        )
    return _manifest_name(field, archive)


def unpack(data: bytes, directory: Path) -> None:
    """Unpack a checked extension: directories 0755, files 0644, so the
    browser's own user reads what root wrote."""
    directory.mkdir(mode=0o755)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for entry in archive.infolist():
            target = directory.joinpath(*PurePosixPath(entry.filename).parts)
            if entry.is_dir():
                target.mkdir(mode=0o755, parents=True, exist_ok=True)
                continue
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            with archive.open(entry) as source, target.open("xb") as sink:
                while chunk := source.read(1 << 16):
                    sink.write(chunk)
            target.chmod(0o644)


def _open(field: str, data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError):
        raise InvalidArgument(field, "is not a ZIP file") from None


def _check_entry(field: str, entry: zipfile.ZipInfo) -> None:
    name = entry.filename
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or ".." in path.parts or "\\" in name or ":" in path.parts[0]:
        raise InvalidArgument(field, f"holds '{name}', a path outside the extension's folder")
    if stat.S_ISLNK(entry.external_attr >> 16):
        raise InvalidArgument(field, f"holds '{name}', a symbolic link")
    if entry.flag_bits & 0x1:
        raise InvalidArgument(field, f"holds '{name}', which is encrypted")


def _manifest_name(field: str, archive: zipfile.ZipFile) -> str:
    try:
        raw = archive.read("manifest.json")
    except KeyError:
        raise InvalidArgument(
            field,
            "has no manifest.json at its root (zip the extension folder's contents, "
            "not the folder)",
        ) from None
    except (zipfile.BadZipFile, OSError, RuntimeError):
        raise InvalidArgument(field, "manifest.json cannot be read from the ZIP") from None
    try:
        manifest = json.loads(raw.decode("utf-8-sig"))
    except ValueError:
        raise InvalidArgument(field, "manifest.json is not JSON") from None
    if not isinstance(manifest, dict):
        raise InvalidArgument(field, "manifest.json must hold a JSON object")
    version = manifest.get("manifest_version")
    if version != 3:
        raise InvalidArgument(
            field,
            f"manifest_version is {version!r}: this Chromium loads only manifest_version 3",
        )
    name = manifest.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgument(field, "manifest.json has no name")
    if not isinstance(manifest.get("version"), str):
        raise InvalidArgument(field, "manifest.json has no version string")
    return name
