"""The golden corpus: every export in fixtures/<format>/ decodes to its expectation.

One parametrized test walks the folders (docs/formats.md §11): `<case>.expected.json`
is the session document, `<case>.error.json` the error (code, position, record and
the one-line message). The corpus is also rebuilt from `fixtures/cases.py` and must
match the files byte for byte, so every fixture can be rebuilt and explained.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.build import build_all
from fixtures.cases import CASES, GOOD
from parsers.errors import DecodeError
from parsers.registry import decode_bytes
from parsers.session_json import comparable_document, session_document

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
EXPORTS = sorted(
    p
    for folder in ("psl-binary", "psl-csv")
    for p in (FIXTURES / folder).iterdir()
    if p.suffix in {".psl", ".csv"}
)


def test_corpus_has_the_cases_the_contract_needs() -> None:
    good = [c for c in CASES if not c.error]
    bad = [c for c in CASES if c.error]
    assert len(good) >= 20
    assert len(bad) >= 15
    assert len(EXPORTS) == sum(len(c.files()) for c in CASES)


@pytest.mark.parametrize("export", EXPORTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_export_decodes_to_its_expectation(export: Path) -> None:
    stem = export.with_suffix("")
    expected = stem.with_name(stem.name + ".expected.json")
    error = stem.with_name(stem.name + ".error.json")
    data = export.read_bytes()
    if expected.exists():
        document = session_document(decode_bytes(data, source=export.name))
        assert document == json.loads(expected.read_text("utf-8"))
    else:
        wanted = json.loads(error.read_text("utf-8"))
        with pytest.raises(DecodeError) as caught:
            decode_bytes(data, source=export.name)
        assert caught.value.as_dict() == {k: v for k, v in wanted.items() if k != "line"}
        assert str(caught.value) == wanted["line"]


@pytest.mark.parametrize("case", [c for c in GOOD if len(c.files()) == 2], ids=lambda c: c.name)
def test_both_exports_of_a_case_give_the_same_session(case) -> None:  # type: ignore[no-untyped-def]
    files = case.files()
    binary = session_document(decode_bytes(files["psl-binary"], source="x.psl"))
    csv = session_document(decode_bytes(files["psl-csv"], source="x.csv"))
    assert comparable_document(binary) == comparable_document(csv)


def test_corpus_on_disk_is_what_the_builder_writes() -> None:
    rebuilt = build_all()
    for relative, data in rebuilt.items():
        on_disk = FIXTURES / relative
        assert on_disk.exists(), f"{relative} missing: run make fixtures"
        assert on_disk.read_bytes() == data, (
            f"{relative} differs from the builder: run make fixtures and review the diff"
        )
