"""A browser's execution role: its recordings are written with credentials
from STS AssumeRole. The S3/STS/IAM server here (a moto_server of its own)
enforces IAM: the worker's own user may only assume the role, so a write
that did not go through the role is refused."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from helpers.recordings import events_of, recording_browser, s3_batches
from helpers.upstreams import free_port, process_group
from helpers.waits import eventually
from helpers.workers import make_config, running_worker, session_page

pytestmark = pytest.mark.integration

SETUP_CALLS = 6  # IAM enforcement starts after the calls in `iam_world`


@pytest.fixture
def iam_world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    argv = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_CALLS)}
    with process_group(argv, tmp_path / "moto-iam.log", port, env=env):
        admin = {
            "endpoint_url": endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": "setup",
            "aws_secret_access_key": "setup",
        }
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="worker")
        iam.put_user_policy(
            UserName="worker", PolicyName="assume", PolicyDocument=_allow("sts:AssumeRole")
        )
        key = iam.create_access_key(UserName="worker")["AccessKey"]
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}
            ],
        }
        role = iam.create_role(RoleName="recorder", AssumeRolePolicyDocument=json.dumps(trust))
        iam.put_role_policy(RoleName="recorder", PolicyName="s3", PolicyDocument=_allow("s3:*"))
        boto3.client("s3", **admin).create_bucket(Bucket="tenant-recordings")
        yield {
            "endpoint": endpoint,
            "role_arn": role["Role"]["Arn"],
            "key_id": key["AccessKeyId"],
            "secret": key["SecretAccessKey"],
        }


def _allow(action: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}],
        }
    )


async def test_recordings_are_written_as_the_browsers_execution_role(
    tmp_path: Path, web: str, iam_world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = iam_world["endpoint"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", iam_world["key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", iam_world["secret"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    config = make_config(
        tmp_path,
        recording_storage="s3",
        s3_endpoint_url=endpoint,
        sts_endpoint_url=endpoint,
        recording_flush_timeout_s=1.0,
    )
    async with running_worker(config) as worker:
        role_arn = iam_world["role_arn"]
        with_role = await recording_browser(
            worker, "tenant", bucket="tenant-recordings", execution_role_arn=role_arn
        )
        without = await recording_browser(worker, "no_role", bucket="tenant-recordings")
        ids = {}
        for name, browser_id in (("role", with_role), ("worker", without)):
            async with session_page(worker, browser_identifier=browser_id) as (page, started):
                await page.goto(f"{web}/record.html")
                await page.wait_for_timeout(300)
            ids[name] = started.session_id
        s3 = _as_role(endpoint, role_arn)
        folder = f"runs/{ids['role']}/"
        await eventually(lambda: _keys(s3, folder), timeout=20)
        objects = {
            k: s3.get_object(Bucket="tenant-recordings", Key=k)["Body"].read()
            for k in _keys(s3, folder)
        }
        metrics = worker.server.metrics
        await eventually(
            lambda: sum(s.value for m in metrics.recording_retries.collect() for s in m.samples),
            timeout=20,
        )
        refused = _keys(s3, f"runs/{ids['worker']}/")
    assert f"{folder}metadata.json" in objects
    assert "Order form" in json.dumps(events_of(s3_batches(objects)))
    assert refused == []  # the worker's own credentials may not write:
    with pytest.raises(ClientError, match="AccessDenied"):
        boto3.Session().client("s3", region_name="us-east-1").put_object(
            Bucket="tenant-recordings", Key="x", Body=b"x"
        )


def _as_role(endpoint: str, role_arn: str) -> Any:
    # A new session: boto3's default one keeps the credentials it first saw.
    worker_session = boto3.Session()
    sts = worker_session.client("sts", endpoint_url=endpoint, region_name="us-east-1")
    creds = sts.assume_role(RoleArn=role_arn, RoleSessionName="test")["Credentials"]
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def _keys(s3: Any, prefix: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket="tenant-recordings", Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in listed)
