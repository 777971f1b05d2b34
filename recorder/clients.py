"""S3 clients: the worker's own credential chain, or a browser's execution
role assumed through STS and refreshed by botocore before it expires.

botocore's own retries are kept short: the uploader retries with its own
backoff, and a call stuck on a dead endpoint must give its thread back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.credentials import RefreshableCredentials
from botocore.session import get_session

ROLE_SESSION_NAME = "sandbox-worker-recording"


def boto_config(timeout_s: float) -> BotoConfig:
    return BotoConfig(
        connect_timeout=timeout_s,
        read_timeout=timeout_s * 3,
        retries={"max_attempts": 2, "mode": "standard"},
        max_pool_connections=16,
    )


class Clients:
    """One S3 client per credential identity (worker, or role ARN)."""

    def __init__(
        self,
        endpoint_url: str = "",
        sts_endpoint_url: str = "",
        region: str = "",
        timeout_s: float = 5.0,
    ):
        self._endpoint = endpoint_url or None
        self._sts_endpoint = sts_endpoint_url or None
        self._region = region or None
        self._config = boto_config(timeout_s)
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def s3(self, role_arn: str = "") -> Any:
        with self._lock:
            client = self._clients.get(role_arn)
            if client is None:
                session = self._assumed(role_arn) if role_arn else boto3.Session()
                client = session.client(
                    "s3",
                    endpoint_url=self._endpoint,
                    region_name=self._region or session.region_name or "us-east-1",
                    config=self._config,
                )
                self._clients[role_arn] = client
            return client

    def _assumed(self, role_arn: str) -> boto3.Session:
        sts = boto3.Session().client(
            "sts",
            endpoint_url=self._sts_endpoint,
            region_name=self._region or "us-east-1",
            config=self._config,
        )
        credentials = RefreshableCredentials.create_from_metadata(
            metadata=_assume(sts, role_arn)(),
            refresh_using=_assume(sts, role_arn),
            method="sts-assume-role",
        )
        core = get_session()
        core._credentials = credentials  # botocore has no public setter for these
        return boto3.Session(botocore_session=core)


def _assume(sts: Any, role_arn: str) -> Callable[[], dict[str, str]]:
    def fetch() -> dict[str, str]:
        answer = sts.assume_role(RoleArn=role_arn, RoleSessionName=ROLE_SESSION_NAME)
        creds = answer["Credentials"]
        expiry: datetime = creds["Expiration"]
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": expiry.isoformat(),
        }

    return fetch
