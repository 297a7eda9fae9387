"""Signed audit checkpoints on SQLite and PostgreSQL: written after each commit that
appends audit entries, and every tampering an attacker without the key can do caught.

Tampering is done as an attacker with the service's database account must: the
append-only triggers out of the way first (`tamper` in test_audit.py).
"""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text

from db import audit
from db.checkpoints import (
    ChainHead,
    CheckpointWriter,
    install,
    read_lines,
    verify_checkpoints,
)
from db.engine import make_durable, write_transaction
from db.migrate import open_database
from db.signing import SigningIdentity, ensure_identity
from tests.audit.test_audit import add, tamper


@pytest.fixture
def identity(tmp_path: Path) -> SigningIdentity:
    return ensure_identity(tmp_path / "data", None, "Test Clinic")[0]


@pytest.fixture
def writer(tmp_path: Path, identity: SigningIdentity) -> CheckpointWriter:
    return CheckpointWriter(identity, tmp_path / "data" / "audit-checkpoints.jsonl", "")


@pytest.fixture
def engine(db_url: str, writer: CheckpointWriter) -> Iterator[Engine]:
    eng = open_database(db_url)
    install(eng, writer)
    try:
        yield eng
    finally:
        eng.dispose()


def lines(writer: CheckpointWriter) -> list[dict[str, object]]:
    return [json.loads(text) for _, text in read_lines(writer.path)]


def check(engine: Engine, writer: CheckpointWriter, path: Path | None = None) -> str | None:
    with engine.connect() as connection:
        failure, _ = verify_checkpoints(
            connection, read_lines(path or writer.path), writer.identity.certificate
        )
    return None if failure is None else str(failure)


def test_each_commit_that_appends_writes_one_signed_checkpoint(
    engine: Engine, writer: CheckpointWriter
) -> None:
    add(engine, 3)
    add(engine, 2)
    with write_transaction(engine) as connection:  # no audit entry: no checkpoint
        connection.execute(text("SELECT 1"))
    written = lines(writer)
    assert [(c["head_id"], c["entries"]) for c in written] == [(3, 3), (5, 5)]
    with engine.connect() as connection:
        head = audit.current_head(connection)
    assert head is not None and written[-1]["head_hash"] == head.entry_hash
    assert written[-1]["certificate"] == writer.identity.fingerprint
    assert stat.S_IMODE(os.stat(writer.path).st_mode) == 0o600
    assert check(engine, writer) is None


def test_rolled_back_entries_are_never_checkpointed(
    engine: Engine, writer: CheckpointWriter
) -> None:
    add(engine, 1)
    with pytest.raises(RuntimeError), write_transaction(engine) as connection:
        audit.append(connection, actor="system", action="import", target="x")
        raise RuntimeError("the import failed after its audit entry")
    add(engine, 1)
    assert [c["head_id"] for c in lines(writer)] == [1, 2]
    assert check(engine, writer) is None


def test_group_commit_is_checkpointed_once_when_durable(
    engine: Engine, writer: CheckpointWriter
) -> None:
    for n in range(3):
        with write_transaction(engine, group_commit=True) as connection:
            audit.append(connection, actor="system", action="import", target=f"t{n}")
    assert not writer.path.exists()
    make_durable(engine)
    assert [c["head_id"] for c in lines(writer)] == [3]


def test_deleting_a_middle_entry_is_caught(engine: Engine, writer: CheckpointWriter) -> None:
    add(engine, 5)
    tamper(engine, "DELETE FROM audit_log WHERE id = 3")
    with engine.connect() as connection:
        broken = audit.verify(connection)
    assert broken is not None and broken.entry_id == 3
    assert broken.problem == "entry_missing"
    # The checkpointed head is still there: the chain walk is what names entry 3.
    assert check(engine, writer) is None


def test_deleting_the_newest_half_is_caught(engine: Engine, writer: CheckpointWriter) -> None:
    for _ in range(6):
        add(engine, 1)
    tamper(engine, "DELETE FROM audit_log WHERE id > 3")
    with engine.connect() as connection:
        assert audit.verify(connection) is None  # the shorter chain alone looks intact
    failure = check(engine, writer)
    assert failure is not None
    assert "checkpoint line 4 (entry 4): head_missing" in failure
    assert "the log ends at entry 3" in failure


def test_rewriting_and_rehashing_the_whole_chain_is_caught(
    engine: Engine, writer: CheckpointWriter
) -> None:
    add(engine, 4)
    with engine.connect() as connection:
        rows = connection.execute(select(audit.audit_log).order_by(audit.audit_log.c.id)).all()
    prev = audit.GENESIS_HASH
    statements = []
    for row in rows:
        actor = "intruder" if row.id == 2 else row.actor
        digest = audit.compute_hash(
            entry_id=row.id,
            at=row.at,
            actor=actor,
            action=row.action,
            target=row.target,
            detail=row.detail,
            prev_hash=prev,
        )
        statements.append((row.id, actor, prev, digest))
        prev = digest
    # prev_hash is unique: clear the chain first, then write the re-hashed one.
    rewrite = ["UPDATE audit_log SET prev_hash = 'x' || CAST(id AS TEXT)"] + [
        f"UPDATE audit_log SET actor = '{actor}', prev_hash = '{prev_hash}', "
        f"entry_hash = '{digest}' WHERE id = {entry_id}"
        for entry_id, actor, prev_hash, digest in statements
    ]
    tamper(engine, rewrite[0])  # drops the SQLite triggers for good
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        for statement in rewrite[1:]:
            connection.execute(text(statement))
        if connection.dialect.name == "postgresql":
            connection.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
    with engine.connect() as connection:
        assert audit.verify(connection) is None  # a perfect forgery of the chain
    failure = check(engine, writer)
    assert failure is not None and "head_mismatch" in failure and "(entry 4)" in failure


def test_a_checkpoint_with_a_bad_signature_is_caught(
    engine: Engine, writer: CheckpointWriter, tmp_path: Path
) -> None:
    add(engine, 2)
    add(engine, 1)
    text_lines = writer.path.read_text().splitlines()
    forged = json.loads(text_lines[0])
    forged["entries"] = 99  # any edit of a signed field
    copy = tmp_path / "copy.jsonl"
    copy.write_text(json.dumps(forged) + "\n" + text_lines[1] + "\n")
    failure = check(engine, writer, copy)
    assert failure is not None and failure.startswith("checkpoint line 1 (entry 2): bad_signature")


def test_a_checkpoint_signed_by_another_key_is_caught(
    engine: Engine, writer: CheckpointWriter, tmp_path: Path
) -> None:
    add(engine, 2)
    stranger = ensure_identity(tmp_path / "stranger", None, "Test Clinic")[0]
    forged_writer = CheckpointWriter(stranger, tmp_path / "forged.jsonl", "")
    with engine.connect() as connection:
        head = audit.current_head(connection)
    assert head is not None
    forged_writer.write(ChainHead(head.entry_id, head.entry_hash, head.count))
    failure = check(engine, writer, forged_writer.path)
    assert failure is not None and "foreign_signer" in failure


def test_checkpoint_reaches_the_syslog_socket(tmp_path: Path, identity: SigningIdentity) -> None:
    address = str(tmp_path / "log.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    receiver.settimeout(5)
    try:
        writer = CheckpointWriter(identity, tmp_path / "cp.jsonl", address)
        writer.write(ChainHead(7, "ab" * 32, 7))
        datagram = receiver.recv(65536).decode()
    finally:
        receiver.close()
    assert "pumptrail-audit[" in datagram
    assert '"head_id":7' in datagram
    # Facility authpriv (10) x 8 + severity info (6) = <86>.
    assert datagram.startswith("<86>")
