"""`pumptrail audit verify` and `pumptrail audit show`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from db import audit
from db.checkpoints import AnchorConfig, anchor_engine
from db.engine import safe_url_text, write_transaction
from db.migrate import open_database
from pumptrail.cli import main


def fill(db_url: str, tmp_path: Path) -> list[audit.AuditEntry]:
    """Three entries, committed through an engine anchored as the software's are."""
    engine = open_database(db_url)
    anchor_engine(engine, AnchorConfig(tmp_path / "data", syslog_address=""))
    try:
        with write_transaction(engine) as connection:
            return [
                audit.append(connection, actor="system", action="import", target="s-1"),
                audit.append(connection, actor="dr.lee", action="login", target="dr.lee"),
                audit.append(
                    connection,
                    actor="dr.lee",
                    action="view_session",
                    target="s-1",
                    detail={"profile": "rate-dose"},
                ),
            ]
    finally:
        engine.dispose()


def args(db_url: str, tmp_path: Path, *words: str) -> list[str]:
    return ["audit", *words, "--db", db_url, "--data-dir", str(tmp_path / "data")]


def checked(db_url: str, tmp_path: Path) -> str:
    """What a result line names as the database and data folder it checked."""
    return f"(database {safe_url_text(db_url)}, data folder {tmp_path / 'data'})"


def test_verify_intact_prints_the_head(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = fill(db_url, tmp_path)
    assert main(args(db_url, tmp_path, "verify")) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == (
        f"audit log intact: 3 entries; head 3:{entries[-1].entry_hash} {checked(db_url, tmp_path)}"
    )
    assert lines[1].startswith("checkpoints: 1 signed checkpoints verified in ")
    assert "the newest covers entry 3" in lines[1]
    assert len(lines) == 2
    assert main(args(db_url, tmp_path, "verify", "--head", f"3:{entries[-1].entry_hash}")) == 0


def test_verify_empty_log(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    open_database(db_url).dispose()
    assert main(args(db_url, tmp_path, "verify")) == 0
    assert (
        capsys.readouterr().out == f"audit log intact: no entries yet {checked(db_url, tmp_path)}\n"
    )


def test_verify_names_the_first_broken_entry_and_exits_1(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(db_url, tmp_path)
    engine = open_database(db_url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "sqlite":
                connection.execute(text("DROP TRIGGER audit_log_no_delete"))
            else:
                connection.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
            connection.execute(text("DELETE FROM audit_log WHERE id = 2"))
    finally:
        engine.dispose()
    assert main(args(db_url, tmp_path, "verify")) == 1
    assert capsys.readouterr().out == (
        "audit log broken at entry 2: entry_missing: entry 2 is missing (deleted); "
        f"the next entry is 3 {checked(db_url, tmp_path)}\n"
    )


def test_verify_with_a_head_that_is_gone_exits_1(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(db_url, tmp_path)
    assert main(args(db_url, tmp_path, "verify", "--head", "9:" + "a" * 64)) == 1
    assert "audit log broken at entry 9: head_missing" in capsys.readouterr().out


def test_verify_with_a_malformed_head_exits_2(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args(db_url, tmp_path, "verify", "--head", "three")) == 2
    assert "--head: expected ID:SHA256" in capsys.readouterr().err


def test_show_lists_filtered_entries(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = fill(db_url, tmp_path)
    assert main(args(db_url, tmp_path, "show", "--actor", "dr.lee")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].split() == [
        "2",
        audit.at_text(entries[1].at),
        "dr.lee",
        "login",
        "dr.lee",
        "{}",
    ]
    assert lines[1].split()[2:] == ["dr.lee", "view_session", "s-1", '{"profile":"rate-dose"}']

    assert main(args(db_url, tmp_path, "show", "--target", "s-1", "--action", "import")) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["1"]

    # Each listing is itself recorded (view_audit): ask for the newest view_session.
    assert (
        main(args(db_url, tmp_path, "show", "--action", "view_session", "--limit", "1", "--json"))
        == 0
    )
    (line,) = capsys.readouterr().out.splitlines()
    shown = json.loads(line)
    assert shown["id"] == 3
    assert shown["entry_hash"] == entries[2].entry_hash
    assert shown["prev_hash"] == entries[1].entry_hash
    assert shown["detail"] == {"profile": "rate-dose"}

    assert main(args(db_url, tmp_path, "show", "--since", "2999-01-01")) == 0
    assert capsys.readouterr().out == f"no audit entries {checked(db_url, tmp_path)}\n"


def test_show_refuses_a_negative_limit(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args(db_url, tmp_path, "show", "--limit", "-1")) == 2
    assert "--limit must not be negative" in capsys.readouterr().err


def test_each_listing_is_recorded_with_the_entries_it_showed(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(db_url, tmp_path)
    assert main(args(db_url, tmp_path, "show", "--actor", "dr.lee")) == 0
    capsys.readouterr()
    engine = open_database(db_url)
    try:
        with engine.connect() as connection:
            (entry,) = audit.show(connection, audit.AuditFilter(action=audit.VIEW_AUDIT))
    finally:
        engine.dispose()
    assert entry.actor.startswith("cli:")
    assert entry.detail["route"] == "pumptrail audit show"
    assert entry.detail["filters"] == {"actor": "dr.lee", "limit": 100}
    assert entry.detail["entry_ids"] == ["2", "3"] and entry.detail["shown"] == 2
    assert entry.detail["client"].startswith("cli@")
    # An empty answer shows nothing and records nothing.
    assert main(args(db_url, tmp_path, "show", "--since", "2999-01-01")) == 0
    engine = open_database(db_url)
    try:
        with engine.connect() as connection:
            assert len(audit.show(connection, audit.AuditFilter(action=audit.VIEW_AUDIT))) == 1
    finally:
        engine.dispose()
