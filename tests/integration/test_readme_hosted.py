"""The README's path for code written for the hosted service runs as it
stands: stock boto3 starts a session over the HTTP API, and Playwright
connects to the Start answer's streamEndpoint, by its token and by a SigV4
signed handshake. Only the endpoint and the page are this test's own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from helpers.daemon import daemon
from helpers.workers import ROOT

KEY_ID, SECRET = "AKIDREADME", "readme-secret"


def readme_block(first_line: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return next(b for b in blocks if b.startswith(first_line))


def test_the_readmes_boto3_and_playwright_path_works(tmp_path: Path, web: str) -> None:
    code = readme_block("import boto3\nfrom botocore.auth import SigV4Auth")
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({KEY_ID: SECRET}))
    env = {"SANDBOX_HTTP_API_KEYS_FILE": str(keys)}
    with daemon(tmp_path / "state", env=env) as (_, info):
        code = code.replace("http://127.0.0.1:8090", f"http://127.0.0.1:{info['http_api_port']}")
        code = code.replace("https://example.test/", f"{web}/index.html")
        clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        run = subprocess.run(
            [sys.executable, "-c", code],
            env={**clean, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines() == ["sandbox test page", "sandbox test page"]
