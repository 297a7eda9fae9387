"""Which of two exports of one session is used (docs/coding-rules.md §7.16), for import and replay."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest import exports, pipeline
from ingest.exports import BINARY, ExportChoice, choose_export, decode_export
from tests.ingest.exports import binary, csv, history, importer, with_other_note

CSV = "psl-csv"


def test_agreeing_exports_keep_the_one_in_use_whatever_the_format() -> None:
    scenario = history(61, visits=1)[0]
    psl = decode_export(binary(scenario), "s.psl").document
    same = decode_export(csv(scenario), "s.csv").document
    assert psl != same  # source_format, format_version and warnings differ ...
    # ... and nothing else, so the exports agree either way round.
    assert choose_export(CSV, same, BINARY, psl) == ExportChoice(False, False)
    assert choose_export(BINARY, psl, CSV, same) == ExportChoice(False, False)


def test_conflicting_exports_use_the_binary_one() -> None:
    scenario = history(62, visits=1)[0]
    psl = decode_export(binary(scenario), "s.psl").document
    other_csv = decode_export(csv(with_other_note(scenario)), "t.csv").document
    other_psl = decode_export(binary(with_other_note(scenario)), "t.psl").document
    assert choose_export(CSV, other_csv, BINARY, psl) == ExportChoice(True, True)
    assert choose_export(BINARY, psl, CSV, other_csv) == ExportChoice(True, False)
    # Two binary exports that disagree: the first stays in use.
    assert choose_export(BINARY, psl, BINARY, other_psl) == ExportChoice(True, False)
    # Two CSV exports that disagree: no binary one to prefer, the first stays.
    csv_doc = decode_export(csv(scenario), "s.csv").document
    assert choose_export(CSV, csv_doc, CSV, other_csv) == ExportChoice(True, False)


def test_the_import_pipeline_decides_with_choose_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = history(63, visits=1)[0]
    calls: list[tuple[str, str]] = []

    def spy(in_use_format: str, in_use: object, other_format: str, other: object) -> ExportChoice:
        calls.append((in_use_format, other_format))
        return exports.choose_export(in_use_format, in_use, other_format, other)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "choose_export", spy)
    with importer(f"sqlite:///{tmp_path}/t.db", tmp_path / "raw") as imp:
        imp.import_bytes(csv(with_other_note(scenario)), "t.csv")
        result = imp.import_bytes(binary(scenario), "s.psl")
    assert calls == [(CSV, BINARY)]
    assert result.conflicting_exports is True
    assert "using the psl-binary export" in result.detail
