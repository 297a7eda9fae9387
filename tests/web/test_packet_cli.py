"""`pumptrail packet verify` on a packet the web view exported, intact and changed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from db.signing import default_identity_path
from pumptrail.cli import main
from tests.web.support import DemoData


def run(capsys: pytest.CaptureFixture[str], *words: str) -> tuple[int, str]:
    status = main(list(words))
    return status, capsys.readouterr().out


def test_packet_verify_passes_a_signed_packet_and_fails_a_changed_one(
    coder: TestClient, data: DemoData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    session_id = data.session_ids[-1]
    response = coder.get(f"/sessions/{session_id}/packet.pdf")
    assert response.status_code == 200
    packet = tmp_path / "packet.pdf"
    packet.write_bytes(response.content)
    capsys.readouterr()
    where = ["--db", data.url, "--data-dir", str(data.root)]
    status, out = run(capsys, "packet", "verify", str(packet), *where)
    assert status == 0, out
    assert f"session: {session_id}" in out
    assert "intact: yes" in out
    assert "embedded evidence equals the stored evidence: yes" in out
    assert out.rstrip().endswith("packet verified")

    identity = default_identity_path(data.root)
    status, out = run(
        capsys, "packet", "verify", str(packet), "--no-db", "--certificate", str(identity)
    )
    assert status == 0 and "yes" in out.split("signer is")[1].splitlines()[0]

    changed = bytearray(response.content)
    changed[len(changed) // 3] ^= 0x01
    packet.write_bytes(bytes(changed))
    status, out = run(capsys, "packet", "verify", str(packet), *where)
    assert status == 1 and "packet NOT verified" in out and "intact: NO" in out
    pdfsig = subprocess.run(
        ["pdfsig", str(packet)], capture_output=True, text=True, check=False, timeout=60
    )
    assert "Signature is Valid." not in pdfsig.stdout


def test_packet_verify_notices_evidence_that_changed_since(
    coder: TestClient, data: DemoData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sqlalchemy import update

    from db.migrate import open_database
    from db.models import evidence, sessions

    session_id = data.session_ids[-1]
    packet = tmp_path / "packet.pdf"
    packet.write_bytes(coder.get(f"/sessions/{session_id}/packet.pdf").content)
    engine = open_database(data.url)
    try:
        with engine.begin() as connection:
            pk = connection.execute(
                sessions.select().where(sessions.c.session_id == session_id)
            ).first()
            assert pk is not None
            connection.execute(
                update(evidence)
                .where(evidence.c.session_pk == pk.id)
                .values(document='{"session_id": "rewritten"}')
            )
    finally:
        engine.dispose()
    capsys.readouterr()
    status, out = run(capsys, "packet", "verify", str(packet), "--db", data.url)
    assert status == 1
    assert "embedded evidence equals the stored evidence: NO" in out


def test_packet_verify_refuses_a_file_that_is_not_a_packet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "notes.pdf"
    text.write_text("not a PDF")
    assert main(["packet", "verify", str(text), "--no-db"]) == 2
    assert "not a readable PDF" in capsys.readouterr().err
