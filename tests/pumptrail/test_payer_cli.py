"""`pumptrail payer ...` and `pumptrail provider ...` from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from db import audit
from db.migrate import open_database
from db.payers import coverage
from evidence.payers import PROVIDER_ROLES
from pumptrail.cli import main
from pumptrail.commands import provider


def _db(tmp_path: Path) -> list[str]:
    return ["--data-dir", str(tmp_path)]


def _coverage_rows(tmp_path: Path) -> int:
    engine = open_database(f"sqlite:///{tmp_path / 'pumptrail.db'}")
    try:
        with engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(coverage)).scalar_one())
    finally:
        engine.dispose()


def _actions(tmp_path: Path) -> list[tuple[str, str]]:
    engine = open_database(f"sqlite:///{tmp_path / 'pumptrail.db'}")
    try:
        with engine.connect() as connection:
            entries = audit.show(connection, audit.AuditFilter(limit=None))
    finally:
        engine.dispose()
    return [(e.action, e.target) for e in entries]


def test_payer_add_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _db(tmp_path)
    assert main(["payer", "list", *db]) == 2  # no database yet: nothing is created
    capsys.readouterr()
    assert main(["payer", "add", "Acme", "--profile", "any-setting", "--payer-id", "A1", *db]) == 0
    assert "payer Acme: profile any-setting, payer ID A1" in capsys.readouterr().out
    assert main(["payer", "add", "acme", "--profile", "rate-dose", *db]) == 1
    assert "exists already" in capsys.readouterr().err
    assert main(["payer", "add", "Other", "--profile", "no-such", *db]) == 1
    assert "unknown profile 'no-such'" in capsys.readouterr().err
    assert main(["payer", "list", *db]) == 0
    out = capsys.readouterr().out
    assert "Acme" in out and "any-setting" in out and "A1" in out
    assert ("payer_add", "payer:1") in _actions(tmp_path)


def test_payer_assign(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _db(tmp_path)
    assert main(["payer", "add", "Acme", "--profile", "any-setting", *db]) == 0
    assert main(["payer", "assign", "P-1", "Acme", "--from", "2026-01-01", *db]) == 0
    assert "coverage 1: Acme from 2026-01-01 (open)" in capsys.readouterr().out
    assert main(["payer", "assign", "P-1", "Acme", "--from", "2026-03-01", *db]) == 1
    assert "overlaps" in capsys.readouterr().err
    assert (
        main(["payer", "assign", "P-2", "Acme", "--from", "2026-03-01", "--to", "2026-02-01", *db])
        == 1
    )
    assert "before it starts" in capsys.readouterr().err
    assert main(["payer", "assign", "P-2", "Acme", "--from", "03/01/2026", *db]) == 2
    assert "--from: not a date" in capsys.readouterr().err
    assert main(["payer", "list", *db]) == 0
    assert "P-1" in capsys.readouterr().out
    actions = _actions(tmp_path)
    assert ("coverage_add", "coverage:1") in actions
    assert not any("P-1" in target for _, target in actions)  # never the patient ID


def test_payer_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _db(tmp_path)
    assert main(["payer", "add", "Acme", "--profile", "any-setting", *db]) == 0
    assert main(["payer", "add", "Medicare", "--profile", "rate-dose", *db]) == 0
    good = tmp_path / "good.csv"
    good.write_text(
        "patient_id,payer,from,to\nP-1,Medicare,2026-01-01,2026-06-30\nP-1,Acme,2026-07-01,\n"
    )
    assert main(["payer", "import", str(good), *db]) == 0
    assert "2 coverage periods stored" in capsys.readouterr().out
    assert _coverage_rows(tmp_path) == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("patient_id,payer,from,to\nP-2,Acme,2026-01-01,\nP-3,Acme,2026-13-01,\n", "line 3: "),
        ("P-2,Acme,2026-01-01,\nP-3,Nobody,2026-01-01,\n", "line 2: no payer named 'Nobody'"),
        ("P-2,Acme,2026-01-01\nP-2,Acme,2026-02-01,2026-03-01\n", "line 2: overlaps"),
        ("P-2,Acme,2026-02-01,2026-01-01\n", "line 1: the period ends"),
        ("P-2,Acme\n", "line 1: expected 4 columns"),
    ],
)
def test_payer_import_with_a_bad_line_stores_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, message: str
) -> None:
    db = _db(tmp_path)
    assert main(["payer", "add", "Acme", "--profile", "any-setting", *db]) == 0
    bad = tmp_path / "bad.csv"
    bad.write_text(body)
    capsys.readouterr()
    assert main(["payer", "import", str(bad), *db]) == 1
    err = capsys.readouterr().err
    assert message in err and "nothing was stored" in err
    assert _coverage_rows(tmp_path) == 0


def test_provider_add_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _db(tmp_path)
    args = ["--name", "Dr. Lee", "--role", "physician", *db]
    assert main(["provider", "add", "OP7", "--npi", "1234567893", *args]) == 0
    assert "operator OP7: Dr. Lee, physician, NPI 1234567893" in capsys.readouterr().out
    assert main(["provider", "add", "OP8", "--npi", "1234567890", *args]) == 1
    assert "not a valid NPI" in capsys.readouterr().err
    assert main(["provider", "list", *db]) == 0
    out = capsys.readouterr().out
    assert "OP7" in out and "OP8" not in out
    assert ("provider_add", "operator:OP7") in _actions(tmp_path)


def test_provider_roles_match_the_evidence_room() -> None:
    assert provider.ROLES == PROVIDER_ROLES
