"""certstore on its own: every reason a certificate is refused, bundles of
several, the NSS store a session gets, and the PEM bundle beside it."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from certstore import bundle
from certstore.nssdb import NSSStores, nickname
from certstore.validate import CertificateError, parse

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | dsa.DSAPrivateKey


def make_cert(
    key: Key | None = None,
    ca: bool | None = True,
    not_before: datetime.datetime = NOW - DAY,
    not_after: datetime.datetime = NOW + 365 * DAY,
    name: str = "Test CA",
) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = builder.sign(key, algorithm)
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def refused(text: str) -> str:
    with pytest.raises(CertificateError) as caught:
        parse(text)
    return caught.value.reason


def test_a_ca_certificate_is_accepted_with_its_subject_and_fingerprint() -> None:
    [cert] = parse(trustme.CA(organization_name="Corp").cert_pem.bytes().decode())
    assert "O=Corp" in cert.subject and len(cert.fingerprint) == 64


def test_a_bundle_of_two_certificates_gives_both_in_order() -> None:
    first, second = make_cert(name="First"), make_cert(name="Second")
    assert [c.subject for c in parse(first + second)] == ["CN=First", "CN=Second"]


def test_text_that_is_not_pem_is_refused() -> None:
    assert refused("just some text").startswith("is not PEM")


def test_pem_that_is_not_a_certificate_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    public = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    assert refused(public) == "is not a certificate: found PUBLIC KEY"


def test_a_private_key_beside_the_certificate_is_refused() -> None:
    ca = trustme.CA()
    text = ca.cert_pem.bytes().decode() + ca.private_key_pem.bytes().decode()
    assert refused(text).startswith("holds a private key")


def test_a_damaged_certificate_is_refused() -> None:
    text = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    assert refused(text) == "is not a valid X.509 certificate"


def test_an_expired_certificate_is_refused() -> None:
    text = make_cert(not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    assert refused(text).startswith("expired on ")


def test_a_certificate_not_valid_yet_is_refused() -> None:
    text = make_cert(not_before=NOW + DAY, not_after=NOW + 10 * DAY)
    assert refused(text).startswith("is not valid until ")


@pytest.mark.parametrize("ca", [False, None])
def test_a_certificate_that_is_not_a_ca_is_refused(ca: bool | None) -> None:
    assert "basicConstraints CA:TRUE" in refused(make_cert(ca=ca))


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (lambda: rsa.generate_private_key(65537, 1024), "RSA 1024 bits"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), "EC curve secp256k1"),
        (lambda: ed25519.Ed25519PrivateKey.generate(), "Ed25519"),
        (lambda: dsa.generate_private_key(2048), "DSA"),
    ],
)
def test_keys_chromium_does_not_verify_with_are_refused(key: object, reason: str) -> None:
    text = make_cert(key=key())  # type: ignore[operator]
    assert reason in refused(text) and "unsupported key" in refused(text)


def test_a_bad_certificate_in_a_bundle_is_named_by_position() -> None:
    text = make_cert() + make_cert(ca=False)
    assert refused(text).startswith("certificate 2 of 2: is not a CA")


def test_rsa_2048_and_p384_are_accepted() -> None:
    assert parse(make_cert(key=rsa.generate_private_key(65537, 2048)))
    assert parse(make_cert(key=ec.generate_private_key(ec.SECP384R1())))


# ---------------------------------------------------------------- NSS store


def listed(db: Path) -> str:
    return subprocess.run(
        ["certutil", "-L", "-d", f"sql:{db}"], capture_output=True, text=True, check=True
    ).stdout


def test_a_session_store_trusts_exactly_its_cas_in_order(tmp_path: Path) -> None:
    certs = parse(make_cert(name="One") + make_cert(name="Two"))
    db = NSSStores(tmp_path / "cache").install(tmp_path / "home", certs)
    assert db == tmp_path / "home" / ".pki" / "nssdb"
    rows = [line.split() for line in listed(db).splitlines() if "sandbox-ca-" in line]
    assert rows == [[nickname(0, certs[0]), "C,,"], [nickname(1, certs[1]), "C,,"]]
    assert oct(db.stat().st_mode & 0o777) == "0o700"


def test_a_second_session_with_the_same_cas_copies_the_built_store(tmp_path: Path) -> None:
    stores = NSSStores(tmp_path / "cache", certutil="/nonexistent/certutil-after-first")
    certs = parse(make_cert())
    first = NSSStores(tmp_path / "cache")
    first.install(tmp_path / "a", certs)
    # The same set again needs no certutil at all (this one cannot run it).
    stores.install(tmp_path / "b", certs)
    assert "sandbox-ca-00" in listed(tmp_path / "b" / ".pki" / "nssdb")


def test_the_cache_keeps_a_bounded_number_of_stores(tmp_path: Path) -> None:
    stores = NSSStores(tmp_path / "cache", max_entries=2)
    for i in range(4):
        stores.install(tmp_path / f"h{i}", parse(make_cert(name=f"CA {i}")))
    assert len([p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]) == 2


# ---------------------------------------------------------------- bundle


def test_the_bundle_holds_the_system_roots_then_the_sessions_cas(tmp_path: Path) -> None:
    certs = parse(make_cert(name="Bundle CA"))
    written = bundle.write(tmp_path / "ca.pem", certs).read_bytes()
    assert written.startswith(bundle.system_roots()) and written.endswith(certs[0].pem)
    assert written.count(b"BEGIN CERTIFICATE") >= 100  # Debian's roots are there
