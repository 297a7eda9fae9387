"""The trust commands end to end: `keys init/show`, `audit verify` with signed
checkpoints (and a copy kept elsewhere), `audit checkpoint`, `db grant`."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from db.checkpoints import checkpoint_path
from db.migrate import open_database
from db.signing import default_identity_path
from pumptrail.cli import main
from tests.audit.test_audit import tamper
from tests.audit.test_audit_cli import fill


def run(capsys: pytest.CaptureFixture[str], *words: str) -> tuple[int, str]:
    status = main(list(words))
    return status, capsys.readouterr().out


def test_keys_init_is_idempotent_and_show_prints_the_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    status, out = run(capsys, "keys", "init", "--data-dir", data, "--clinic-name", "Lakeside")
    assert status == 0 and ": created" in out
    fingerprint = out.split("certificate SHA-256: ")[1].strip()
    status, again = run(capsys, "keys", "init", "--data-dir", data)
    assert status == 0 and "already there, unchanged" in again and fingerprint in again
    path = default_identity_path(Path(data))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    status, shown = run(capsys, "keys", "show", "--data-dir", data)
    assert status == 0
    assert f"certificate SHA-256: {fingerprint}" in shown
    assert "O=Lakeside" in shown and "-----BEGIN CERTIFICATE-----" in shown
    assert "PRIVATE KEY" not in shown


def test_a_key_that_does_not_match_its_certificate_stops_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        assert main(["keys", "init", "--data-dir", str(folder)]) == 0
    mine, theirs = default_identity_path(a), default_identity_path(b)
    key = mine.read_text().split("-----BEGIN CERTIFICATE-----")[0]
    certificate = (
        "-----BEGIN CERTIFICATE-----" + theirs.read_text().split("-----BEGIN CERTIFICATE-----")[1]
    )
    mine.write_text(key + certificate)
    capsys.readouterr()
    assert main(["import", str(tmp_path / "nothing"), "--data-dir", str(a)]) == 2
    assert "does not match the private key" in capsys.readouterr().err


def test_verify_catches_a_deleted_tail_only_with_checkpoints(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(db_url, tmp_path)
    fill(db_url, tmp_path)
    data = str(tmp_path / "data")
    status, out = run(capsys, "audit", "verify", "--db", db_url, "--data-dir", data)
    assert status == 0 and "2 signed checkpoints verified" in out
    copy = tmp_path / "collector-copy.jsonl"
    copy.write_bytes(checkpoint_path(Path(data)).read_bytes())
    engine = open_database(db_url)
    try:
        tamper(engine, "DELETE FROM audit_log WHERE id > 3")
    finally:
        engine.dispose()
    status, out = run(capsys, "audit", "verify", "--db", db_url, "--data-dir", data)
    assert status == 1
    assert out.startswith("audit log broken at checkpoint line 2 (entry 6): head_missing")
    # The attacker also truncates the local file: the collector's copy still tells.
    checkpoint_path(Path(data)).write_text(checkpoint_path(Path(data)).read_text().splitlines()[0])
    status, out = run(capsys, "audit", "verify", "--db", db_url, "--data-dir", data)
    assert status == 0  # the local file alone was cut back to match
    status, out = run(
        capsys, "audit", "verify", "--db", db_url, "--data-dir", data, "--checkpoints", str(copy)
    )
    assert status == 1 and "head_missing" in out


def test_verify_refuses_a_log_without_checkpoints(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(db_url, tmp_path)
    data = tmp_path / "data"
    checkpoint_path(data).unlink()
    status, out = run(capsys, "audit", "verify", "--db", db_url, "--data-dir", str(data))
    assert status == 1 and "NOT verified" in out and "cannot read" in out
    status, out = run(capsys, "audit", "checkpoint", "--db", db_url, "--data-dir", str(data))
    assert status == 0 and "entry 3" in out
    status, out = run(capsys, "audit", "verify", "--db", db_url, "--data-dir", str(data))
    assert status == 0 and "1 signed checkpoints verified" in out


def test_verify_with_a_foreign_certificate_fails(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(db_url, tmp_path)
    assert main(["keys", "init", "--data-dir", str(tmp_path / "other")]) == 0
    other = default_identity_path(tmp_path / "other")
    status, out = run(
        capsys,
        "audit", "verify", "--db", db_url, "--data-dir", str(tmp_path / "data"),
        "--certificate", str(other),
    )  # fmt: skip
    assert status == 1 and "foreign_signer" in out


@pytest.mark.postgres
def test_db_grant_leaves_the_runtime_role_unable_to_delete_audit_rows(
    pg_schema_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(pg_schema_url, tmp_path)
    role = f"pt_rt_{uuid.uuid4().hex[:10]}"
    owner = open_database(pg_schema_url)
    with owner.begin() as connection:
        connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
    try:
        status, out = run(capsys, "db", "grant", role, "--db", pg_schema_url)
        assert status == 0 and f"role {role}: runtime privileges granted" in out
        assert 'GRANT SELECT, INSERT ON "' in out and '"audit_log" TO "' in out
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ProgrammingError

        runtime = create_engine(make_url(pg_schema_url).set(username=role))
        try:
            with pytest.raises(ProgrammingError), runtime.begin() as connection:
                connection.execute(text("DELETE FROM audit_log"))
        finally:
            runtime.dispose()
    finally:
        with owner.begin() as connection:
            connection.execute(text(f'DROP OWNED BY "{role}"'))
            connection.execute(text(f'DROP ROLE "{role}"'))
        owner.dispose()


def test_db_grant_on_sqlite_says_it_applies_to_postgresql(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["db", "grant", "someone", "--data-dir", str(tmp_path)])
    assert status == 2
    assert "PostgreSQL only" in capsys.readouterr().err
