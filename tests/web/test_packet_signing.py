"""Signed packets checked by pyHanko and by an independent verifier (poppler's pdfsig)."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fpdf import FPDF

from db.signing import SigningIdentity, ensure_identity
from web.packet_signing import PacketVerifyError, sign_packet, verify_packet

ATTACHMENTS = {"evidence.json": b'{"session_id": "s-1"}', "session.json": b'{"records": []}'}


@pytest.fixture
def identity(tmp_path: Path) -> SigningIdentity:
    return ensure_identity(tmp_path, None, "Test Clinic")[0]


def _pdf() -> bytes:
    document = FPDF()
    document.add_page()
    document.set_font("Helvetica", size=12)
    document.cell(text="Evidence packet PKT-1 for patient P-0001")
    return bytes(document.output())


def _signed(identity: SigningIdentity) -> bytes:
    return sign_packet(
        _pdf(),
        identity,
        ATTACHMENTS,
        signing_time=datetime.now(UTC),
        reason="pumptrail evidence packet",
        location="Test Clinic",
    )


def _pdfsig(path: Path) -> str:
    pdfsig = shutil.which("pdfsig")
    if pdfsig is None:
        if os.environ.get("CI"):
            pytest.fail("pdfsig (poppler-utils) is required in CI")
        pytest.skip("pdfsig (Debian poppler-utils) not installed")
    return subprocess.run(
        [pdfsig, str(path)], capture_output=True, text=True, check=False, timeout=60
    ).stdout


def test_signed_packet_carries_its_files_and_verifies(identity: SigningIdentity) -> None:
    check = verify_packet(_signed(identity))
    assert check.ok
    assert check.signer_fingerprint == identity.fingerprint
    assert check.signing_time is not None
    assert dict(check.attachments) == ATTACHMENTS


def test_pdfsig_reports_the_signature_valid(identity: SigningIdentity, tmp_path: Path) -> None:
    path = tmp_path / "packet.pdf"
    path.write_bytes(_signed(identity))
    report = _pdfsig(path)
    assert "Signature Field Name: PumptrailEvidence" in report
    assert "Signature Validation: Signature is Valid." in report
    assert "Total document signed" in report


def test_one_changed_byte_fails_both_verifiers(identity: SigningIdentity, tmp_path: Path) -> None:
    signed = bytearray(_signed(identity))
    position = signed.index(b"PKT-1") if b"PKT-1" in signed else len(signed) // 4
    signed[position] ^= 0x01
    path = tmp_path / "changed.pdf"
    path.write_bytes(bytes(signed))
    assert not verify_packet(bytes(signed)).ok
    assert "Signature is Valid." not in _pdfsig(path)


def test_update_appended_after_signing_is_reported(identity: SigningIdentity) -> None:
    from io import BytesIO

    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    writer = IncrementalPdfFileWriter(BytesIO(_signed(identity)))
    writer.root["/Lang"] = generic.TextStringObject("en")
    writer.update_root()
    output = BytesIO()
    writer.write(output)
    check = verify_packet(output.getvalue())
    assert not check.ok
    assert not check.covers_whole_file


def test_a_file_that_is_not_a_signed_packet_is_refused(identity: SigningIdentity) -> None:
    with pytest.raises(PacketVerifyError, match="no PumptrailEvidence signature"):
        verify_packet(_pdf())
    with pytest.raises(PacketVerifyError, match="not a readable PDF"):
        verify_packet(b"plain text, not a PDF")
