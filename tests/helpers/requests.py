"""Pieces of requests that many tests build."""

from __future__ import annotations

from worker.pb import sandbox_pb2 as pb


def certificates(*refs: str) -> list[pb.Certificate]:
    """`certificates` naming each secret reference in turn."""
    return [
        pb.Certificate(
            location=pb.CertificateLocation(secrets_manager=pb.SecretsManagerLocation(secret_arn=r))
        )
        for r in refs
    ]
