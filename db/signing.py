"""The clinic's signing identity: one private key and its self-signed certificate.

Audit checkpoints (docs/auditing.md) and evidence packets are signed with this
identity, so that a copy that has left the clinic can be checked by anyone who
holds the certificate. The identity lives outside the database on purpose: who
can rewrite the database still cannot forge a signature.

One PEM file holds both parts: the private key (PKCS#8, unencrypted, protected
by the file mode 0600 and its folder's 0700) followed by the X.509 certificate.
A single file is what systemd's `LoadCredential=` hands over in one piece. The
default place is `<data_dir>/keys/clinic-signing.pem`; the `signing_key` setting
names another.

- `ensure_identity` loads it, or creates it on first use at the default place
  (ECDSA P-256, a certificate naming the clinic, valid ten years) and says so
  with its fingerprint. A file named by the `signing_key` setting is never
  created: a missing credential is a configuration fault.
- A file that exists but cannot be read, is not PEM, lacks a part, or whose
  certificate does not carry the key's public half raises `SigningKeyError`.
- `sign` / `verify_signature` sign bytes (ECDSA with SHA-256, or RSA PKCS#1 v1.5
  with SHA-256 for an RSA-3072 key a clinic brings).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from parsers.errors import PumptrailError

KEYS_FOLDER: Final = "keys"
IDENTITY_FILE: Final = "clinic-signing.pem"
VALIDITY_DAYS: Final = 3652
MIN_RSA_BITS: Final = 3072

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class SigningKeyError(PumptrailError):
    """Raised when the signing identity file exists but cannot be used (unreadable,
    not PEM, missing its key or certificate, a key the certificate does not match,
    a key type or size below policy), or when a configured identity file is absent."""


def default_identity_path(data_dir: Path) -> Path:
    """Where `pumptrail keys init` puts the identity when no `signing_key` is set."""
    return data_dir / KEYS_FOLDER / IDENTITY_FILE


def fingerprint_of(certificate: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER bytes, as colon-separated upper-case hex."""
    digest = certificate.fingerprint(hashes.SHA256())
    return ":".join(f"{byte:02X}" for byte in digest)


@dataclass(frozen=True)
class SigningIdentity:
    """The clinic's key and certificate, loaded from `path`."""

    key: SigningKey
    certificate: x509.Certificate
    path: Path

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.certificate)

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def sign(self, data: bytes) -> bytes:
        """A detached signature over `data` (DER ECDSA or PKCS#1 v1.5, SHA-256)."""
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return self.key.sign(data, ec.ECDSA(hashes.SHA256()))
        return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def verify_signature(certificate: x509.Certificate, signature: bytes, data: bytes) -> bool:
    """Whether `signature` was made over `data` by the key of `certificate`."""
    public = certificate.public_key()
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except InvalidSignature:
        return False
    return True


def load_certificate(path: Path) -> x509.Certificate:
    """The first certificate of a PEM file (an identity file or a copy of the
    certificate an auditor keeps)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read the certificate: {exc.strerror}") from exc
    try:
        return x509.load_pem_x509_certificates(data)[0]
    except ValueError as exc:
        raise SigningKeyError(f"{path}: no PEM certificate in the file") from exc


def load_identity(path: Path) -> SigningIdentity:
    """The identity in `path`; `SigningKeyError` names what is wrong with it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise SigningKeyError(f"{path}: signing identity not found") from exc
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read the signing key: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(
            f"{path}: expected an unencrypted PEM private key, found none that loads"
        ) from exc
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise SigningKeyError(
                f"{path}: RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} expected"
            )
    elif not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SigningKeyError(f"{path}: expected an ECDSA or RSA key, found {type(key).__name__}")
    try:
        certificate = x509.load_pem_x509_certificates(data)[0]
    except ValueError as exc:
        raise SigningKeyError(f"{path}: the file holds a key but no certificate") from exc
    if certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise SigningKeyError(
            f"{path}: the certificate does not match the private key "
            f"(certificate {fingerprint_of(certificate)})"
        )
    return SigningIdentity(key=key, certificate=certificate, path=path)


def _new_identity_pem(clinic_name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{clinic_name} (pumptrail evidence)"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, clinic_name),
        ]
    )
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + certificate.public_bytes(serialization.Encoding.PEM)


def create_identity(path: Path, clinic_name: str) -> tuple[SigningIdentity, bool]:
    """Create the identity at `path` unless one is there; (identity, created).

    The folder is made 0700 and the file 0600 whatever the umask. The file is
    written under a temporary name, flushed, and linked to its final name, so a
    crash leaves either no identity or a whole one, and two processes creating at
    once end with the same one.
    """
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    if path.exists():
        return load_identity(path), False
    temporary = folder / f".{path.name}.{secrets.token_hex(8)}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(_new_identity_pem(clinic_name))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
            created = True
        except FileExistsError:
            created = False
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return load_identity(path), created


def ensure_identity(
    data_dir: Path, configured: Path | None, clinic_name: str
) -> tuple[SigningIdentity, bool]:
    """The identity a command signs with; (identity, created just now).

    `configured` is the `signing_key` setting: when set, the file must exist (a
    systemd credential or a key the clinic manages); when unset, the default file
    under `data_dir` is created on first use.
    """
    if configured is not None:
        return load_identity(configured), False
    return create_identity(default_identity_path(data_dir), clinic_name)
