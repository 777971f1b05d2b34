"""Extensions and policy files as a user keeps them: ZIPs and JSON objects
in an S3 bucket (moto_server), named the way StartBrowserSession and
CreateBrowser take them."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from helpers.upstreams import SecretsManager
from worker.pb import sandbox_pb2 as pb

# A content script that marks every page it runs in, where a client sees it.
MARKER_SCRIPT = (
    'document.documentElement.dataset.marked = "yes";document.title = "marked: " + document.title;'
)


def manifest(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "manifest_version": 3,
        "name": "page marker",
        "version": "1.0",
        "content_scripts": [
            {"matches": ["<all_urls>"], "js": ["mark.js"], "run_at": "document_end"}
        ],
    }
    return {**base, **overrides}


def zip_of(files: dict[str, bytes | str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def marker_extension() -> bytes:
    return zip_of({"manifest.json": json.dumps(manifest()), "mark.js": MARKER_SCRIPT})


def put(moto: SecretsManager, bucket: str, key: str, data: bytes) -> dict[str, str]:
    """Upload; returns the hosted API's s3 location of the object."""
    moto.s3().put_object(Bucket=bucket, Key=key, Body=data)
    return {"bucket": bucket, "prefix": key}


def extension_pb(location: dict[str, str]) -> pb.BrowserExtension:
    return pb.BrowserExtension(location=pb.ResourceLocation(s3=pb.S3Location(**location)))


def policy_pb(location: dict[str, str], kind: str) -> pb.EnterprisePolicy:
    return pb.EnterprisePolicy(
        location=pb.ResourceLocation(s3=pb.S3Location(**location)), type=kind
    )
