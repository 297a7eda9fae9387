"""Signed evidence packets: the PDF carries its evidence as files and a PAdES signature.

A packet that leaves the clinic (to a payer, an auditor, a court) must be checkable
without the clinic's database. `sign_packet` takes the rendered PDF (`web.packet`)
and, as one incremental update written by pyHanko,

- embeds the session's evidence JSON (with `applicable` as looked up when the
  packet was made) and session JSON as PDF embedded files (`evidence.json`,
  `session.json`, relationship `/Data`), and
- signs the whole document with the clinic's key (`db.signing`): an invisible
  signature field, subfilter `ETSI.CAdES.detached` (PAdES baseline B-B), SHA-256,
  the signer's certificate embedded so that any PDF reader or poppler's `pdfsig`
  can check it.

`verify_packet` reads a packet back: the signature's integrity (one changed byte
anywhere in the signed range breaks it), whether it covers the whole file (no
later update slipped in), the signer's certificate fingerprint, the signing time,
and the embedded files, so that `pumptrail packet verify` can compare them with
the stored evidence. Trust in the signer is a separate question: the certificate
is self-signed, so the fingerprint is what an auditor compares with the one the
clinic published (`pumptrail keys show`).
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509 as crypto_x509
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils import embed, generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.general import SigningError
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.errors import SignatureValidationError
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore

from db.signing import SigningIdentity, fingerprint_of
from parsers.errors import PumptrailError
from web.packet import render_pdf
from web.pages import EvidenceView
from web.queries import SessionRecord

SIGNATURE_FIELD: Final = "PumptrailEvidence"
EVIDENCE_FILE: Final = "evidence.json"
SESSION_FILE: Final = "session.json"


def new_packet_id(at: datetime) -> str:
    """A packet's own ID: its UTC generation time and 8 random hex digits."""
    return f"{at:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def packet_attachments(
    record: SessionRecord, evidence: Mapping[str, Any] | None = None
) -> dict[str, bytes]:
    """The session's evidence JSON and session JSON as the packet embeds them.

    `evidence` is the evidence as the packet shows it (with `applicable`, looked up
    when the packet was made; docs/session-json.md "Evidence"); default: as stored.
    """
    return {
        EVIDENCE_FILE: _json_bytes(record.evidence if evidence is None else evidence),
        SESSION_FILE: _json_bytes(record.document),
    }


def _json_bytes(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"


@dataclass(frozen=True)
class SignedPacket:
    packet_id: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def build_signed_packet(
    view: EvidenceView,
    identity: SigningIdentity,
    *,
    generated_at: datetime,
    generated_by: str,
) -> SignedPacket:
    """Render the packet of `view`, embed its JSON and sign it with `identity`."""
    packet_id = new_packet_id(generated_at)
    pdf = render_pdf(
        view, generated_at=generated_at, generated_by=generated_by, packet_id=packet_id
    )
    signed = sign_packet(
        pdf,
        identity,
        packet_attachments(view.record, view.document),
        signing_time=generated_at.replace(tzinfo=UTC),
        reason=f"pumptrail evidence packet {packet_id} of session {view.record.session_id}",
        location=identity.subject,
    )
    return SignedPacket(packet_id, signed)


class PacketVerifyError(PumptrailError):
    """Raised when a file given as a packet is not a PDF that pyHanko can read, or
    carries no pumptrail signature to check."""


def sign_packet(
    pdf: bytes,
    identity: SigningIdentity,
    attachments: Mapping[str, bytes],
    *,
    signing_time: datetime,
    reason: str,
    location: str,
) -> bytes:
    """`pdf` with `attachments` embedded and a PAdES signature over the whole file."""
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    for name, data in attachments.items():
        stream = embed.EmbeddedFileObject.from_file_data(
            writer,
            data,
            mime_type="application/json",
            params=embed.EmbeddedFileParams(
                embed_size=True,
                embed_checksum=True,
                creation_date=signing_time,
                modification_date=signing_time,
            ),
        )
        embed.embed_file(
            writer,
            embed.FileSpec(
                file_spec_string=name,
                file_name=name,
                embedded_data=stream,
                description=f"pumptrail {name} of this packet",
                af_relationship=generic.pdf_name("/Data"),
            ),
        )
    certificate = asn1_x509.Certificate.load(
        identity.certificate.public_bytes(serialization.Encoding.DER)
    )
    key = asn1_keys.PrivateKeyInfo.load(
        identity.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    signer = signers.SimpleSigner(
        signing_cert=certificate,
        signing_key=key,
        cert_registry=SimpleCertificateStore.from_certs([certificate]),  # type: ignore[no-untyped-call]
    )
    metadata = signers.PdfSignatureMetadata(
        field_name=SIGNATURE_FIELD,
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
        reason=reason,
        location=location,
        name=identity.subject,
    )
    output = io.BytesIO()
    try:
        signers.PdfSigner(metadata, signer=signer).sign_pdf(
            writer,
            output=output,
            existing_fields_only=False,
        )
    except (SigningError, PdfError) as exc:
        raise PacketVerifyError(f"the packet could not be signed: {exc}") from exc
    return output.getvalue()


@dataclass(frozen=True)
class PacketCheck:
    """What `verify_packet` found in one file."""

    sha256: str
    intact: bool
    covers_whole_file: bool
    signer_fingerprint: str | None
    signer_subject: str | None
    signing_time: datetime | None
    attachments: Mapping[str, bytes] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.intact and self.covers_whole_file and not self.problems


def _name_tree_pairs(node: Any) -> list[tuple[str, Any]]:
    """(name, value) pairs of a PDF name tree, leaves and kids alike."""
    node = node.get_object()
    pairs: list[tuple[str, Any]] = []
    names = node.get("/Names")
    if names is not None:
        flat = list(names.get_object())
        pairs.extend((str(flat[i]), flat[i + 1]) for i in range(0, len(flat) - 1, 2))
    for kid in node.get("/Kids", generic.ArrayObject()).get_object():
        pairs.extend(_name_tree_pairs(kid))
    return pairs


def _attachments(reader: PdfFileReader) -> dict[str, bytes]:
    names = reader.root.get("/Names")
    if names is None:
        return {}
    tree = names.get_object().get("/EmbeddedFiles")
    if tree is None:
        return {}
    found: dict[str, bytes] = {}
    for name, spec in _name_tree_pairs(tree):
        stream = spec.get_object()["/EF"].get_object()["/F"].get_object()
        found[name] = stream.data
    return found


def verify_packet(data: bytes) -> PacketCheck:
    """Check the pumptrail signature of a packet and read its embedded files."""
    digest = hashlib.sha256(data).hexdigest()
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=False)
        signatures = [s for s in reader.embedded_signatures if s.field_name == SIGNATURE_FIELD]
    except (PdfError, ValueError, KeyError, TypeError) as exc:
        raise PacketVerifyError(f"not a readable PDF: {exc}") from exc
    if not signatures:
        raise PacketVerifyError(f"no {SIGNATURE_FIELD} signature in the file")
    embedded = signatures[0]
    problems: list[str] = []
    certificate = embedded.signer_cert
    fingerprint = None
    subject = None
    if certificate is not None:
        parsed = crypto_x509.load_der_x509_certificate(certificate.dump())
        fingerprint = fingerprint_of(parsed)
        subject = parsed.subject.rfc4514_string()
    try:
        context = ValidationContext(
            trust_roots=[certificate] if certificate is not None else [],
            allow_fetching=False,
        )
        status = validate_pdf_signature(embedded, signer_validation_context=context)
        intact = bool(status.intact and status.valid)
        coverage = status.coverage
        covers = coverage is not None and coverage.name == "ENTIRE_FILE"
        signing_time = status.signer_reported_dt
    except (SignatureValidationError, PdfError, ValueError) as exc:
        problems.append(f"signature cannot be validated: {exc}")
        intact, covers, signing_time = False, False, None
    if not covers and intact:
        problems.append("the file was changed after it was signed (an update follows)")
    try:
        attachments = _attachments(reader)
    except (PdfError, KeyError, TypeError) as exc:
        problems.append(f"embedded files unreadable: {exc}")
        attachments = {}
    return PacketCheck(
        sha256=digest,
        intact=intact,
        covers_whole_file=covers,
        signer_fingerprint=fingerprint,
        signer_subject=subject,
        signing_time=signing_time,
        attachments=attachments,
        problems=tuple(problems),
    )
