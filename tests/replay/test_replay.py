"""`pumptrail replay` against SQLite and PostgreSQL.

Each tamper test changes one stored thing the way someone with database or file
access could, then checks that replay names it: which session or raw file, which
field, the stored and the derived value; and that an untouched database replays
clean.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, select, update

import ingest.pipeline
import ingest.replay.replayer
from db import audit
from db.engine import safe_url_text
from db.migrate import open_database
from db.models import events, evidence, evidence_flags, raw_files, sessions, setting_values
from evidence import load_rules
from fixtures.scenario import Scenario
from ingest.exports import Incoming
from ingest.pipeline import Importer
from ingest.rawstore import RawStore
from ingest.replay import (
    ABSENT,
    REFUSAL,
    Difference,
    Replayer,
    Resolved,
    decode_export,
    export_in_use,
    json_differences,
)
from parsers.errors import DecodeError
from parsers.records import PatientRec
from pumptrail.cli import main
from tests.ingest.exports import binary, csv, history, importer, with_other_note, write


@dataclass
class Stored:
    """A database with two pumps' histories imported, and where everything is."""

    url: str
    tmp: Path
    raw: Path
    pump_a: list[Scenario]
    pump_b: list[Scenario]
    refused_sha: str
    broken: bytes

    def engine(self) -> Engine:
        return open_database(self.url)

    @property
    def checked(self) -> str:
        """What the summary line names as the database and data folder it replayed."""
        return f" (database {safe_url_text(self.url)}, data folder {self.tmp / 'data'})"

    def clean(self) -> str:
        return CLEAN + self.checked

    def cli(self, *words: str) -> list[str]:
        return [
            "replay",
            *words,
            "--db",
            self.url,
            "--raw-store",
            str(self.raw),
            # The folder store the tests' importer writes to, on PostgreSQL too.
            "--raw-store-mode",
            "files",
            "--data-dir",
            str(self.tmp / "data"),
        ]

    def sql(self, statement: Any) -> None:
        engine = self.engine()
        try:
            with engine.begin() as connection:
                connection.execute(statement)
        finally:
            engine.dispose()

    def pk(self, scenario: Scenario) -> int:
        engine = self.engine()
        try:
            with engine.connect() as connection:
                return int(
                    connection.execute(
                        select(sessions.c.id).where(
                            sessions.c.session_id == scenario.header.session_id
                        )
                    ).scalar_one()
                )
        finally:
            engine.dispose()

    def raw_of(self, scenario: Scenario) -> str:
        """The SHA-256 of the binary export of a scenario (as imported)."""
        from ingest.rawstore import sha256_hex

        return sha256_hex(binary(scenario))


@pytest.fixture
def stored(db_url: str, tmp_path: Path) -> Iterator[Stored]:
    pump_a = history(11, visits=5)
    pump_b = history(12, visits=2)
    folder = tmp_path / "in"
    for index, scenario in enumerate(pump_a):
        write(folder, f"a{index}.psl", binary(scenario))
    for index, scenario in enumerate(pump_b):
        write(folder, f"b{index}.psl", binary(scenario))
    # Visit 3 of pump A also as CSV (sorted first: '-' < '.'), the same session.
    write(folder, "a2-copy.csv", csv(pump_a[2]))
    # Visit 4 also as a CSV that disagrees, imported first: the binary export wins.
    write(folder, "a3-edited.csv", csv(with_other_note(pump_a[3])))
    broken = b"PSL Session Export\nnot really"
    write(folder, "zz-broken.csv", broken)
    with importer(db_url, tmp_path / "raw") as imp:
        results = list(imp.import_paths([folder]))
    assert [r.outcome for r in results].count("refused") == 1
    refused = next(r for r in results if r.outcome == "refused")
    yield Stored(db_url, tmp_path, tmp_path / "raw", pump_a, pump_b, refused.sha256 or "", broken)


def run(stored: Stored, capsys: pytest.CaptureFixture[str], *words: str) -> tuple[int, list[str]]:
    status = main(stored.cli(*words))
    return status, capsys.readouterr().out.splitlines()


CLEAN = "replayed 10 raw files, 7 sessions of 2 pumps: no differences"


# ---------------------------------------------------------------------------
# Untouched


def test_untouched_database_reports_nothing_and_exits_0(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines = run(stored, capsys)
    assert (status, lines) == (0, [stored.clean()])
    engine = stored.engine()
    try:
        with engine.connect() as connection:
            (entry,) = audit.show(connection, audit.AuditFilter(action="replay_verify"))
            assert audit.verify(connection) is None
    finally:
        engine.dispose()
    assert entry.actor.startswith("cli:")
    assert entry.target == "run"
    assert entry.detail["differences"] == 0
    assert entry.detail["sessions"] == 7
    assert entry.detail["rules_version"] == load_rules().version


def test_verify_is_the_default_and_changes_nothing(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    pk = stored.pk(stored.pump_a[1])
    stored.sql(delete(evidence_flags).where(evidence_flags.c.session_pk == pk))
    stored.sql(delete(evidence).where(evidence.c.session_pk == pk))
    assert run(stored, capsys, "--verify")[0] == 1
    assert run(stored, capsys)[0] == 1  # still missing: verify wrote nothing


# ---------------------------------------------------------------------------
# Tampering is caught and named (item 5)


def test_changed_setting_value_is_named(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    session_id = stored.pump_a[1].header.session_id
    pk = stored.pk(stored.pump_a[1])
    engine = stored.engine()
    try:
        with engine.connect() as connection:
            original = connection.execute(
                select(setting_values.c.value).where(
                    setting_values.c.session_pk == pk,
                    setting_values.c.phase == 0,
                    setting_values.c.param == "drug1_daily_dose",
                )
            ).scalar_one()
    finally:
        engine.dispose()
    stored.sql(
        update(setting_values)
        .where(
            setting_values.c.session_pk == pk,
            setting_values.c.phase == 0,
            setting_values.c.param == "drug1_daily_dose",
        )
        .values(value="999999")
    )
    status, lines = run(stored, capsys)
    assert status == 1
    assert lines == [
        f"session {session_id}: setting: setting_values.interrogated.drug1_daily_dose: "
        f"999999 -> {original}",
        "replayed 10 raw files, 7 sessions of 2 pumps: 1 session differs, 1 difference in all"
        + stored.checked,
    ]


def test_deleted_evidence_row_is_named(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    session_id = stored.pump_b[1].header.session_id
    pk = stored.pk(stored.pump_b[1])
    stored.sql(delete(evidence_flags).where(evidence_flags.c.session_pk == pk))
    stored.sql(delete(evidence).where(evidence.c.session_pk == pk))
    status, lines = run(stored, capsys)
    assert status == 1
    assert len(lines) == 2
    assert lines[0].startswith(
        f"session {session_id}: evidence_missing: evidence: no stored evidence row "
        "(derived now: rate-dose "
    )


def test_edited_raw_file_is_reported_as_tampered(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    digest = stored.raw_of(stored.pump_a[0])
    path = RawStore(stored.raw).path_for(digest)
    os.chmod(path, 0o600)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    status, lines = run(stored, capsys)
    assert status == 1
    assert lines[0].startswith(f"raw {digest[:12]}: tampered: bytes hash to ")
    assert lines[0].endswith(
        f"not to their name (stored session {stored.pump_a[0].header.session_id}): "
        "edited after import"
    )
    assert lines[1] == (
        f"pump {stored.pump_a[0].header.pump_serial}: evidence not derived again: "
        "a raw file is missing or tampered"
    )
    assert lines[-1].endswith("1 tampered, 1 difference in all" + stored.checked)


def test_raw_file_gone_from_the_store_is_reported(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    digest = stored.raw_of(stored.pump_b[0])
    RawStore(stored.raw).path_for(digest).unlink()
    status, lines = run(stored, capsys)
    assert status == 1
    assert lines[0] == (
        f"raw {digest[:12]}: raw_missing: not in the raw store "
        f"(stored session {stored.pump_b[0].header.session_id})"
    )


def test_edited_session_document_field_is_named(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = stored.pump_a[4]
    pk = stored.pk(scenario)
    engine = stored.engine()
    try:
        with engine.connect() as connection:
            document = json.loads(
                connection.execute(
                    select(sessions.c.document).where(sessions.c.id == pk)
                ).scalar_one()
            )
    finally:
        engine.dispose()
    role = document["operator"]["role"]
    document["operator"]["role"] = "physician" if role != "physician" else "nurse"
    stored.sql(update(sessions).where(sessions.c.id == pk).values(document=json.dumps(document)))
    status, lines = run(stored, capsys)
    assert status == 1
    assert lines[0] == (
        f"session {scenario.header.session_id}: session: document.operator.role: "
        f'"{document["operator"]["role"]}" -> "{role}"'
    )


def test_patient_values_are_never_printed(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = stored.pump_a[0]
    patient = next(r for r in scenario.records if isinstance(r, PatientRec))
    stored.sql(
        update(sessions)
        .where(sessions.c.id == stored.pk(scenario))
        .values(patient_name="Forged, Name")
    )
    status, lines = run(stored, capsys)
    assert status == 1
    assert lines[0] == (
        f"session {scenario.header.session_id}: session: sessions.patient_name: "
        "(not shown: may identify the patient)"
    )
    output = "\n".join(lines)
    assert "Forged" not in output
    assert patient.patient_name not in output


def test_edited_evidence_document_is_named(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = stored.pump_a[3]
    pk = stored.pk(scenario)
    engine = stored.engine()
    try:
        with engine.connect() as connection:
            row = connection.execute(
                select(evidence.c.document, evidence.c.procedure).where(evidence.c.session_pk == pk)
            ).one()
    finally:
        engine.dispose()
    document = json.loads(row.document)
    code = document["codes"]["rate-dose"]["procedure"]
    document["codes"]["rate-dose"]["procedure"] = "62370" if code != "62370" else "95991"
    stored.sql(
        update(evidence)
        .where(evidence.c.session_pk == pk)
        .values(document=json.dumps(document, separators=(",", ":")), procedure="00000")
    )
    status, lines = run(stored, capsys)
    assert status == 1
    subject = f"session {scenario.header.session_id}: evidence: "
    assert lines[:2] == [
        subject + f'evidence.procedure: "00000" -> "{code}"',
        subject + "evidence.document.codes.rate-dose.procedure: "
        f'"{document["codes"]["rate-dose"]["procedure"]}" -> "{code}"',
    ]


def test_conflicting_flag_cleared_by_hand_is_named(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = stored.pump_a[3]
    stored.sql(
        update(sessions)
        .where(sessions.c.id == stored.pk(scenario))
        .values(conflicting_exports=False)
    )
    status, lines = run(stored, capsys)
    assert status == 1
    assert lines[0] == (
        f"session {scenario.header.session_id}: session: sessions.conflicting_exports: "
        "false -> true"
    )


def test_deleted_session_is_found_through_the_audit_log(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = stored.pump_b[1]
    pk = stored.pk(gone)
    for table in (events, setting_values, evidence_flags, evidence):
        stored.sql(delete(table).where(table.c.session_pk == pk))
    stored.sql(delete(raw_files).where(raw_files.c.session_pk == pk))
    stored.sql(delete(sessions).where(sessions.c.id == pk))
    status, lines = run(stored, capsys)
    assert status == 1
    assert (
        f"session {gone.header.session_id}: not_stored: the audit log records its import, "
        "but it is not stored (deleted)"
    ) in lines
    digest = stored.raw_of(gone)
    assert (
        f"raw {digest[:12]}: raw_not_stored: the audit log records this raw file, "
        "but `raw_files` has no row for it (deleted)"
    ) in lines


def test_file_added_behind_the_importer_is_named(
    stored: Stored, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes, rows and evidence all consistent, but no audit entry: not pumptrail's import."""
    forged = history(15, visits=1)[0]
    monkeypatch.setattr(Importer, "_audit", lambda *_args: None)
    with importer(stored.url, stored.raw) as imp:
        result = imp.import_bytes(binary(forged), name="forged.psl")
    monkeypatch.undo()
    assert result.outcome == "imported"
    status, lines = run(stored, capsys)
    assert status == 1
    assert lines[0] == (
        f"raw {(result.sha256 or '')[:12]}: unaudited: stored, but the audit log has no "
        "import or quarantine entry for it (added outside pumptrail, or its entry was removed)"
    )
    assert lines[-1].endswith("1 unaudited, 1 difference in all" + stored.checked)


def test_files_from_before_the_audit_log_are_not_asked_for(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    older, newer = history(16, visits=2)
    with importer(db_url, tmp_path / "raw") as imp:
        with monkeypatch.context() as patched:  # as a database older than the audit log
            patched.setattr(Importer, "_audit", lambda *_args: None)
            assert imp.import_bytes(binary(older), name="old.psl").outcome == "imported"
        assert imp.import_bytes(binary(newer), name="new.psl").outcome == "imported"
        replayer = Replayer(imp.engine, imp.store, imp.rules)
        found: list[Difference] = []
        report = replayer.run(report=found.append)
    assert found == []
    assert (report.sessions, report.raw_files) == (2, 2)


# ---------------------------------------------------------------------------
# Filters


def test_pump_filter_replays_one_pump(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    pk = stored.pk(stored.pump_a[1])
    stored.sql(update(setting_values).where(setting_values.c.session_pk == pk).values(value="0"))
    serial = stored.pump_b[0].header.pump_serial
    status, lines = run(stored, capsys, "--pump", serial)
    assert (status, lines) == (
        0,
        ["replayed 2 raw files, 2 sessions of 1 pump: no differences" + stored.checked],
    )
    status, lines = run(stored, capsys, "--pump", stored.pump_a[0].header.pump_serial)
    assert status == 1
    assert lines[-1].startswith("replayed 7 raw files, 5 sessions of 1 pump: 1 session differs")


def test_unknown_pump_exits_1(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(stored.cli("--pump", "NO-SUCH-PUMP")) == 1
    assert "pumptrail replay: no stored pump NO-SUCH-PUMP" in capsys.readouterr().err


def test_since_filter_replays_later_sessions_with_their_history(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    early, late = stored.pump_a[0], stored.pump_a[4]
    for scenario in (early, late):
        pk = stored.pk(scenario)
        stored.sql(delete(evidence_flags).where(evidence_flags.c.session_pk == pk))
        stored.sql(delete(evidence).where(evidence.c.session_pk == pk))
    start = late.header.session_start_local - timedelta(minutes=late.header.utc_offset_min)
    status, lines = run(stored, capsys, "--since", start.date().isoformat())
    assert status == 1
    assert [line.split(":")[0] for line in lines[:-1]] == [f"session {late.header.session_id}"]
    assert "1 session of 1 pump" in lines[-1]


# ---------------------------------------------------------------------------
# --apply


def test_apply_rewrites_what_differs_and_is_audited(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    changed, unevidenced = stored.pump_a[2], stored.pump_b[0]
    stored.sql(
        update(setting_values)
        .where(setting_values.c.session_pk == stored.pk(changed))
        .values(value="1")
    )
    pk = stored.pk(unevidenced)
    stored.sql(delete(evidence_flags).where(evidence_flags.c.session_pk == pk))
    stored.sql(delete(evidence).where(evidence.c.session_pk == pk))
    status, lines = run(stored, capsys, "--apply")
    assert status == 0
    assert lines[-1] == "rewrote 1 session and the evidence of 1 session"
    assert run(stored, capsys) == (0, [stored.clean()])
    engine = stored.engine()
    try:
        with engine.connect() as connection:
            applied = audit.show(connection, audit.AuditFilter(action="replay_apply"))
            assert audit.verify(connection) is None
    finally:
        engine.dispose()
    per_pump = [e for e in applied if e.target != "run"]
    assert len(per_pump) == 2
    rewritten = [e.detail["sessions_rewritten"] for e in per_pump]
    assert [changed.header.session_id] in rewritten
    assert any(e.detail["evidence_rewritten"] == 1 for e in per_pump)
    assert all(e.detail["parser_version"] for e in per_pump)
    # Field names and counts only: no stored or derived values in the audit log.
    assert "setting_values.interrogated." in json.dumps([e.detail for e in per_pump])
    assert '"1"' not in json.dumps([e.detail["fields"] for e in per_pump])
    assert applied[-1].target == "run"


def test_apply_leaves_a_pump_with_a_tampered_raw_file_alone(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = stored.pump_a[1]
    digest = stored.raw_of(scenario)
    path = RawStore(stored.raw).path_for(digest)
    os.chmod(path, 0o600)
    path.write_bytes(path.read_bytes() + b"\x00")
    pk = stored.pk(stored.pump_a[2])
    stored.sql(delete(evidence_flags).where(evidence_flags.c.session_pk == pk))
    stored.sql(delete(evidence).where(evidence.c.session_pk == pk))
    status, lines = run(stored, capsys, "--apply")
    assert status == 1
    serial = scenario.header.pump_serial
    assert f"pump {serial}: not rewritten: a raw file is missing or tampered" in lines
    engine = stored.engine()
    try:
        with engine.connect() as connection:
            assert (
                connection.execute(
                    select(evidence.c.session_pk).where(evidence.c.session_pk == pk)
                ).first()
                is None
            )
    finally:
        engine.dispose()


def test_upgrade_of_the_rules_is_reported_then_applied(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    rules_dir = stored.tmp / "rules"
    rules_dir.mkdir()
    (rules_dir / "profiles.toml").write_text(
        '[[profile]]\nname = "payer-x"\ncategories = ["prescription"]\n'
        'held_by = "a payer"\ndescription = "prescription changes only"\n',
        "utf-8",
    )
    new_version = load_rules(rules_dir).version
    status, lines = run(stored, capsys, "--rules-dir", str(rules_dir))
    assert status == 1
    first = stored.pump_a[0].header.session_id
    assert f"session {first}: evidence: evidence.rules_version: " in "\n".join(lines)
    assert any(
        line.startswith(f"session {first}: evidence: evidence.document.codes.payer-x: (absent) -> ")
        for line in lines
    )
    assert "7 sessions differ" in lines[-1]
    status, lines = run(stored, capsys, "--apply", "--rules-dir", str(rules_dir))
    assert status == 0
    assert lines[-1] == "rewrote 0 sessions and the evidence of 7 sessions"
    assert run(stored, capsys, "--rules-dir", str(rules_dir)) == (0, [stored.clean()])
    engine = stored.engine()
    try:
        with engine.connect() as connection:
            versions = set(connection.execute(select(evidence.c.rules_version)).scalars())
    finally:
        engine.dispose()
    assert versions == {new_version}
    # Under the old rules, the stored evidence is now the one that differs.
    assert run(stored, capsys)[0] == 1


def test_upgrade_of_the_parser_is_reported_then_applied(
    stored: Stored, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both the replay and the pipeline's row builders it reuses see the new version.
    monkeypatch.setattr(ingest.replay.replayer, "PARSER_VERSION", "pumptrail-parsers/99")
    monkeypatch.setattr(ingest.pipeline, "PARSER_VERSION", "pumptrail-parsers/99")
    status, lines = run(stored, capsys)
    assert status == 1
    first = stored.pump_a[0].header.session_id
    assert (
        f'session {first}: session: sessions.parser_version: "pumptrail-parsers/1" -> '
        '"pumptrail-parsers/99"'
    ) in lines
    assert run(stored, capsys, "--apply")[0] == 0
    assert run(stored, capsys) == (0, [stored.clean()])


# ---------------------------------------------------------------------------
# Refused files


def _replayer(stored: Stored, decode: Any) -> Replayer:
    return Replayer(stored.engine(), RawStore(stored.raw), load_rules(), decode=decode)


def test_refused_file_that_decodes_now_is_reported_not_imported(stored: Stored) -> None:
    extra = history(13, visits=1)[0]

    def newer_parser(data: bytes, name: str) -> Incoming:
        # A later parser that reads what the old one refused.
        return decode_export(binary(extra) if data == stored.broken else data, name)

    replayer = _replayer(stored, newer_parser)
    try:
        found: list[Difference] = []
        report = replayer.run(apply=True, report=found.append)
    finally:
        replayer.engine.dispose()
    (difference,) = found
    assert difference.kind == REFUSAL
    assert difference.subject == stored.refused_sha
    assert f"decodes now to session {extra.header.session_id}" in difference.line()
    assert report.not_applied == [
        f"raw {stored.refused_sha[:12]}: decodes now; not imported by replay"
    ]


def test_refused_file_with_another_error_now_is_reported_and_rewritten(stored: Stored) -> None:
    def stricter_parser(data: bytes, name: str) -> Incoming:
        if data == stored.broken:
            raise DecodeError("some_new_code", "refused for another reason", source=name)
        return decode_export(data, name)

    replayer = _replayer(stored, stricter_parser)
    try:
        found: list[Difference] = []
        replayer.run(report=found.append)
        (difference,) = found
        engine = replayer.engine
        with engine.connect() as connection:
            old_code = connection.execute(
                select(raw_files.c.error_code).where(raw_files.c.sha256 == stored.refused_sha)
            ).scalar_one()
        assert difference.line() == (
            f'raw {stored.refused_sha[:12]}: refusal: error_code: "{old_code}" -> "some_new_code"'
        )
        replayer.run(apply=True)
        again: list[Difference] = []
        replayer.run(report=again.append)
        with engine.connect() as connection:
            new_code = connection.execute(
                select(raw_files.c.error_code).where(raw_files.c.sha256 == stored.refused_sha)
            ).scalar_one()
            (entry,) = [
                e
                for e in audit.show(connection, audit.AuditFilter(action="replay_apply"))
                if e.target == stored.refused_sha
            ]
    finally:
        replayer.engine.dispose()
    assert again == []
    assert new_code == "some_new_code"
    assert entry.detail["refusal_rewritten"] == "some_new_code"


# ---------------------------------------------------------------------------
# Pieces


def test_json_differences_names_paths_and_keeps_types_apart() -> None:
    old = {"a": 1, "b": {"c": [1, 2, 3], "d": True}, "gone": None}
    new = {"a": 1, "b": {"c": [1, 5], "d": 1}, "added": "x"}
    assert list(json_differences(old, new, "doc")) == [
        ("doc.b.c[1]", 2, 5),
        ("doc.b.c[2]", 3, ABSENT),
        ("doc.b.d", True, 1),
        ("doc.gone", None, ABSENT),
        ("doc.added", ABSENT, "x"),
    ]
    assert list(json_differences(old, json.loads(json.dumps(old)), "")) == []


def test_export_in_use_follows_the_pipeline() -> None:
    scenario = history(14, visits=1)[0]
    psl = decode_export(binary(scenario), "s.psl")
    same_csv = decode_export(csv(scenario), "s.csv")
    other_csv = decode_export(csv(with_other_note(scenario)), "t.csv")
    assert export_in_use([same_csv, psl]) == Resolved(same_csv, False)
    assert export_in_use([other_csv, psl]) == Resolved(psl, True)
    assert export_in_use([psl, other_csv]) == Resolved(psl, True)
    with pytest.raises(ValueError, match="at least one export"):
        export_in_use([])


def test_difference_lines() -> None:
    sha = "ab" * 32
    assert Difference("tampered", sha, message="x").line() == f"raw {sha[:12]}: tampered: x"
    assert (
        Difference("undecodable", "a/b.psl", message="y").line() == "file a/b.psl: undecodable: y"
    )
    assert (
        Difference("setting", "S", "setting_values.programmed.x", ABSENT, 3).line()
        == "session S: setting: setting_values.programmed.x: (absent) -> 3"
    )
    assert (
        Difference("session", "S", "document.patient.id", "SYN-1", "SYN-2").line()
        == "session S: session: document.patient.id: (not shown: may identify the patient)"
    )
    assert (
        Difference("event", "S", "events[4].data.text", "Spoke with J. Doe", "x").line()
        == "session S: event: events[4].data.text: (not shown: may identify the patient)"
    )
    note = {"type": "note", "time_utc": "2025-01-01T10:00:00Z", "text": "J. Doe"}
    assert Difference("event", "S", "events[4]", note, ABSENT).line() == (
        'session S: event: events[4]: {"type": "note", "time_utc": "2025-01-01T10:00:00Z", '
        '"text": "(not shown: may identify the patient)"} -> (absent)'
    )
