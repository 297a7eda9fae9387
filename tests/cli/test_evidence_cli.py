"""`pumptrail evidence`: the readable table and the JSON of docs/session-json.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from db.engine import safe_url_text
from db.migrate import open_database
from evidence.derive import SESSION_FLAG_ORDER
from fixtures.scenario import Scenario
from pumptrail.cli import main
from tests.ingest.exports import history, write_binaries

EVIDENCE_KEYS = {
    "session_id",
    "pump_serial",
    "session_start_utc",
    "prior_session_id",
    "operator_role",
    "refill",
    "changes",
    "codes",
    "supplies",
    "documentation",
    "flags",
}
REFILL_KEYS = {
    "expected_residual_ul",
    "recomputed_expected_ul",
    "aspirated_ul",
    "added_ul",
    "new_volume_ul",
    "discrepancy_ul",
}
CHANGE_KEYS = {"parameter", "category", "before", "after", "when", "reason", "flags"}


@pytest.fixture
def two_pumps(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> dict[str, list[Scenario]]:
    """Pump Z has 3 sessions, pump A 2; imported with Z's files first."""
    pumps = {"ITP40-ZZZZZZ": history(31, visits=3, serial="ITP40-ZZZZZZ")}
    pumps["ITP40-AAAAAA"] = history(32, visits=2, serial="ITP40-AAAAAA")
    for serial, scenarios in pumps.items():
        write_binaries(tmp_path / "in" / serial, scenarios)
    assert main(["import", str(tmp_path / "in"), "--db", db_url]) == 0
    capsys.readouterr()
    return pumps


def evidence_json(db_url: str, capsys: pytest.CaptureFixture[str], *extra: str) -> list[Any]:
    assert main(["evidence", "--json", "--db", db_url, *extra]) == 0
    documents: list[Any] = json.loads(capsys.readouterr().out)
    return documents


def test_json_is_the_session_json_evidence_array(
    db_url: str, two_pumps: dict[str, list[Scenario]], capsys: pytest.CaptureFixture[str]
) -> None:
    documents = evidence_json(db_url, capsys)
    # Ordered by pump serial, then session start.
    expected_order = [
        s.header.session_id for serial in sorted(two_pumps) for s in two_pumps[serial]
    ]
    assert [d["session_id"] for d in documents] == expected_order
    for document in documents:
        assert set(document) >= EVIDENCE_KEYS
        assert set(document["codes"]) >= {"rate-dose", "rate-dose-alarms", "any-setting"}
        for code in document["codes"].values():
            assert {"procedure", "reprogrammed", "refill"} <= set(code)
            assert code["procedure"] in {"62367", "62368", "62369", "62370", "95990", "95991"}
        for change in document["changes"]:
            assert set(change) >= CHANGE_KEYS
        if document["refill"] is not None:
            assert set(document["refill"]) >= REFILL_KEYS
        assert all(flag in SESSION_FLAG_ORDER for flag in document["flags"])
        statuses = {item["status"] for item in document["documentation"]}
        assert statuses <= {"proven_by_log", "missing_from_log", "note_must_state"}
    firsts = [d for d in documents if d["prior_session_id"] is None]
    assert len(firsts) == 2
    assert all("no_prior_session" in d["flags"] for d in firsts)


def test_filters_by_session_and_pump(
    db_url: str, two_pumps: dict[str, list[Scenario]], capsys: pytest.CaptureFixture[str]
) -> None:
    target = two_pumps["ITP40-ZZZZZZ"][1].header.session_id
    only = evidence_json(db_url, capsys, "--session", target)
    assert [d["session_id"] for d in only] == [target]
    pump = evidence_json(db_url, capsys, "--pump", "ITP40-AAAAAA")
    assert [d["pump_serial"] for d in pump] == ["ITP40-AAAAAA"] * 2
    assert evidence_json(db_url, capsys, "--pump", "NOPE") == []


def test_unknown_session_exits_1(
    db_url: str, two_pumps: dict[str, list[Scenario]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evidence", "--db", db_url, "--session", "no-such-id"]) == 1
    assert "no stored session no-such-id" in capsys.readouterr().err


def test_table_shows_changes_codes_counterfactuals_flags_checklist(
    db_url: str, two_pumps: dict[str, list[Scenario]], capsys: pytest.CaptureFixture[str]
) -> None:
    documents = {d["session_id"]: d for d in evidence_json(db_url, capsys)}
    target = two_pumps["ITP40-ZZZZZZ"][1].header.session_id  # a refill visit
    document = documents[target]
    assert main(["evidence", "--db", db_url, "--session", target]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"Session {target}"
    assert f"  pump ITP40-ZZZZZZ, started {document['session_start_utc']}" in out
    assert f"  prior session: {document['prior_session_id']}" in lines
    flags = ", ".join(document["flags"]) or "none"
    assert f"  flags: {flags}" in lines
    assert "  what changed:" in lines
    header = next(line for line in lines if line.strip().startswith("setting"))
    assert header.split() == ["setting", "category", "when", "before", "after", "reason", "flags"]
    for change in document["changes"]:
        row = next(line for line in lines if line.strip().startswith(change["parameter"] + " "))
        assert change["when"] in row
    assert "  codes:" in lines
    for profile, code in document["codes"].items():
        assert any(
            line.strip().startswith(profile + " ") and code["procedure"] in line for line in lines
        )
        if code.get("counterfactual"):
            assert code["counterfactual"] in out
    assert "  checklist:" in lines
    assert any(line.startswith("    proven by the log: ") for line in lines)
    assert "  refill: expected " in out


def test_empty_database_prints_no_sessions(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    open_database(db_url).dispose()
    data = tmp_path / "data"
    assert main(["evidence", "--db", db_url, "--data-dir", str(data)]) == 0
    assert capsys.readouterr().out == (
        f"no sessions (database {safe_url_text(db_url)}, data folder {data})\n"
    )
    assert main(["evidence", "--json", "--db", db_url]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_a_clinic_rules_dir_adds_its_payer_profile_to_every_import(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "profiles.toml").write_text(
        '[[profile]]\nname = "payer-x"\ncategories = ["prescription", "ptm", "reservoir"]\n'
        'held_by = "Payer X policy 12"\ndescription = "reservoir volume counts"\n',
        "utf-8",
    )
    write_binaries(tmp_path / "in", history(33, visits=2))
    assert (
        main(["import", str(tmp_path / "in"), "--db", db_url, "--rules-dir", str(rules_dir)]) == 0
    )
    capsys.readouterr()
    documents = evidence_json(db_url, capsys)
    assert len(documents) == 2
    for document in documents:
        assert list(document["codes"]) == [
            "rate-dose",
            "rate-dose-alarms",
            "any-setting",
            "payer-x",
        ]
    # A broken rules file stops the command (exit 2) and names the file.
    (rules_dir / "profiles.toml").write_text("[[profile]\n", "utf-8")
    assert (
        main(["import", str(tmp_path / "in"), "--db", db_url, "--rules-dir", str(rules_dir)]) == 2
    )
    assert "profiles.toml" in capsys.readouterr().err


def test_every_answer_with_sessions_is_audited(
    db_url: str,
    two_pumps: dict[str, list[Scenario]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from db import audit

    documents = evidence_json(db_url, capsys, "--pump", "ITP40-AAAAAA")
    one = documents[0]["session_id"]
    assert main(["evidence", "--db", db_url, "--session", one]) == 0
    capsys.readouterr()
    engine = open_database(db_url)
    try:
        with engine.connect() as connection:
            listed = audit.show(connection, audit.AuditFilter(action=audit.VIEW_SESSIONS))
            single = audit.show(connection, audit.AuditFilter(action=audit.VIEW_SESSION))
    finally:
        engine.dispose()
    (entry,) = listed
    assert entry.actor.startswith("cli:")
    assert entry.detail["route"] == "pumptrail evidence"
    assert entry.detail["filters"] == {"pump": "ITP40-AAAAAA", "json": True}
    assert entry.detail["session_ids"] == [d["session_id"] for d in documents]
    (entry,) = single
    assert entry.target == one and entry.detail["session_ids"] == [one]
