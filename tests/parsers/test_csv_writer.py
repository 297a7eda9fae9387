"""The CSV fixture writer (fixtures/csv_writer.py): conforming, exact, every dialect.

The writer's files must decode back to the scenario they describe (docs/format-psl-csv.md
preamble), and, where the binary writer exists, to the same session document as the
binary export of that scenario (docs/session-json.md).
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import replace
from datetime import date, datetime

import pytest

from fixtures.csv_writer import (
    csv_rows,
    encode_csv,
    format_date,
    format_scaled,
    format_timestamp,
    format_utc_offset,
    render_csv,
)
from fixtures.scenario import UNPLACED, Scenario
from fixtures.scenarios import realistic_scenario
from parsers import psl_csv
from parsers.errors import DecodeError
from parsers.model import ChangeEvent, NoteEvent
from parsers.params import PARAMS_BY_NAME, FlexStep, ValueType
from parsers.records import (
    Entry,
    NoteRec,
    ParamChangeRec,
    SessionInfoRec,
    SnapshotRec,
    UnknownRec,
)
from parsers.session_json import comparable_document, session_document

DIALECTS = [
    {"locale": "ISO"},
    {"locale": "en-US", "line_ending": "\n"},
    {"locale": "de-DE", "delimiter": ";", "encoding": "utf-8-sig"},
    {"locale": "de-DE", "delimiter": ",", "encoding": "utf-16-le-bom", "trailing_sub": 5},
    {"locale": "en-US", "delimiter": ";", "sep_hint": True, "trailing_sub": 128},
    {"locale": "ISO", "quote_all": True, "pad_fields": True, "line_ending": "\n"},
    {"locale": "ISO", "mass_unit": "mg"},
    {"locale": "de-DE", "mass_unit": "mcg", "delimiter": ";"},
]


def scenario(seed: int = 7) -> Scenario:
    return realistic_scenario(random.Random(seed))


def entry(name: str, value: object) -> Entry:
    definition = PARAMS_BY_NAME[name]
    return Entry(name, definition.param_id, definition.value_type, value)  # type: ignore[arg-type]


def table_rows(data: bytes, delimiter: str = ",") -> list[list[str]]:
    text = data.decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    header = rows.index(
        ["Time", "Record", "Parameter", "Value", "Previous Value", "Unit", "Detail"]
    )
    return rows[header + 1 :]


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: "-".join(map(str, d.values())))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_written_file_decodes_to_the_scenario(dialect: dict[str, object], seed: int) -> None:
    sc = scenario(seed)
    session = psl_csv.decode(encode_csv(sc, **dialect), source="w.csv")  # type: ignore[arg-type]
    snapshots = [r for r in sc.records if isinstance(r, SnapshotRec)]
    assert dict(session.interrogated) == {e.name: e.value for e in snapshots[0].entries}
    if len(snapshots) > 1:
        assert session.programmed == {e.name: e.value for e in snapshots[1].entries}
    changes = [r for r in sc.records if isinstance(r, ParamChangeRec)]
    assert [(c.entry_old.name, c.entry_old.value, c.new, c.reason) for c in changes] == [
        (e.parameter, e.old, e.new, e.reason) for e in session.events if isinstance(e, ChangeEvent)
    ]
    notes = [r.text for r in sc.records if isinstance(r, NoteRec)]
    assert [e.text for e in session.events if isinstance(e, NoteEvent)] == notes
    assert session.session_id == sc.header.session_id
    assert session.session_start_local == sc.header.session_start_local
    assert session.utc_offset_min == sc.header.utc_offset_min
    assert session.warnings == ()


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: "-".join(map(str, d.values())))
def test_every_dialect_gives_the_same_document(dialect: dict[str, object]) -> None:
    sc = scenario(11)
    reference = session_document(psl_csv.decode(encode_csv(sc), source="a"))
    other = session_document(psl_csv.decode(encode_csv(sc, **dialect), source="b"))  # type: ignore[arg-type]
    assert other == reference


@pytest.mark.parametrize("seed", [3, 5, 8, 13])
@pytest.mark.parametrize("dialect", DIALECTS[:5], ids=lambda d: "-".join(map(str, d.values())))
def test_csv_and_binary_exports_print_the_same_document(
    seed: int, dialect: dict[str, object]
) -> None:
    binary_writer = pytest.importorskip("fixtures.binary_writer")
    psl_binary = pytest.importorskip("parsers.psl_binary")
    sc = scenario(seed)
    from_binary = psl_binary.decode(binary_writer.encode_binary(sc), source="s.psl")
    from_csv = psl_csv.decode(encode_csv(sc, **dialect), source="s.csv")  # type: ignore[arg-type]
    assert from_binary.source_format == "psl-binary"
    assert from_csv.source_format == "psl-csv"
    assert comparable_document(session_document(from_csv)) == comparable_document(
        session_document(from_binary)
    )


def test_unknown_record_and_unknown_entry_are_written_as_unknowns() -> None:
    sc = scenario(4)
    records = list(sc.records)
    snap_at = next(i for i, r in enumerate(records) if isinstance(r, SnapshotRec))
    snap = records[snap_at]
    assert isinstance(snap, SnapshotRec)
    unknown_entry = Entry(None, 0x0999, ValueType.U32, 42)
    records[snap_at] = snap._replace(entries=(*snap.entries, unknown_entry))
    records.insert(snap_at + 1, UnknownRec(0, UNPLACED, snap.time_local, 0x70, b"\x01\x02"))
    changed = replace(sc, records=tuple(records))
    data = encode_csv(changed)
    rows = table_rows(data)
    assert rows[[r[2] for r in rows].index("Parameter 0x0999")][2:4] == ["Parameter 0x0999", "42"]
    assert any(r[1] == "Calibration" and r[3] == "0102" for r in rows)
    session = psl_csv.decode(data, source="u.csv")
    plain = psl_csv.decode(encode_csv(sc), source="u.csv")
    assert comparable_document(session_document(session)) == comparable_document(
        session_document(plain)
    )
    assert len(session.warnings) == 2
    assert "unknown parameter label 'Parameter 0x0999'" in session.warnings[0]
    assert "unknown Record word 'Calibration'" in session.warnings[1]


def test_mass_units_are_exact_and_prefer_mg_when_short() -> None:
    sc = scenario(1)
    info = next(r for r in sc.records if isinstance(r, SessionInfoRec))
    snap = SnapshotRec(
        0,
        UNPLACED,
        datetime(2026, 3, 14, 9, 0, 0),
        0,
        (
            entry("drug1_concentration", 10000),
            entry("drug1_daily_dose", 2205),
            entry("drug2_daily_dose", 150),
            entry("ptm_bolus_dose", 2200),
            entry("reservoir_volume", 3401),
            entry("flex_step_0", FlexStep(390, 480)),
            entry("refill_date", None),
            entry("implant_date", date(2021, 11, 30)),
        ),
    )
    small = replace(sc, records=(info, snap))
    rows = {r[2]: (r[3], r[5]) for r in table_rows(encode_csv(small))}
    assert rows["Drug 1 Concentration"] == ("10", "mg/mL")
    assert rows["Drug 1 Daily Dose"] == ("2205", "mcg/day")
    assert rows["Drug 2 Daily Dose"] == ("150", "mcg/day")
    assert rows["PTM Bolus Dose"] == ("2.2", "mg")
    assert rows["Reservoir Volume"] == ("3.401", "mL")
    assert rows["Flex Step 1"] == ("06:30@0.48", "mL/day")
    assert rows["Refill Date"] == ("", "")
    assert rows["Implant Date"] == ("2021-11-30", "")
    forced = {r[2]: (r[3], r[5]) for r in table_rows(encode_csv(small, mass_unit="mg"))}
    assert forced["Drug 1 Daily Dose"] == ("2.205", "mg/day")
    de = {r[2]: r[3] for r in table_rows(encode_csv(small, locale="de-DE", delimiter=";"), ";")}
    assert de["Reservoir Volume"] == "3,401"
    assert de["Implant Date"] == "30.11.2021"


def test_change_rows_use_one_unit_for_both_values() -> None:
    sc = scenario(1)
    records = list(sc.records)
    at = next(i for i, r in enumerate(records) if isinstance(r, ParamChangeRec))
    old = records[at]
    assert isinstance(old, ParamChangeRec)
    records[at] = old._replace(entry_old=entry("drug1_daily_dose", 2000), new=2205)
    rows = table_rows(encode_csv(replace(sc, records=tuple(records))))
    change = next(r for r in rows if r[1] == "Change" and r[2] == "Drug 1 Daily Dose")
    assert change[3:6] == ["2205", "2000", "mcg/day"]


@pytest.mark.parametrize(
    ("value", "iso", "en_us", "de_de"),
    [
        (
            datetime(2026, 3, 14, 0, 5, 9),
            "2026-03-14 00:05:09",
            "03/14/2026 12:05:09 AM",
            "14.03.2026 00:05:09",
        ),
        (
            datetime(2026, 3, 14, 12, 0, 0),
            "2026-03-14 12:00:00",
            "03/14/2026 12:00:00 PM",
            "14.03.2026 12:00:00",
        ),
        (
            datetime(2026, 12, 1, 23, 59, 59),
            "2026-12-01 23:59:59",
            "12/01/2026 11:59:59 PM",
            "01.12.2026 23:59:59",
        ),
    ],
)
def test_timestamps_in_each_locale(value: datetime, iso: str, en_us: str, de_de: str) -> None:
    assert format_timestamp(value, "ISO") == iso
    assert format_timestamp(value, "en-US") == en_us
    assert format_timestamp(value, "de-DE") == de_de
    assert format_timestamp(None, "ISO") == ""


def test_dates_numbers_and_offsets() -> None:
    assert format_date(date(1956, 5, 2), "en-US") == "05/02/1956"
    assert format_date(None, "de-DE") == ""
    assert format_scaled(40000, 1000, "ISO") == "40"
    assert format_scaled(250, 1000, "de-DE") == "0,25"
    assert format_scaled(1, 1000, "ISO") == "0.001"
    assert format_scaled(4294967295, 1000, "ISO") == "4294967.295"
    assert format_utc_offset(-300) == "-05:00"
    assert format_utc_offset(330) == "+05:30"
    assert format_utc_offset(0) == "+00:00"


def test_every_table_row_has_seven_fields_and_end_counts_them() -> None:
    rows = table_rows(encode_csv(scenario(2)))
    assert all(len(row) == 7 for row in rows)
    assert rows[-1][1] == "End"
    assert rows[-1][3] == str(len(rows) - 1)


def test_fields_with_delimiter_quote_or_line_break_are_quoted_whatever_the_line_ending() -> None:
    sc = scenario(2)
    info = next(r for r in sc.records if isinstance(r, SessionInfoRec))
    snap = next(r for r in sc.records if isinstance(r, SnapshotRec))
    note = NoteRec(0, UNPLACED, snap.time_local, 'a,b;c "q"\rcr\nlf')
    data = encode_csv(replace(sc, records=(info, snap, note)), line_ending="\n")
    assert b'"a,b;c ""q""\rcr\nlf"' in data
    session = psl_csv.decode(data, source="q.csv")
    assert [e.text for e in session.events if isinstance(e, NoteEvent)] == [note.text]


def test_encodings_bom_sep_hint_and_padding() -> None:
    sc = scenario(2)
    assert encode_csv(sc).startswith(b"PSL Session Export,1.0\r\n")
    assert encode_csv(sc, encoding="utf-8-sig").startswith(b"\xef\xbb\xbfPSL Session Export,")
    utf16 = encode_csv(sc, encoding="utf-16-le-bom", trailing_sub=3)
    assert utf16.startswith(b"\xff\xfeP\x00S\x00L\x00")
    assert utf16.endswith(b"\n\x00\x1a\x1a\x1a")
    hinted = encode_csv(sc, delimiter=";", sep_hint=True, line_ending="\n")
    assert hinted.startswith(b"sep=;\nPSL Session Export;1.0\n")
    quoted = encode_csv(sc, quote_all=True)
    assert quoted.startswith(b'PSL Session Export,1.0\r\n"Locale","ISO"\r\n')
    padded = encode_csv(sc, pad_fields=True)
    assert b"\r\nLocale,ISO,,,,,\r\n" in padded
    assert b"\r\n,,,,,,\r\nTime,Record," in padded


def test_render_writes_rows_as_given() -> None:
    rows = csv_rows(scenario(2))
    rows[-1][3] = "999"
    with pytest.raises(DecodeError) as info:
        psl_csv.decode(render_csv(rows), source="r.csv")
    assert info.value.code == "end_count"


def test_a_second_session_info_cannot_be_written() -> None:
    sc = scenario(2)
    info = next(r for r in sc.records if isinstance(r, SessionInfoRec))
    with pytest.raises(ValueError, match="one SESSION_INFO"):
        encode_csv(replace(sc, records=(*sc.records, info)))


def test_adjacent_snapshots_of_one_phase_cannot_be_written() -> None:
    sc = scenario(2)
    snap = next(r for r in sc.records if isinstance(r, SnapshotRec))
    at = sc.records.index(snap)
    records = (*sc.records[: at + 1], snap, *sc.records[at + 1 :])
    with pytest.raises(ValueError, match="two adjacent Interrogated snapshots"):
        encode_csv(replace(sc, records=records))
