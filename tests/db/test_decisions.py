"""Decision versions on SQLite and PostgreSQL: every sign-off a new version, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from db.decisions import (
    UnknownSession,
    current_decision,
    decision_versions,
    decisions_on_day,
    list_decisions,
    sign_off,
)
from db.engine import write_transaction
from db.models import sessions
from tests.ingest.exports import binary, history, importer


@pytest.fixture
def stored(db_url: str, tmp_path: Path) -> tuple[str, list[str]]:
    ids = []
    with importer(db_url, tmp_path / "raw") as imp:
        for index, scenario in enumerate(history(41, visits=3)):
            result = imp.import_bytes(binary(scenario), name=f"v{index}.psl")
            assert result.session_id is not None
            ids.append(result.session_id)
    return db_url, ids


def test_each_sign_off_is_a_new_version_and_earlier_ones_stay(
    stored: tuple[str, list[str]],
) -> None:
    from db.migrate import open_database

    url, ids = stored
    engine = open_database(url)
    try:
        with write_transaction(engine) as connection:
            first = sign_off(connection, ids[0], {"procedure": "62369"}, author="cora")
        with write_transaction(engine) as connection:
            second = sign_off(
                connection,
                ids[0],
                {"procedure": "95990", "reason": "no rate change"},
                author="dora",
            )
        with engine.connect() as connection:
            versions = decision_versions(connection, ids[0])
            current = current_decision(connection, ids[0])
            assert current_decision(connection, ids[1]) is None
    finally:
        engine.dispose()
    assert (first.version, second.version) == (1, 2)
    assert [(v.version, v.procedure, v.author) for v in versions] == [
        (1, "62369", "cora"),
        (2, "95990", "dora"),
    ]
    assert current is not None and current.decision == {
        "procedure": "95990",
        "reason": "no rate change",
    }


def test_a_rolled_back_sign_off_leaves_no_version(stored: tuple[str, list[str]]) -> None:
    from db.migrate import open_database

    url, ids = stored
    engine = open_database(url)
    try:
        with pytest.raises(RuntimeError), write_transaction(engine) as connection:
            sign_off(connection, ids[0], {"procedure": "62369"}, author="cora")
            raise RuntimeError("the audit entry failed")
        with engine.connect() as connection:
            assert decision_versions(connection, ids[0]) == []
        with pytest.raises(UnknownSession), write_transaction(engine) as connection:
            sign_off(connection, "no-such-session", {"procedure": "62369"}, author="cora")
    finally:
        engine.dispose()


def test_lists_by_status_and_the_same_day_decisions_of_a_patient(
    stored: tuple[str, list[str]],
) -> None:
    from db.migrate import open_database

    url, ids = stored
    engine = open_database(url)
    try:
        with write_transaction(engine) as connection:
            sign_off(connection, ids[1], {"procedure": "62368"}, author="cora")
        with engine.connect() as connection:
            everything = list_decisions(connection)
            signed = list_decisions(connection, status="signed")
            unsigned = list_decisions(connection, status="unsigned")
            row = connection.execute(
                select(sessions.c.patient_id, sessions.c.session_start_local).where(
                    sessions.c.session_id == ids[1]
                )
            ).one()
            same_day = decisions_on_day(connection, row[0], row[1].date())
            excluded = decisions_on_day(connection, row[0], row[1].date(), except_session=ids[1])
            later = list_decisions(connection, since=row[1].date().replace(year=row[1].year + 5))
    finally:
        engine.dispose()
    assert sorted(r.session_id for r in everything) == sorted(ids)
    assert [(r.session_id, r.status, r.procedure) for r in signed] == [(ids[1], "signed", "62368")]
    assert sorted(r.session_id for r in unsigned) == sorted([ids[0], ids[2]])
    assert [d.session_id for d in same_day] == [ids[1]]
    assert excluded == [] and later == []


def test_decisions_list_command(
    stored: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from db.migrate import open_database
    from pumptrail.cli import main

    url, ids = stored
    engine = open_database(url)
    try:
        with write_transaction(engine) as connection:
            sign_off(connection, ids[2], {"procedure": "62370"}, author="cora")
    finally:
        engine.dispose()
    assert main(["decisions", "list", "--db", url, "--status", "signed", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["session_id"], r["version"], r["procedure"], r["signed_by"]) for r in rows] == [
        (ids[2], 1, "62370", "cora")
    ]
    assert main(["decisions", "list", "--db", url, "--status", "unsigned"]) == 0
    out = capsys.readouterr().out
    assert ids[0] in out and ids[1] in out and ids[2] not in out
    assert "2 session(s) (database" in out
