"""Is this text a bundle of CA certificates a browser can trust?

Each reason a certificate is refused is spelled out for the caller; none of
them quotes the certificate. Checked, in order: PEM at all, nothing but
certificates (a private key is refused outright, it must never travel with a
trust anchor), parseable X.509, inside its validity period, a CA
(basicConstraints CA:TRUE), and a key type Chromium verifies with.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
MIN_RSA_BITS = 2048
CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


class CertificateError(ValueError):
    """A certificate that cannot be trusted, and why (never its content)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class CACertificate:
    pem: bytes
    subject: str
    fingerprint: str  # SHA-256 of the DER, hex


def parse(text: str, now: datetime.datetime | None = None) -> list[CACertificate]:
    """Every certificate in `text`, checked; CertificateError on the first
    that fails (the reason says which one, for a bundle)."""
    now = now or datetime.datetime.now(datetime.UTC)
    if "PRIVATE KEY-----" in text:
        raise CertificateError("holds a private key: give only the CA certificate")
    blocks = PEM_BLOCK.findall(text)
    if not blocks:
        raise CertificateError("is not PEM: expected -----BEGIN CERTIFICATE----- blocks")
    kinds = {kind for kind, _ in blocks if kind != "CERTIFICATE"}
    if kinds:
        raise CertificateError(f"is not a certificate: found {', '.join(sorted(kinds))}")
    certificates = []
    for position, (_, body) in enumerate(blocks):
        where = f"certificate {position + 1} of {len(blocks)}: " if len(blocks) > 1 else ""
        try:
            certificates.append(_check(body, now))
        except CertificateError as err:
            raise CertificateError(where + err.reason) from None
    return certificates


def _check(body: str, now: datetime.datetime) -> CACertificate:
    pem = f"-----BEGIN CERTIFICATE-----{body}-----END CERTIFICATE-----\n".encode()
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise CertificateError("is not a valid X.509 certificate") from None
    if cert.not_valid_after_utc < now:
        raise CertificateError(f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if cert.not_valid_before_utc > now:
        raise CertificateError(f"is not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CertificateError("is not a CA certificate (basicConstraints CA:TRUE is required)")
    _check_key(cert)
    der = cert.public_bytes(serialization.Encoding.DER)
    return CACertificate(
        pem=cert.public_bytes(serialization.Encoding.PEM),
        subject=cert.subject.rfc4514_string(),
        fingerprint=hashlib.sha256(der).hexdigest(),
    )


def _check_key(cert: x509.Certificate) -> None:
    try:
        key = cert.public_key()
    except (ValueError, TypeError):
        raise CertificateError("has an unsupported key") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CertificateError(
                f"has an unsupported key: RSA {key.key_size} bits (at least {MIN_RSA_BITS})"
            )
        return
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, CURVES):
            raise CertificateError(f"has an unsupported key: EC curve {key.curve.name}")
        return
    raise CertificateError(
        f"has an unsupported key: {type(key).__name__.removesuffix('PublicKey')} "
        "(RSA >= 2048 bits or EC P-256/P-384/P-521)"
    )
