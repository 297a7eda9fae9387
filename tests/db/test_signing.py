"""The clinic signing identity: creation, modes, idempotence, and every refusal."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from db.signing import (
    SigningKeyError,
    create_identity,
    default_identity_path,
    ensure_identity,
    load_certificate,
    load_identity,
    verify_signature,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_use_creates_key_and_certificate_private_whatever_the_umask(
    tmp_path: Path,
) -> None:
    previous = os.umask(0o022)
    try:
        identity, created = ensure_identity(tmp_path, None, "Riverside Pain Clinic")
    finally:
        os.umask(previous)
    path = default_identity_path(tmp_path)
    assert created
    assert identity.path == path
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert "Riverside Pain Clinic" in identity.subject
    assert len(identity.fingerprint.split(":")) == 32
    key_usage = identity.certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert key_usage.digital_signature and key_usage.content_commitment


def test_second_use_loads_the_same_identity(tmp_path: Path) -> None:
    first, created_first = ensure_identity(tmp_path, None, "Clinic")
    second, created_second = ensure_identity(tmp_path, None, "Another name")
    assert created_first and not created_second
    assert first.fingerprint == second.fingerprint
    assert create_identity(first.path, "Clinic")[0].fingerprint == first.fingerprint


def test_signature_verifies_and_a_changed_byte_does_not(tmp_path: Path) -> None:
    identity, _ = ensure_identity(tmp_path, None, "Clinic")
    signature = identity.sign(b"head 42")
    assert verify_signature(identity.certificate, signature, b"head 42")
    assert not verify_signature(identity.certificate, signature, b"head 43")
    other, _ = ensure_identity(tmp_path / "other", None, "Clinic")
    assert not verify_signature(other.certificate, signature, b"head 42")


def test_rsa_3072_identity_a_clinic_brings_signs(tmp_path: Path) -> None:
    donor, _ = ensure_identity(tmp_path / "donor", None, "Clinic")
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(donor.certificate.subject)
        .issuer_name(donor.certificate.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(donor.certificate.not_valid_before_utc)
        .not_valid_after(donor.certificate.not_valid_after_utc)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "rsa.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + certificate.public_bytes(serialization.Encoding.PEM)
    )
    identity, created = ensure_identity(tmp_path, path, "ignored")
    assert not created
    assert verify_signature(identity.certificate, identity.sign(b"x"), b"x")


def test_configured_identity_that_is_missing_is_never_created(tmp_path: Path) -> None:
    missing = tmp_path / "credentials" / "signing.pem"
    with pytest.raises(SigningKeyError, match="signing identity not found"):
        ensure_identity(tmp_path, missing, "Clinic")
    assert not missing.exists()
    assert not default_identity_path(tmp_path).exists()


def test_unreadable_identity_stops_with_its_path(tmp_path: Path) -> None:
    path = default_identity_path(tmp_path)
    path.mkdir(parents=True)  # a folder where the file should be: read fails
    with pytest.raises(SigningKeyError, match="cannot read the signing key"):
        ensure_identity(tmp_path, None, "Clinic")


def test_file_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pem"
    path.write_bytes(b"not a key\n")
    with pytest.raises(SigningKeyError, match="expected an unencrypted PEM private key"):
        load_identity(path)


def test_key_without_certificate_is_refused(tmp_path: Path) -> None:
    identity, _ = ensure_identity(tmp_path, None, "Clinic")
    path = tmp_path / "key-only.pem"
    path.write_bytes(
        identity.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(SigningKeyError, match="no certificate"):
        load_identity(path)


def test_certificate_of_another_key_is_refused(tmp_path: Path) -> None:
    mine, _ = ensure_identity(tmp_path / "a", None, "Clinic")
    theirs, _ = ensure_identity(tmp_path / "b", None, "Clinic")
    path = tmp_path / "mixed.pem"
    path.write_bytes(
        mine.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + theirs.certificate_pem().encode()
    )
    with pytest.raises(SigningKeyError, match="does not match the private key"):
        load_identity(path)


def test_small_rsa_key_is_refused(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "small.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(SigningKeyError, match="at least 3072"):
        load_identity(path)


def test_certificate_copy_loads_for_auditors(tmp_path: Path) -> None:
    identity, _ = ensure_identity(tmp_path, None, "Clinic")
    copy = tmp_path / "clinic.crt"
    copy.write_text(identity.certificate_pem())
    assert load_certificate(copy) == identity.certificate
    copy.write_text("nothing here")
    with pytest.raises(SigningKeyError, match="no PEM certificate"):
        load_certificate(copy)
