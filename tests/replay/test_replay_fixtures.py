"""`pumptrail replay --fixtures DIR` and the pump-year case folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evidence import default_rules
from fixtures import replay_build
from fixtures.binary_writer import encode_binary
from fixtures.csv_writer import encode_csv
from ingest.replay.fixtures import EXPECTED_FILE, case_exports, check_case, derive_case
from pumptrail.cli import main
from tests.ingest.exports import history, with_other_note

CASE = Path(replay_build.__file__).resolve().parent / "replay" / "pump-year"
CLEAN = f"case {CASE}: 11 exports (0 identical), 10 sessions of 1 pump: evidence as expected"


def replay(folder: Path, tmp_path: Path, *words: str) -> list[str]:
    # --data-dir points nowhere: --fixtures must not open or create a database.
    return ["replay", "--fixtures", str(folder), *words, "--data-dir", str(tmp_path / "none")]


@pytest.fixture
def case_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "case"
    shutil.copytree(CASE, folder)
    return folder


def test_pump_year_replays_clean_without_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(replay(CASE, tmp_path)) == 0
    assert capsys.readouterr().out == CLEAN + "\n"
    assert not (tmp_path / "none").exists()


def test_an_edited_expected_value_exits_1_and_is_named(
    case_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = case_copy / EXPECTED_FILE
    documents = json.loads(path.read_text("utf-8"))
    target = documents[2]
    code = target["codes"]["rate-dose"]["procedure"]
    target["codes"]["rate-dose"]["procedure"] = "62368"
    target["refill"] = {"added_ul": 1}
    path.write_text(json.dumps(documents, indent=2), "utf-8")
    assert main(replay(case_copy, tmp_path)) == 1
    lines = capsys.readouterr().out.splitlines()
    session = f"session {target['session_id']}: evidence: "
    assert lines == [
        session + "evidence.refill: {" + '"added_ul": 1} -> null',
        session + f'evidence.codes.rate-dose.procedure: "62368" -> "{code}"',
        f"case {case_copy}: 11 exports (0 identical), 10 sessions of 1 pump: "
        "2 differences in 1 session or file",
    ]


def test_a_session_missing_from_the_expectations_or_the_exports_is_named(
    case_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = case_copy / EXPECTED_FILE
    documents = json.loads(path.read_text("utf-8"))
    dropped = documents.pop(0)
    invented = dict(documents[0], session_id="00000000-0000-4000-8000-000000000000")
    documents.append(invented)
    path.write_text(json.dumps(documents), "utf-8")
    assert main(replay(case_copy, tmp_path)) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        f"session {invented['session_id']}: evidence_missing: evidence: expected, but no "
        "export in the folder gives this session",
        f"session {dropped['session_id']}: evidence_extra: evidence: derived from the "
        "exports, but not in expected-evidence.json",
    ]


def test_an_edited_export_is_caught(
    case_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = case_copy / "2025-07-23-visit06.csv"
    original = export.read_bytes()
    assert b"Operator Role;Nurse" in original
    export.write_bytes(original.replace(b"Operator Role;Nurse", b"Operator Role;Physician"))
    assert main(replay(case_copy, tmp_path)) == 1
    out = capsys.readouterr().out
    assert 'evidence.operator_role: "nurse" -> "physician"' in out


def test_an_undecodable_file_is_reported(
    case_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (case_copy / "notes.txt").write_text("not an export\n", "utf-8")
    assert main(replay(case_copy, tmp_path)) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("file notes.txt: undecodable: does not decode: notes.txt: ")
    assert "12 exports" in lines[-1]


def test_missing_expectations_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "empty-case"
    folder.mkdir()
    assert main(replay(folder, tmp_path)) == 2
    err = capsys.readouterr().err
    assert f"{folder / EXPECTED_FILE}: missing" in err
    assert "--write-expected" in err


def test_not_a_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(replay(tmp_path / "nothing", tmp_path)) == 2
    assert "not a folder" in capsys.readouterr().err


def test_fixtures_refuses_database_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(replay(CASE, tmp_path, "--apply")) == 2
    assert "no --apply, --pump or --since" in capsys.readouterr().err


def test_an_auditors_own_case_with_conflicting_exports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """How docs/auditing.md says to add a case: exports, --write-expected, review, check."""
    folder = tmp_path / "my-case"
    first, second = history(21, visits=2)
    folder.mkdir()
    (folder / "a-first.psl").write_bytes(encode_binary(first))
    (folder / "b-second.csv").write_bytes(encode_csv(with_other_note(second)))
    (folder / "c-second.psl").write_bytes(encode_binary(second))
    (folder / "d-second-again.psl").write_bytes(encode_binary(second))  # identical bytes
    (folder / "README.md").write_text("my case\n", "utf-8")
    assert main(replay(folder, tmp_path, "--write-expected")) == 0
    assert capsys.readouterr().out == (
        f"case {folder}: wrote expected-evidence.json, 2 sessions from 4 exports: "
        "review it before keeping it\n"
    )
    documents = json.loads((folder / EXPECTED_FILE).read_text("utf-8"))
    assert [d["session_id"] for d in documents] == [
        first.header.session_id,
        second.header.session_id,
    ]
    # The CSV came first but disagrees: the binary export is used, and flagged.
    assert documents[1]["flags"][-1] == "conflicting_exports"
    assert main(replay(folder, tmp_path)) == 0
    assert capsys.readouterr().out == (
        f"case {folder}: 4 exports (1 identical), 2 sessions of 1 pump: evidence as expected\n"
    )


# ---------------------------------------------------------------------------
# The case folder itself


def test_case_folder_is_what_the_builder_writes() -> None:
    """`python -m fixtures.replay_build` would change nothing on disk."""
    built = replay_build.build_case()
    root = Path(replay_build.__file__).resolve().parent
    on_disk = {path.relative_to(root) for path in CASE.iterdir()}
    assert on_disk == set(built)
    for relative, data in built.items():
        assert (root / relative).read_bytes() == data, relative


def test_case_holds_the_year_the_issue_describes() -> None:
    names = [path.name for path in case_exports(CASE)]
    assert len(names) == 11
    documents, report = derive_case(CASE, default_rules())
    assert (report.sessions, report.pumps) == (10, 1)
    starts = [d["session_start_utc"] for d in documents]
    assert starts[0].startswith("2025-01") and starts[-1].startswith("2025-12")
    # One visit exported twice (binary and CSV of one session), one only as CSV.
    assert "2025-04-16-visit04.psl" in names and "2025-04-16-visit04.csv" in names
    assert "2025-07-23-visit06.csv" in names and "2025-07-23-visit06.psl" not in names
    # Refills, a dose change, an alarm-only change.
    assert sum(1 for d in documents if d["refill"]) == 8
    assert any(
        c["parameter"] == "drug1_daily_dose" and c["when"] == "in_session"
        for d in documents
        for c in d["changes"]
    )
    alarm_only = [
        d
        for d in documents
        if {c["category"] for c in d["changes"] if c["when"] == "in_session"}
        == {"alarms", "schedule"}
    ]
    assert len(alarm_only) == 1
    codes = alarm_only[0]["codes"]
    assert (codes["rate-dose"]["procedure"], codes["rate-dose-alarms"]["procedure"]) == (
        "62367",
        "62368",
    )
    # Synthetic: no real-looking patient identifiers in the exports.
    assert check_case(CASE, default_rules()).ok
