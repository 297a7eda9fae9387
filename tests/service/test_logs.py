"""No patient identifier in the logs of an import.

The whole fixture corpus (binary and CSV, good and broken) is imported twice:
with `pumptrail import` (in-process, every log record at DEBUG level captured,
plus what it prints) and with `pumptrail run` (a real process at DEBUG level).
Every patient ID and patient name the fixtures hold is then searched for.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pytest

from fixtures.scenarios import FIRST_NAMES, LAST_NAMES
from parsers.errors import DecodeError
from parsers.registry import decode_file
from pumptrail import cli
from tests.service.support import RunningService, files_under, wait_for

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
PATIENT_ID = re.compile(r"SYN-\d+")
PATIENT_NAME = re.compile(rf"(?:{'|'.join(LAST_NAMES)}), (?:{'|'.join(FIRST_NAMES)})")


def corpus_files() -> list[Path]:
    return sorted(
        p
        for folder in ("psl-binary", "psl-csv")
        for p in (FIXTURES / folder).iterdir()
        if p.suffix in (".psl", ".csv")
    )


def patient_identifiers() -> set[str]:
    """Every patient ID and non-empty name in the corpus, decoded or found in the bytes."""
    found: set[str] = set()
    for path in corpus_files():
        try:
            session = decode_file(path)
        except DecodeError:
            pass
        else:
            if session.patient is not None:
                found.update(v for v in (session.patient.id, session.patient.name) if v)
        raw = path.read_bytes()
        for encoding in ("utf-8", "utf-16", "latin-1"):
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError:
                continue
            found.update(PATIENT_ID.findall(text))
            found.update(PATIENT_NAME.findall(text))
    return found


def leaks(text: str, identifiers: set[str]) -> list[str]:
    return sorted(i for i in identifiers if i in text)


@pytest.fixture(scope="module")
def identifiers() -> set[str]:
    found = patient_identifiers()
    # The corpus really holds patients to look for: IDs and names.
    assert any(PATIENT_ID.fullmatch(i) for i in found)
    assert sum(1 for i in found if ", " in i) >= 5
    return found


def test_pumptrail_import_logs_and_prints_no_patient_identifier(
    tmp_path: Path,
    identifiers: set[str],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    for path in corpus_files():
        shutil.copy(path, folder / f"{path.parent.name}-{path.name}")
    monkeypatch.setenv("PUMPTRAIL_DATA_DIR", str(tmp_path / "data"))
    caplog.set_level(logging.DEBUG)
    status = cli.main(["import", str(folder)])
    printed = capsys.readouterr()
    logged = "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
    )
    assert status == 1  # the broken cases are refused
    assert "imported session" in logged and "refused" in logged
    summary = re.search(r"(\d+) files: (\d+) imported, (\d+) duplicate, (\d+) refused", printed.out)
    assert summary is not None
    assert int(summary[2]) + int(summary[3]) >= 50 and int(summary[4]) >= 50
    assert leaks(logged, identifiers) == []
    assert leaks(printed.out + printed.err, identifiers) == []


def test_pumptrail_run_logs_no_patient_identifier(tmp_path: Path, identifiers: set[str]) -> None:
    service = RunningService(tmp_path, tmp_path / "service.log", log_level="DEBUG")
    try:
        inbox = tmp_path / "inbox"
        inbox.mkdir()
        for path in corpus_files():
            shutil.copy(path, inbox / f"{path.parent.name}-{path.name}")
        assert wait_for(lambda: not files_under(inbox), timeout=120), service.log_text()[-2000:]
    finally:
        assert service.terminate() == 0
    text = service.log_text()
    assert len(service.events("file_archived")) >= 50
    assert len(service.events("file_quarantined")) >= 50
    assert leaks(text, identifiers) == []
