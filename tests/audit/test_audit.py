"""The hash-chained audit log on SQLite and PostgreSQL.

Tampering is simulated as an attacker would have to do it: the append-only
triggers are dropped (SQLite) or disabled (PostgreSQL, `DISABLE TRIGGER USER`)
first, since pumptrail itself has no UPDATE or DELETE of audit entries.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session as OrmSession

from db import audit
from db.engine import write_transaction
from db.migrate import alembic_config, open_database
from db.models import utc_now
from parsers.records import PatientRec
from tests.ingest.exports import binary, history, importer, write


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = open_database(db_url)
    try:
        yield eng
    finally:
        eng.dispose()


def add(engine: Engine, count: int, **fields: str) -> list[audit.AuditEntry]:
    entries = []
    with write_transaction(engine) as connection:
        for n in range(count):
            entries.append(
                audit.append(
                    connection,
                    actor=fields.get("actor", "system"),
                    action=fields.get("action", "import"),
                    target=fields.get("target", f"target-{n}"),
                    detail={"n": n, "sha256": "ab" * 32},
                )
            )
    return entries


def tamper(engine: Engine, statement: str) -> None:
    """Run `statement` with the append-only triggers out of the way, as an attacker must."""
    with engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            connection.execute(text("DROP TRIGGER audit_log_no_update"))
            connection.execute(text("DROP TRIGGER audit_log_no_delete"))
            connection.execute(text(statement))
        else:
            connection.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
            connection.execute(text(statement))
            connection.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))


def verify(engine: Engine, head: tuple[int, str] | None = None) -> audit.AuditBreak | None:
    with engine.connect() as connection:
        return audit.verify(connection, head=head)


# ---------------------------------------------------------------------------
# The chain


def test_entries_form_a_chain_from_the_genesis_hash(engine: Engine) -> None:
    entries = add(engine, 4)
    assert [e.id for e in entries] == [1, 2, 3, 4]
    assert entries[0].prev_hash == audit.GENESIS_HASH
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.entry_hash
    assert len({e.entry_hash for e in entries}) == 4
    assert verify(engine) is None
    with engine.connect() as connection:
        stored = audit.show(connection, audit.AuditFilter(limit=None))
        head = audit.current_head(connection)
    assert stored == entries
    assert head == audit.AuditHead(4, 4, entries[-1].entry_hash)
    assert str(head) == f"4:{entries[-1].entry_hash}"


def test_hash_covers_every_field_in_a_canonical_form(engine: Engine) -> None:
    (entry,) = add(engine, 1)
    fields = {
        "entry_id": entry.id,
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "detail": audit.detail_text(entry.detail),
        "prev_hash": entry.prev_hash,
    }
    assert audit.compute_hash(**fields) == entry.entry_hash  # type: ignore[arg-type]
    for name, other in (
        ("entry_id", 2),
        ("at", entry.at + timedelta(microseconds=1)),
        ("actor", "cli:mallory"),
        ("action", "export_packet"),
        ("target", "another"),
        ("detail", '{"n":1}'),
        ("prev_hash", "f" * 64),
    ):
        assert audit.compute_hash(**{**fields, name: other}) != entry.entry_hash  # type: ignore[arg-type]
    # Detail keys are sorted, so the caller's key order does not change the hash.
    assert audit.detail_text({"b": 1, "a": 2}) == audit.detail_text({"a": 2, "b": 1})


def test_entries_survive_the_round_trip_with_microseconds(engine: Engine) -> None:
    (entry,) = add(engine, 1)
    with engine.connect() as connection:
        (stored,) = audit.show(connection)
    assert stored.at == entry.at
    assert stored.detail == {"n": 0, "sha256": "ab" * 32}


def test_append_commits_and_rolls_back_with_the_callers_transaction(engine: Engine) -> None:
    with pytest.raises(RuntimeError, match="boom"), write_transaction(engine) as connection:
        audit.append(connection, actor="system", action="import", target="s1")
        raise RuntimeError("boom")
    add(engine, 1)
    with engine.connect() as connection:
        (only,) = audit.show(connection)
    # The rolled-back entry left no hole: the next one is entry 1.
    assert only.id == 1
    assert verify(engine) is None


def test_append_outside_a_transaction_is_refused(engine: Engine) -> None:
    with engine.connect() as connection:
        with pytest.raises(RuntimeError, match="inside the caller's transaction"):
            audit.append(connection, actor="system", action="import")
        assert connection.execute(select(func.count()).select_from(audit.audit_log)).scalar() == 0


def test_append_takes_an_orm_session(engine: Engine) -> None:
    with OrmSession(engine) as session, session.begin():
        entry = audit.append(session, actor="dr.lee", action="login", target="dr.lee")
    assert entry.id == 1
    assert verify(engine) is None


@pytest.mark.parametrize(
    "detail",
    [
        {"patient_id": "SYN-1234567"},
        {"changes": [{"patient": {"name": "Doe, Jane"}}]},
        {"file": "Doe_Jane.psl"},
        {"Name": "Doe, Jane"},
    ],
)
def test_detail_naming_patient_data_or_files_is_refused(
    engine: Engine, detail: dict[str, object]
) -> None:
    with (
        write_transaction(engine) as connection,
        pytest.raises(ValueError, match="never carry patient identifiers"),
    ):
        audit.append(connection, actor="system", action="view_session", detail=detail)
    with engine.connect() as connection:
        assert audit.show(connection) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"actor": "", "action": "import"}, "audit actor"),
        ({"actor": "x" * 129, "action": "import"}, "audit actor"),
        ({"actor": "system", "action": "Import"}, "snake_case"),
        ({"actor": "system", "action": "replay verify"}, "snake_case"),
        ({"actor": "system", "action": "import", "target": "t" * 129}, "target longer"),
    ],
)
def test_malformed_entries_are_refused(
    engine: Engine, fields: dict[str, str], message: str
) -> None:
    with write_transaction(engine) as connection, pytest.raises(ValueError, match=message):
        audit.append(connection, **fields)  # type: ignore[arg-type]


def test_detail_that_is_not_json_is_refused(engine: Engine) -> None:
    with write_transaction(engine) as connection, pytest.raises(TypeError, match="not JSON"):
        audit.append(connection, actor="system", action="import", detail={"at": datetime.now()})


def test_concurrent_appenders_keep_one_unbroken_chain(engine: Engine) -> None:
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for n in range(8):
                # A plain (deferred) transaction: append must take the lock itself.
                with engine.begin() as connection:
                    audit.append(
                        connection, actor=f"user{worker}", action="login", target=f"{worker}-{n}"
                    )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with engine.connect() as connection:
        entries = audit.show(connection, audit.AuditFilter(limit=None))
    assert [e.id for e in entries] == list(range(1, 33))
    assert sorted(e.target for e in entries) == sorted(
        f"{w}-{n}" for w in range(4) for n in range(8)
    )
    assert verify(engine) is None


# ---------------------------------------------------------------------------
# Append-only and tampering (item 5)


def test_update_delete_and_truncate_are_refused_by_the_database(engine: Engine) -> None:
    add(engine, 2)
    statements = [
        "UPDATE audit_log SET actor = 'cli:mallory' WHERE id = 1",
        "DELETE FROM audit_log WHERE id = 2",
    ]
    if engine.dialect.name == "postgresql":
        statements.append("TRUNCATE audit_log")  # SQLite has no TRUNCATE
    for statement in statements:
        with pytest.raises(DBAPIError, match="audit_log is append-only"), engine.begin() as c:
            c.execute(text(statement))
    assert verify(engine) is None


def test_edited_entry_is_named(engine: Engine) -> None:
    add(engine, 5)
    tamper(engine, "UPDATE audit_log SET target = 'someone-else' WHERE id = 3")
    broken = verify(engine)
    assert broken is not None
    assert (broken.entry_id, broken.problem) == (3, "hash_mismatch")
    assert "the entry was edited" in broken.message


def test_edited_detail_is_named(engine: Engine) -> None:
    add(engine, 3)
    tamper(engine, """UPDATE audit_log SET detail = '{"n": 99}' WHERE id = 2""")
    broken = verify(engine)
    assert broken is not None
    assert (broken.entry_id, broken.problem) == (2, "hash_mismatch")


def test_edited_entry_with_its_hash_recomputed_breaks_the_next_link(engine: Engine) -> None:
    entries = add(engine, 4)
    forged = entries[1]
    new_hash = audit.compute_hash(
        entry_id=forged.id,
        at=forged.at,
        actor="cli:mallory",
        action=forged.action,
        target=forged.target,
        detail=audit.detail_text(forged.detail),
        prev_hash=forged.prev_hash,
    )
    tamper(
        engine,
        f"UPDATE audit_log SET actor = 'cli:mallory', entry_hash = '{new_hash}' WHERE id = 2",
    )
    broken = verify(engine)
    assert broken is not None
    assert (broken.entry_id, broken.problem) == (3, "prev_hash_mismatch")
    assert "replaced or the chain re-linked" in broken.message


def test_deleted_entry_is_named(engine: Engine) -> None:
    add(engine, 5)
    tamper(engine, "DELETE FROM audit_log WHERE id = 3")
    broken = verify(engine)
    assert broken is not None
    assert (broken.entry_id, broken.problem) == (3, "entry_missing")
    assert "entry 3 is missing (deleted); the next entry is 4" in broken.message


def test_deleted_first_entries_are_named(engine: Engine) -> None:
    add(engine, 4)
    tamper(engine, "DELETE FROM audit_log WHERE id <= 2")
    broken = verify(engine)
    assert broken is not None
    assert (broken.entry_id, broken.problem) == (1, "entry_missing")
    assert "entries 1-2 are missing" in broken.message


def test_deleted_newest_entries_are_caught_with_the_noted_head(engine: Engine) -> None:
    entries = add(engine, 4)
    head = (entries[-1].id, entries[-1].entry_hash)
    assert verify(engine, head) is None
    tamper(engine, "DELETE FROM audit_log WHERE id = 4")
    # The shorter chain is still a valid chain: only the noted head tells.
    assert verify(engine) is None
    broken = verify(engine, head)
    assert broken is not None
    assert (broken.entry_id, broken.problem) == (4, "head_missing")
    assert "the log ends at entry 3" in broken.message


def test_rewritten_tail_is_caught_with_the_noted_head(engine: Engine) -> None:
    entries = add(engine, 3)
    head = (entries[-1].id, entries[-1].entry_hash)
    tamper(engine, "DELETE FROM audit_log WHERE id = 3")
    add(engine, 1, actor="cli:mallory")  # a new, valid entry 3 in place of the old one
    assert verify(engine) is None
    broken = verify(engine, head)
    assert broken is not None
    assert (broken.entry_id, broken.problem) == (3, "head_mismatch")


def test_parse_head() -> None:
    digest = "0123456789abcdef" * 4
    assert audit.parse_head(f"12:{digest}") == (12, digest)
    for bad in ("12", f"x:{digest}", "12:abc", f"12:{digest.upper()}"):
        with pytest.raises(ValueError, match="expected ID:SHA256"):
            audit.parse_head(bad)


# ---------------------------------------------------------------------------
# show


def test_show_filters_and_keeps_the_newest(engine: Engine) -> None:
    add(engine, 3, actor="system", action="import")
    add(engine, 2, actor="dr.lee", action="view_session", target="s-1")
    add(engine, 1, actor="dr.lee", action="login", target="dr.lee")
    with engine.connect() as connection:

        def ids(**filters: object) -> list[int]:
            chosen = audit.show(connection, audit.AuditFilter(**filters))  # type: ignore[arg-type]
            return [e.id for e in chosen]

        assert ids(limit=None) == [1, 2, 3, 4, 5, 6]
        assert ids(action="import") == [1, 2, 3]
        assert ids(actor="dr.lee") == [4, 5, 6]
        assert ids(target="s-1") == [4, 5]
        assert ids(actor="dr.lee", action="login") == [6]
        assert ids(limit=2) == [5, 6]
        assert ids(since=datetime(2000, 1, 1)) == [1, 2, 3, 4, 5, 6]
        assert ids(since=utc_now() + timedelta(days=1)) == []


# ---------------------------------------------------------------------------
# The migration


def test_migration_0002_adds_and_removes_the_table_and_its_triggers(engine: Engine) -> None:
    with write_transaction(engine) as connection:
        command.downgrade(alembic_config(connection), "0001")
    with engine.connect() as connection:
        assert "audit_log" not in inspect(connection).get_table_names()
        assert _trigger_names(connection) == set()
    with write_transaction(engine) as connection:
        command.upgrade(alembic_config(connection), "0002")
    with engine.connect() as connection:
        assert "audit_log" in inspect(connection).get_table_names()
        names = _trigger_names(connection)
    expected = (
        {"audit_log_no_update", "audit_log_no_delete"}
        if engine.dialect.name == "sqlite"
        else {"audit_log_no_update_delete", "audit_log_no_truncate"}
    )
    assert names == expected


def _trigger_names(connection: Connection) -> set[str]:
    if connection.dialect.name == "sqlite":
        rows = connection.execute(
            text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'")
        )
    else:
        rows = connection.execute(
            text(
                "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
                "AND tgrelid = to_regclass('audit_log')"
            )
        )
    return {row[0] for row in rows}


# ---------------------------------------------------------------------------
# Imports and quarantines are audited, without patient identifiers or file names


def test_imports_and_refusals_are_audited_without_patient_data(db_url: str, tmp_path: Path) -> None:
    scenario = history(31, visits=1)[0]
    patient = next(r for r in scenario.records if isinstance(r, PatientRec))
    patient_id, patient_name = patient.patient_id, patient.patient_name
    # File names carry the patient, as clinics' exports often do.
    good = write(tmp_path, f"{patient_name} {patient_id}.psl", binary(scenario))
    bad = write(tmp_path, f"{patient_name} broken.psl", b"PSL\x00 not an export")
    with importer(db_url, tmp_path / "raw") as imp:
        imp.actor = "cli:tester"
        imported = imp.import_path(good)
        refused = imp.import_path(bad)
        again = imp.import_path(good)  # identical bytes: nothing stored, but audited
        with imp.engine.connect() as connection:
            entries = audit.show(connection)
            rows = connection.execute(select(audit.audit_log)).all()
            assert audit.verify(connection) is None
    assert (imported.outcome, refused.outcome, again.outcome) == (
        "imported",
        "refused",
        "duplicate",
    )
    assert [(e.actor, e.action, e.target) for e in entries] == [
        ("cli:tester", "import", scenario.header.session_id),
        ("cli:tester", "quarantine", refused.sha256),
        ("cli:tester", "import", scenario.header.session_id),
    ]
    assert entries[0].detail["sha256"] == imported.sha256
    assert entries[2].detail["sha256"] == imported.sha256
    assert entries[2].detail["outcome"] == "duplicate"
    assert entries[0].detail["outcome"] == "imported"
    assert entries[0].detail["source_format"] == "psl-binary"
    assert entries[1].detail["outcome"] == "refused"
    assert entries[1].detail["error_code"] == (refused.error or {}).get("code")
    everything = json.dumps([list(map(str, row)) for row in rows], ensure_ascii=False)
    for secret in (patient_id, patient_name, patient_name.split(",")[0], good.name, bad.name):
        assert secret not in everything
