"""The PSL CSV decoder (parsers/psl_csv.py) against docs/format-psl-csv.md.

The base file is the spec's §4 example (patient id made synthetic); the locale,
delimiter and encoding tests use hand-written variants of one richer file, so the
decoder is checked against literal text rather than against the fixture writer.
Every error test asserts the code, the physical line and the key text.
"""

from __future__ import annotations

import csv
import io
import random
import re
from datetime import date, datetime
from pathlib import Path

import pytest

from fixtures.binary_writer import encode_binary
from fixtures.csv_writer import encode_csv
from fixtures.scenarios import realistic_scenario
from parsers import psl_csv
from parsers.errors import DecodeError, LimitExceeded, StrictModeWarning, UnsupportedVersion
from parsers.model import (
    AlarmEvent,
    BolusEvent,
    ChangeEvent,
    NoteEvent,
    Position,
    RefillEvent,
    Session,
)
from parsers.params import FlexStep
from parsers.session_json import session_document

EXAMPLE = """\
PSL Session Export,1.0
Locale,ISO
Programmer Model,PX-200
Programmer Serial,PX2-0001234
Programmer Software,3.1.2045
Pump Model,IT-40
Pump Serial,ITP40-118822
Session ID,0d5e2a8c-3b9f-4a7e-9c61-2f4b8d1e7a90
Session Start,2026-03-14 09:32:10
UTC Offset,-05:00
Operator ID,dr.lee
Operator Role,Physician
Clinic ID,PAIN-01
Patient ID,SYN-0042117

Time,Record,Parameter,Value,Previous Value,Unit,Detail
2026-03-14 09:32:14,Pump Status,,,,,Pump Clock=2026-03-14 09:35:02|Firmware=2.3|Battery=OK
2026-03-14 09:32:15,Interrogated,Drug 1,Morphine,,,
2026-03-14 09:32:15,Interrogated,Drug 1 Concentration,10,,mg/mL,
2026-03-14 09:32:15,Interrogated,Drug 1 Daily Dose,2.0,,mg/day,
2026-03-14 09:32:15,Interrogated,Infusion Rate,0.2,,mL/day,
2026-03-14 09:32:15,Interrogated,Reservoir Volume,3.4,,mL,
2026-03-14 09:32:15,Alarm,Low Reservoir,Logged,,,Severity=Non-critical|Occurred=2026-03-09 02:14:00
2026-03-14 09:41:50,Refill,,40.0,,mL,Expected Residual=3.4|Aspirated=3.1|New Volume=40.0
2026-03-14 09:43:05,Change,Drug 1 Daily Dose,2.2,2.0,mg/day,Efficacy
2026-03-14 09:43:05,Change,Infusion Rate,0.22,0.2,mL/day,Efficacy
2026-03-14 09:43:40,Programmed,Drug 1 Daily Dose,2.2,,mg/day,
2026-03-14 09:43:40,Programmed,Infusion Rate,0.22,,mL/day,
2026-03-14 09:43:40,Programmed,Reservoir Volume,40.0,,mL,
2026-03-14 09:43:40,Programmed,Low Reservoir Alarm Date,2026-09-04,,,
,End,,14,,,
"""
LINES = EXAMPLE.splitlines()

# The same session in the three locales (§1): with a patient name that needs quoting
# under ',', a flex step (decimal mark), PM times (12-hour clock) and a note holding
# both delimiters and quotes.
RICH_ISO = """\
PSL Session Export,1.0
Locale,ISO
Programmer Model,PX-200
Programmer Serial,PX2-0001234
Programmer Software,3.1.2045
Pump Model,IT-40
Pump Serial,ITP40-118822
Session ID,0d5e2a8c-3b9f-4a7e-9c61-2f4b8d1e7a90
Session Start,2026-03-14 09:32:10
UTC Offset,-05:00
Operator ID,dr.lee
Operator Role,Physician
Clinic ID,PAIN-01
Patient ID,SYN-0042117
Patient Name,"Testperson, Alex"
Birth Date,1956-05-02

Time,Record,Parameter,Value,Previous Value,Unit,Detail
2026-03-14 09:32:14,Pump Status,,,,,Pump Clock=2026-03-14 09:35:02|Firmware=2.3|Battery=OK
2026-03-14 09:32:15,Interrogated,Drug 1,Morphine,,,
2026-03-14 09:32:15,Interrogated,Drug 1 Concentration,10,,mg/mL,
2026-03-14 09:32:15,Interrogated,Drug 1 Daily Dose,2.0,,mg/day,
2026-03-14 09:32:15,Interrogated,Infusion Rate,0.2,,mL/day,
2026-03-14 09:32:15,Interrogated,Flex Step 1,06:30@0.48,,mL/day,
2026-03-14 09:32:15,Interrogated,Reservoir Volume,3.4,,mL,
2026-03-14 09:32:15,Interrogated,Implant Date,2021-11-30,,,
2026-03-14 09:32:15,Alarm,Low Reservoir,Logged,,,Severity=Non-critical|Occurred=2026-03-09 00:14:00
2026-03-14 09:41:50,Refill,,40.0,,mL,Expected Residual=3.4|Aspirated=3.1|New Volume=40.0
2026-03-14 09:43:05,Change,Drug 1 Daily Dose,2.2,2.0,mg/day,Efficacy
2026-03-14 09:43:05,Change,Infusion Rate,0.22,0.2,mL/day,Efficacy
2026-03-14 09:43:40,Programmed,Drug 1 Daily Dose,2.2,,mg/day,
2026-03-14 09:43:40,Programmed,Infusion Rate,0.22,,mL/day,
2026-03-14 09:43:40,Programmed,Reservoir Volume,40.0,,mL,
2026-03-14 09:43:40,Programmed,Low Reservoir Alarm Date,2026-09-04,,,
2026-03-14 12:00:30,Bolus,,0.25,,mL,Kind=Bridge|Duration=30
2026-03-14 13:05:00,Note,,"Dose ok; next ""refill"", 3 months",,,
,End,,18,,,
"""
RICH_EN_US = """\
PSL Session Export,1.0
Locale,en-US
Programmer Model,PX-200
Programmer Serial,PX2-0001234
Programmer Software,3.1.2045
Pump Model,IT-40
Pump Serial,ITP40-118822
Session ID,0d5e2a8c-3b9f-4a7e-9c61-2f4b8d1e7a90
Session Start,03/14/2026 09:32:10 AM
UTC Offset,-05:00
Operator ID,dr.lee
Operator Role,Physician
Clinic ID,PAIN-01
Patient ID,SYN-0042117
Patient Name,"Testperson, Alex"
Birth Date,05/02/1956

Time,Record,Parameter,Value,Previous Value,Unit,Detail
03/14/2026 09:32:14 AM,Pump Status,,,,,Pump Clock=03/14/2026 09:35:02 AM|Firmware=2.3|Battery=OK
03/14/2026 09:32:15 AM,Interrogated,Drug 1,Morphine,,,
03/14/2026 09:32:15 AM,Interrogated,Drug 1 Concentration,10,,mg/mL,
03/14/2026 09:32:15 AM,Interrogated,Drug 1 Daily Dose,2.0,,mg/day,
03/14/2026 09:32:15 AM,Interrogated,Infusion Rate,0.2,,mL/day,
03/14/2026 09:32:15 AM,Interrogated,Flex Step 1,06:30@0.48,,mL/day,
03/14/2026 09:32:15 AM,Interrogated,Reservoir Volume,3.4,,mL,
03/14/2026 09:32:15 AM,Interrogated,Implant Date,11/30/2021,,,
03/14/2026 09:32:15 AM,Alarm,Low Reservoir,Logged,,,Severity=Non-critical|Occurred=03/09/2026 12:14:00 AM
03/14/2026 09:41:50 AM,Refill,,40.0,,mL,Expected Residual=3.4|Aspirated=3.1|New Volume=40.0
03/14/2026 09:43:05 AM,Change,Drug 1 Daily Dose,2.2,2.0,mg/day,Efficacy
03/14/2026 09:43:05 AM,Change,Infusion Rate,0.22,0.2,mL/day,Efficacy
03/14/2026 09:43:40 AM,Programmed,Drug 1 Daily Dose,2.2,,mg/day,
03/14/2026 09:43:40 AM,Programmed,Infusion Rate,0.22,,mL/day,
03/14/2026 09:43:40 AM,Programmed,Reservoir Volume,40.0,,mL,
03/14/2026 09:43:40 AM,Programmed,Low Reservoir Alarm Date,09/04/2026,,,
03/14/2026 12:00:30 PM,Bolus,,0.25,,mL,Kind=Bridge|Duration=30
03/14/2026 01:05:00 PM,Note,,"Dose ok; next ""refill"", 3 months",,,
,End,,18,,,
"""
RICH_DE_DE = """\
PSL Session Export;1.0
Locale;de-DE
Programmer Model;PX-200
Programmer Serial;PX2-0001234
Programmer Software;3.1.2045
Pump Model;IT-40
Pump Serial;ITP40-118822
Session ID;0d5e2a8c-3b9f-4a7e-9c61-2f4b8d1e7a90
Session Start;14.03.2026 09:32:10
UTC Offset;-05:00
Operator ID;dr.lee
Operator Role;Physician
Clinic ID;PAIN-01
Patient ID;SYN-0042117
Patient Name;Testperson, Alex
Birth Date;02.05.1956

Time;Record;Parameter;Value;Previous Value;Unit;Detail
14.03.2026 09:32:14;Pump Status;;;;;Pump Clock=14.03.2026 09:35:02|Firmware=2.3|Battery=OK
14.03.2026 09:32:15;Interrogated;Drug 1;Morphine;;;
14.03.2026 09:32:15;Interrogated;Drug 1 Concentration;10;;mg/mL;
14.03.2026 09:32:15;Interrogated;Drug 1 Daily Dose;2,0;;mg/day;
14.03.2026 09:32:15;Interrogated;Infusion Rate;0,2;;mL/day;
14.03.2026 09:32:15;Interrogated;Flex Step 1;06:30@0,48;;mL/day;
14.03.2026 09:32:15;Interrogated;Reservoir Volume;3,4;;mL;
14.03.2026 09:32:15;Interrogated;Implant Date;30.11.2021;;;
14.03.2026 09:32:15;Alarm;Low Reservoir;Logged;;;Severity=Non-critical|Occurred=09.03.2026 00:14:00
14.03.2026 09:41:50;Refill;;40,0;;mL;Expected Residual=3,4|Aspirated=3,1|New Volume=40,0
14.03.2026 09:43:05;Change;Drug 1 Daily Dose;2,2;2,0;mg/day;Efficacy
14.03.2026 09:43:05;Change;Infusion Rate;0,22;0,2;mL/day;Efficacy
14.03.2026 09:43:40;Programmed;Drug 1 Daily Dose;2,2;;mg/day;
14.03.2026 09:43:40;Programmed;Infusion Rate;0,22;;mL/day;
14.03.2026 09:43:40;Programmed;Reservoir Volume;40,0;;mL;
14.03.2026 09:43:40;Programmed;Low Reservoir Alarm Date;04.09.2026;;;
14.03.2026 12:00:30;Bolus;;0,25;;mL;Kind=Bridge|Duration=30
14.03.2026 13:05:00;Note;;"Dose ok; next ""refill"", 3 months";;;
;End;;18;;;
"""


def build(lines: list[str], *, ending: str = "\r\n") -> bytes:
    return (ending.join(lines) + ending).encode("utf-8")


def with_line(n: int, text: str, lines: list[str] = LINES) -> bytes:
    """The example with physical line `n` (1-based) replaced."""
    changed = list(lines)
    changed[n - 1] = text
    return build(changed)


def insert_line(n: int, text: str, lines: list[str] = LINES) -> bytes:
    """The example with `text` inserted so that it becomes line `n`."""
    changed = list(lines)
    changed.insert(n - 1, text)
    return build(changed)


def without_line(n: int, lines: list[str] = LINES) -> bytes:
    changed = list(lines)
    del changed[n - 1]
    return build(changed)


def decode(data: bytes, *, strict: bool = False) -> Session:
    return psl_csv.decode(data, source="t.csv", strict=strict)


def expect_error(
    data: bytes, code: str, line: int, *texts: str, kind: type[DecodeError] = DecodeError
) -> DecodeError:
    with pytest.raises(kind) as info:
        decode(data)
    error = info.value
    assert error.code == code, str(error)
    assert error.position == Position("line", line), str(error)
    message = str(error)
    assert message.startswith(f"t.csv: line {line}: ")
    for text in texts:
        assert text in message, message
    return error


# --- the spec's example --------------------------------------------------------------


def test_spec_example_decodes_to_the_documented_session() -> None:
    session = decode(EXAMPLE.encode())
    doc = session_document(session)
    assert doc["source_format"] == "psl-csv"
    assert doc["format_version"] == "1.0"
    assert doc["session_id"] == "0d5e2a8c-3b9f-4a7e-9c61-2f4b8d1e7a90"
    assert doc["session_start_utc"] == "2026-03-14T14:32:10Z"
    assert doc["utc_offset_min"] == -300
    assert doc["programmer"] == {"model": "PX-200", "serial": "PX2-0001234", "software": "3.1.2045"}
    assert doc["pump"] == {"model": "IT-40", "serial": "ITP40-118822"}
    assert doc["operator"] == {"id": "dr.lee", "role": "physician"}
    assert doc["clinic_id"] == "PAIN-01"
    # Only Patient ID is present: the patient exists, name empty, birth date null (§5.5).
    assert doc["patient"] == {"id": "SYN-0042117", "name": "", "birth_date": None}
    assert doc["interrogated_at_utc"] == "2026-03-14T14:32:15Z"
    assert doc["interrogated"] == {
        "drug1_name": "Morphine",
        "drug1_concentration": 10000,
        "drug1_daily_dose": 2000,
        "infusion_rate": 200,
        "reservoir_volume": 3400,
    }
    assert doc["programmed_at_utc"] == "2026-03-14T14:43:40Z"
    assert doc["programmed"] == {
        "drug1_daily_dose": 2200,
        "infusion_rate": 220,
        "reservoir_volume": 40000,
        "low_reservoir_alarm_date": "2026-09-04",
    }
    # Pump clock 09:35:02 read at 09:32:14: the pump runs 168 s ahead (docs/formats.md §5).
    assert doc["pump_status"] == {"pump_clock_offset_s": 168, "firmware": "2.3", "battery": "ok"}
    assert doc["events"] == [
        {
            "type": "alarm",
            "time_utc": "2026-03-14T14:32:15Z",
            "alarm": "low_reservoir",
            "severity": "non_critical",
            "state": "logged",
            "occurred_at_utc": "2026-03-09T07:11:12Z",
        },
        {
            "type": "refill",
            "time_utc": "2026-03-14T14:41:50Z",
            "expected_residual_ul": 3400,
            "aspirated_ul": 3100,
            "added_ul": 40000,
            "new_volume_ul": 40000,
        },
        {
            "type": "change",
            "time_utc": "2026-03-14T14:43:05Z",
            "parameter": "drug1_daily_dose",
            "old": 2000,
            "new": 2200,
            "reason": "efficacy",
        },
        {
            "type": "change",
            "time_utc": "2026-03-14T14:43:05Z",
            "parameter": "infusion_rate",
            "old": 200,
            "new": 220,
            "reason": "efficacy",
        },
    ]
    assert doc["warnings"] == []


def test_events_keep_their_physical_lines() -> None:
    session = decode(EXAMPLE.encode())
    assert [event.position for event in session.events] == [
        Position("line", n) for n in (23, 24, 25, 26)
    ]


def test_sniff_accepts_the_three_csv_signs_and_explains_a_refusal() -> None:
    assert psl_csv.sniff(EXAMPLE.encode()) is None
    assert psl_csv.sniff(b"\xef\xbb\xbfanything") is None
    assert psl_csv.sniff(b"\xff\xfeP\x00") is None
    assert psl_csv.sniff(b"sep=;\r\nPSL Session Export;1.0") is None
    reason = psl_csv.sniff(b"\x89PSL\r\n\x1a\n")
    assert reason == "first line is not 'PSL Session Export' and no BOM or sep= hint"
    assert psl_csv.sniff(b"Time,Record\n") is not None


# --- locales, delimiters, encodings (§1, §5.2, §5.3, §5.10) -------------------------


def rich_session(text: str, **kwargs: object) -> Session:
    return decode(text.encode(), **kwargs)  # type: ignore[arg-type]


def test_rich_iso_file_holds_every_locale_sensitive_value() -> None:
    session = rich_session(RICH_ISO)
    assert session.patient is not None
    assert session.patient.name == "Testperson, Alex"
    assert session.patient.birth_date == date(1956, 5, 2)
    assert session.interrogated["flex_step_0"] == FlexStep(390, 480)
    assert session.interrogated["implant_date"] == date(2021, 11, 30)
    bolus = [e for e in session.events if isinstance(e, BolusEvent)]
    assert [(b.kind, b.volume_ul, b.duration_min, b.time_local) for b in bolus] == [
        ("bridge", 250, 30, datetime(2026, 3, 14, 12, 0, 30))
    ]
    notes = [e for e in session.events if isinstance(e, NoteEvent)]
    assert [(n.text, n.time_local) for n in notes] == [
        ('Dose ok; next "refill", 3 months', datetime(2026, 3, 14, 13, 5, 0))
    ]
    alarm = next(e for e in session.events if isinstance(e, AlarmEvent))
    assert alarm.occurred_pump_clock == datetime(2026, 3, 9, 0, 14, 0)
    assert session.warnings == ()


@pytest.mark.parametrize("text", [RICH_EN_US, RICH_DE_DE], ids=["en-US", "de-DE"])
def test_each_locale_decodes_to_the_same_session(text: str) -> None:
    expected = session_document(rich_session(RICH_ISO))
    assert session_document(rich_session(text)) == expected


def test_de_de_with_comma_delimiter_quotes_its_decimals() -> None:
    # The de-DE file re-quoted by the stdlib for ',' (RFC 4180): "2,0" etc. are quoted.
    rows = list(csv.reader(io.StringIO(RICH_DE_DE), delimiter=";"))
    out = io.StringIO()
    csv.writer(out, delimiter=",", lineterminator="\r\n").writerows(rows)
    requoted = out.getvalue()
    assert '"2,0",,mg/day' in requoted
    expected = session_document(rich_session(RICH_ISO))
    assert session_document(decode(requoted.encode())) == expected


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: text.encode("utf-8"),
        lambda text: b"\xef\xbb\xbf" + text.encode("utf-8"),
        lambda text: b"\xff\xfe" + text.encode("utf-16-le"),
        lambda text: text.replace("\n", "\r\n").encode("utf-8"),
        lambda text: b"\xff\xfe" + text.replace("\n", "\r\n").encode("utf-16-le"),
    ],
    ids=["utf-8", "utf-8-bom", "utf-16le-bom", "utf-8-crlf", "utf-16le-crlf"],
)
@pytest.mark.parametrize("text", [RICH_ISO, RICH_EN_US, RICH_DE_DE], ids=["ISO", "en-US", "de-DE"])
def test_every_encoding_and_line_ending(encode: object, text: str) -> None:
    expected = session_document(rich_session(RICH_ISO))
    assert session_document(decode(encode(text))) == expected  # type: ignore[operator]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16-le"])
def test_bom_is_not_a_line(encoding: str) -> None:
    bom = b"\xef\xbb\xbf" if encoding == "utf-8" else b"\xff\xfe"
    data = bom + with_line(11, "Operator ID").decode().encode(encoding)
    expect_error(data, "bad_metadata_line", 11, "metadata line")


def test_sep_hint_sets_the_delimiter_and_counts_as_line_1() -> None:
    text = "sep=;\n" + RICH_DE_DE
    expected = session_document(rich_session(RICH_ISO))
    assert session_document(decode(text.encode())) == expected
    broken = text.replace("Operator Role;Physician", "Operator Role;Doctor")
    expect_error(broken.encode(), "bad_word", 13, "Operator Role", "'Doctor'")


def test_sep_hint_with_comma() -> None:
    data = b"sep=,\r\n" + EXAMPLE.encode()
    assert session_document(decode(data)) == session_document(decode(EXAMPLE.encode()))


@pytest.mark.parametrize("count", [1, 2, 7, 128])
def test_trailing_sub_bytes_are_ignored_utf8(count: int) -> None:
    data = EXAMPLE.encode() + b"\x1a" * count
    assert session_document(decode(data)) == session_document(decode(EXAMPLE.encode()))


@pytest.mark.parametrize("count", [1, 2, 3, 127, 128])
def test_trailing_sub_bytes_are_ignored_utf16_single_bytes(count: int) -> None:
    base = b"\xff\xfe" + EXAMPLE.encode("utf-16-le")
    data = base + b"\x1a" * count
    assert session_document(decode(data)) == session_document(decode(base))


def test_trailing_sub_characters_are_ignored_utf16_code_units() -> None:
    base = b"\xff\xfe" + EXAMPLE.encode("utf-16-le")
    data = base + "\x1a\x1a".encode("utf-16-le") + b"\x1a"
    assert session_document(decode(data)) == session_document(decode(base))


def test_utf16_text_ending_in_a_character_with_high_byte_0x1a_is_kept() -> None:
    # U+1A0A ends in byte 0x1A: the padding strip must give it back (even length).
    text = EXAMPLE.replace(",End,,14,,,\n", ",End,,14,,,\n,,,,,,\u1a0a")
    data = b"\xff\xfe" + text.encode("utf-16-le") + b"\x1a\x1a\x1a"
    expect_error(data, "data_after_end", 32, "',,,,,,\u1a0a'")


def test_lf_and_crlf_give_the_same_session() -> None:
    assert session_document(decode(build(LINES, ending="\n"))) == session_document(
        decode(build(LINES, ending="\r\n"))
    )


# --- quoting and physical lines (§1, §5.2) -------------------------------------------


def test_note_with_delimiter_quote_and_line_breaks_keeps_later_line_numbers() -> None:
    note = '2026-03-14 09:42:00,Note,,"Call back, ""soon"";\nsecond line\r\nthird line",,,'
    lines = list(LINES)
    lines.insert(24, note)  # after the Refill row: the note starts on line 25
    lines[-1] = ",End,,15,,,"
    session = decode(build(lines, ending="\n"))
    notes = [e for e in session.events if isinstance(e, NoteEvent)]
    assert [n.text for n in notes] == ['Call back, "soon";\nsecond line\r\nthird line']
    assert notes[0].position == Position("line", 25)
    changes = [e for e in session.events if isinstance(e, ChangeEvent)]
    # The note spans lines 25-27, so the Change rows sit on lines 28 and 29.
    assert [c.position for c in changes] == [Position("line", 28), Position("line", 29)]
    lines[25] = lines[25].replace("Efficacy", "Because")  # the first Change row, now line 28
    expect_error(build(lines, ending="\n"), "bad_word", 28, "reason", "'Because'")


def test_quoted_metadata_value_spanning_lines_shifts_following_lines() -> None:
    lines = list(LINES)
    lines[10] = 'Operator ID,"dr.lee\nsecond"'
    lines[11] = "Operator Role,Surgeon"
    expect_error(build(lines, ending="\n"), "bad_word", 13, "Operator Role", "'Surgeon'")


def test_broken_quoting_is_a_bad_csv_error_at_the_row_start() -> None:
    expect_error(with_line(11, 'Operator ID,"dr"lee'), "bad_csv", 11, "malformed CSV row")
    expect_error(
        with_line(20, '2026-03-14 09:32:15,Interrogated,Drug 1 Daily Dose,"2.0'), "bad_csv", 20
    )


# --- metadata block (§2, §5.5) -------------------------------------------------------


def test_metadata_trailing_empty_fields_and_a_line_of_empty_fields() -> None:
    lines = [line + ",,,,," if 1 <= n <= 14 else line for n, line in enumerate(LINES, 1)]
    lines[14] = ",,,,,,"
    assert session_document(decode(build(lines))) == session_document(decode(EXAMPLE.encode()))


def test_extra_blank_lines_before_the_header_row_are_tolerated() -> None:
    data = insert_line(16, "")
    assert session_document(decode(data)) == session_document(decode(EXAMPLE.encode()))


def test_no_patient_key_means_no_patient() -> None:
    assert decode(without_line(14)).patient is None


def test_birth_date_alone_makes_a_patient() -> None:
    session = decode(with_line(14, "Birth Date,1956-05-02"))
    assert session.patient is not None
    assert (session.patient.id, session.patient.name, session.patient.birth_date) == (
        "",
        "",
        date(1956, 5, 2),
    )


def test_empty_birth_date_is_not_set() -> None:
    session = decode(insert_line(15, "Birth Date,"))
    assert session.patient is not None
    assert session.patient.birth_date is None


def test_session_id_in_upper_case_is_kept_in_lower_case() -> None:
    session = decode(with_line(8, "Session ID,0D5E2A8C-3B9F-4A7E-9C61-2F4B8D1E7A90"))
    assert session.session_id == "0d5e2a8c-3b9f-4a7e-9c61-2f4b8d1e7a90"


def test_operator_roles_and_utc_offsets() -> None:
    for word, role in (
        ("QHP", "qhp"),
        ("Nurse", "nurse"),
        ("Technician", "technician"),
        ("Unknown", "unknown"),
    ):
        assert decode(with_line(12, f"Operator Role,{word}")).operator.role == role
    assert decode(with_line(10, "UTC Offset,+14:00")).utc_offset_min == 840
    assert decode(with_line(10, "UTC Offset,-12:00")).utc_offset_min == -720
    assert decode(with_line(10, "UTC Offset,+05:30")).utc_offset_min == 330
    assert decode(with_line(10, "UTC Offset,-00:00")).utc_offset_min == 0


def test_minor_version_is_reported() -> None:
    assert decode(with_line(1, "PSL Session Export,1.3")).format_version == "1.3"


# --- table contents ------------------------------------------------------------------


def test_empty_parameter_rows_are_empty_snapshots() -> None:
    lines = [
        *LINES[:17],
        "2026-03-14 09:32:15,Interrogated,,,,,",
        *LINES[22:26],
        "2026-03-14 09:43:40,Programmed,,,,,",
        ",End,,7,,,",
    ]
    session = decode(build(lines))
    assert dict(session.interrogated) == {}
    assert session.programmed == {}
    assert session.programmed_at_local == datetime(2026, 3, 14, 9, 43, 40)


def test_no_programmed_rows_means_programmed_is_none() -> None:
    lines = [*LINES[:26], ",End,,10,,,"]
    session = decode(build(lines))
    assert session.programmed is None
    assert session.programmed_at_local is None


def test_not_measured_aspiration_and_unknown_times() -> None:
    data = with_line(
        24, ",Refill,,40.0,,mL,Aspirated=Not Measured|New Volume=40.0|Expected Residual=3.4"
    )
    session = decode(data)
    refill = session.events[1]
    assert isinstance(refill, RefillEvent)
    assert refill.time_local is None
    assert refill.aspirated_ul is None
    assert (refill.expected_residual_ul, refill.new_volume_ul) == (3400, 40000)


def test_empty_pump_clock_and_occurred_are_unknown() -> None:
    lines = list(LINES)
    lines[16] = "2026-03-14 09:32:14,Pump Status,,,,,Battery=ERI|Firmware=10.0|Pump Clock="
    lines[22] = "2026-03-14 09:32:15,Alarm,Code 0x00ab,Active,,,Occurred=|Severity=Critical"
    session = decode(build(lines))
    assert session.pump_status is not None
    assert session.pump_status.pump_clock_offset_s is None
    assert session.pump_status.firmware == "10.0"
    assert session.pump_status.battery == "eri"
    alarm = session.events[0]
    assert isinstance(alarm, AlarmEvent)
    assert (alarm.alarm, alarm.severity, alarm.state, alarm.occurred_local) == (
        "unknown:0x00ab",
        "critical",
        "active",
        None,
    )
    assert any("0x00ab" in warning for warning in session.warnings)


def test_every_parameter_label_and_unit() -> None:
    rows = [
        ("Drug 1", "Baclofen", ""),
        ("Drug 1 Concentration", "500", "mcg/mL"),
        ("Drug 1 Daily Dose", "150", "mcg/day"),
        ("Drug 2", "Clonidine", ""),
        ("Drug 2 Concentration", "0.5", "mg/mL"),
        ("Drug 2 Daily Dose", "0.15", "mg/day"),
        ("Infusion Mode", "Minimum Rate", ""),
        ("Infusion Rate", "0.3", "mL/day"),
        ("Flex Step 8", "23:59@1.001", "mL/day"),
        ("PTM Enabled", "On", ""),
        ("PTM Bolus Dose", "0.05", "mg"),
        ("PTM Bolus Duration", "10", "min"),
        ("PTM Lockout", "120", "min"),
        ("PTM Max Per Day", "4", ""),
        ("Low Reservoir Alarm Volume", "2", "mL"),
        ("Low Reservoir Alarm", "Off", ""),
        ("Reservoir Volume", "19.5", "mL"),
        ("Reservoir Capacity", "20", "mL"),
        ("Low Reservoir Alarm Date", "", ""),
        ("Refill Date", "2026-06-01", ""),
        ("ERI Date", "2079-06-05", ""),
        ("Catheter Volume", "0.162", "mL"),
        ("Catheter Tip Level", "T10", ""),
        ("Implant Date", "1900-01-01", ""),
    ]
    table = [
        f"2026-03-14 09:32:15,Interrogated,{label},{value},,{unit}," for label, value, unit in rows
    ]
    lines = LINES[:16] + table + [f",End,,{len(table)},,,"]
    session = decode(build(lines))
    assert dict(session.interrogated) == {
        "drug1_name": "Baclofen",
        "drug1_concentration": 500,
        "drug1_daily_dose": 150,
        "drug2_name": "Clonidine",
        "drug2_concentration": 500,
        "drug2_daily_dose": 150,
        "infusion_mode": "minimum_rate",
        "infusion_rate": 300,
        "flex_step_7": FlexStep(1439, 1001),
        "ptm_enabled": True,
        "ptm_bolus_dose": 50,
        "ptm_bolus_duration": 10,
        "ptm_lockout": 120,
        "ptm_max_per_day": 4,
        "low_reservoir_alarm_volume": 2000,
        "low_reservoir_alarm_enabled": False,
        "reservoir_volume": 19500,
        "reservoir_capacity": 20000,
        "low_reservoir_alarm_date": None,
        "refill_date": date(2026, 6, 1),
        "eri_date": date(2079, 6, 5),
        "catheter_volume": 162,
        "catheter_tip_level": "T10",
        "implant_date": date(1900, 1, 1),
    }
    assert session.warnings == ()


def test_change_of_a_date_from_not_set_and_of_a_word() -> None:
    lines = list(LINES)
    lines[24] = "2026-03-14 09:43:05,Change,Refill Date,2026-06-01,,,Refill Bookkeeping"
    lines[25] = "2026-03-14 09:43:05,Change,Infusion Mode,Flex,Simple Continuous,,Unspecified"
    session = decode(build(lines))
    changes = [
        (e.parameter, e.old, e.new, e.reason) for e in session.events if isinstance(e, ChangeEvent)
    ]
    assert changes == [
        ("refill_date", None, date(2026, 6, 1), "refill_bookkeeping"),
        ("infusion_mode", "simple_continuous", "flex", "unspecified"),
    ]


def test_en_us_twelve_hour_clock_edges() -> None:
    lines = RICH_EN_US.splitlines()
    lines[8] = "Session Start,03/14/2026 12:00:00 AM"
    session = decode(build(lines))
    assert session.session_start_local == datetime(2026, 3, 14, 0, 0, 0)
    lines[8] = "Session Start,03/14/2026 12:59:59 PM"
    assert decode(build(lines)).session_start_local == datetime(2026, 3, 14, 12, 59, 59)
    lines[8] = "Session Start,03/14/2026 11:00:00 PM"
    assert decode(build(lines)).session_start_local == datetime(2026, 3, 14, 23, 0, 0)


def test_blank_lines_after_end_are_allowed() -> None:
    data = EXAMPLE.encode() + b"\r\n,,,,,,\r\n\r\n"
    assert session_document(decode(data)) == session_document(decode(EXAMPLE.encode()))


def test_end_row_may_carry_a_time() -> None:
    assert decode(with_line(31, "2026-03-14 09:44:00,End,,14,,,")).session_id


# --- warnings (§5.7) -----------------------------------------------------------------


def test_unknown_metadata_key_warns_with_its_line() -> None:
    session = decode(insert_line(14, "Ward,3B"))
    assert session.warnings == ("unknown metadata key 'Ward' ignored (line 14)",)


def test_unknown_record_word_warns_skips_and_counts_for_end() -> None:
    lines = list(LINES)
    lines.insert(23, "2026-03-14 09:40:00,Calibration,,0a0b,,,")
    lines[-1] = ",End,,15,,,"
    session = decode(build(lines))
    assert len(session.events) == 4
    assert session.warnings == (
        "unknown Record word 'Calibration' at '2026-03-14 09:40:00' skipped (line 24)",
    )


def test_unknown_label_in_a_snapshot_skips_the_entry_not_the_snapshot() -> None:
    session = decode(with_line(19, "2026-03-14 09:32:15,Interrogated,Pump Color,Blue,,,"))
    assert "drug1_concentration" not in session.interrogated
    assert session.interrogated["drug1_name"] == "Morphine"
    assert session.warnings[0] == (
        "Interrogated row at 2026-03-14 09:32:15: unknown parameter label 'Pump Color' skipped (line 19)"
    )


def test_snapshot_of_unknown_labels_only_is_an_empty_snapshot() -> None:
    lines = [*LINES[:17], "2026-03-14 09:32:15,Interrogated,Pump Color,Blue,,,", *LINES[22:30]]
    lines.append(",End,,10,,,")
    session = decode(build(lines))
    assert session.interrogated_at_local == datetime(2026, 3, 14, 9, 32, 15)
    assert "drug1_name" not in session.interrogated


def test_unknown_label_in_a_change_row_skips_the_row() -> None:
    session = decode(with_line(25, "2026-03-14 09:43:05,Change,Pump Color,Red,Blue,,Efficacy"))
    changes = [e for e in session.events if isinstance(e, ChangeEvent)]
    assert [c.parameter for c in changes] == ["infusion_rate"]
    assert "unknown parameter label 'Pump Color'; row skipped (line 25)" in session.warnings[0]


def test_unknown_detail_key_warns() -> None:
    session = decode(
        with_line(
            24,
            "2026-03-14 09:41:50,Refill,,40.0,,mL,"
            "Expected Residual=3.4|Aspirated=3.1|New Volume=40.0|Lot=A17",
        )
    )
    assert session.warnings == (
        "Refill row at 2026-03-14 09:41:50: unknown Detail key 'Lot' ignored (line 24)",
    )


@pytest.mark.parametrize(
    ("data", "code", "line"),
    [
        (insert_line(14, "Ward,3B"), "strict:unknown_key", 14),
        (insert_line(24, "2026-03-14 09:40:00,Calibration,,,,,"), "strict:unknown_record_word", 24),
        (
            with_line(19, "2026-03-14 09:32:15,Interrogated,Pump Color,Blue,,,"),
            "strict:unknown_label",
            19,
        ),
    ],
)
def test_strict_mode_turns_warnings_into_errors(data: bytes, code: str, line: int) -> None:
    with pytest.raises(StrictModeWarning) as info:
        decode(data, strict=True)
    assert info.value.code == code
    assert info.value.position == Position("line", line)
    assert "warning treated as error" in str(info.value)


# --- errors --------------------------------------------------------------------------

# fmt: off
ERROR_CASES = [
    # (id, data, code, line, key texts)
    ("bad_utf8", with_line(11, "Operator ID,dr.lée").replace(b"\xc3\xa9", b"\xe9"), "bad_encoding", 11, ("UTF-8", "e9")),
    ("no_header_bom", b"\xef\xbb\xbfPSL Export,1.0\r\n", "no_header_line", 1, ("expected 'PSL Session Export'", "'PSL Export,1.0'")),
    ("no_header_after_sep", b"sep=,\r\nLocale,ISO\r\n", "no_header_line", 2, ("'Locale,ISO'",)),
    ("sep_pipe", b"sep=|\r\nPSL Session Export|1.0\r\n", "bad_delimiter", 1, ("'sep=,' or 'sep=;'", "'sep=|'")),
    ("tab_delimiter", b"PSL Session Export\t1.0\r\n", "bad_delimiter", 1, ("',' or ';'", "'\\t'")),
    ("no_delimiter", b"PSL Session Export\r\n", "bad_delimiter", 1, ("found end of line",)),
    ("hint_mismatch", b"sep=;\r\n" + EXAMPLE.encode(), "bad_delimiter", 2, ("';' (from the sep= line)", "found ','")),
    ("bad_version", with_line(1, "PSL Session Export,1"), "bad_version", 1, ("'major.minor'", "'1'")),
    ("decimal_comma_version", with_line(1, "PSL Session Export,1,0"), "bad_version", 1, ("'major.minor'", "found '1'")),
    ("bad_csv_text_after_quote", with_line(11, 'Operator ID,"dr"lee'), "bad_csv", 11, ("malformed CSV row",)),
    ("bad_csv_unterminated", with_line(29, '2026-03-14 09:43:40,Programmed,Reservoir Volume,"40.0,,mL,'), "bad_csv", 29, ("malformed CSV row",)),
    ("bad_metadata_line", with_line(11, "Operator ID"), "bad_metadata_line", 11, ("'Key,Value'", "'Operator ID'")),
    ("empty_key", with_line(11, ",dr.lee"), "bad_metadata_line", 11, ("',dr.lee'",)),
    ("metadata_extra_value", with_line(11, "Operator ID,dr.lee,dr.kim"), "field_count", 11, ("'dr.kim'",)),
    ("duplicate_key", with_line(14, "Locale,ISO"), "duplicate_key", 14, ("'Locale'", "first on line 2")),
    ("missing_key", without_line(13), "missing_key", 14, ("'Clinic ID' is missing",)),
    ("missing_table", build(LINES[:14]), "missing_table", 14, ("event table",)),
    ("missing_table_after_blank", build(LINES[:15]), "missing_table", 15, ("no event table",)),
    ("bad_locale", with_line(2, "Locale,fr-FR"), "bad_locale", 2, ("one of 'ISO', 'en-US', 'de-DE'", "'fr-FR'")),
    ("bad_software", with_line(5, "Programmer Software,3.1"), "bad_software", 5, ("'major.minor.build'", "'3.1'")),
    ("software_range", with_line(5, "Programmer Software,3.1.65536"), "out_of_range", 5, ("build", "0..65535", "65536")),
    ("bad_uuid", with_line(8, "Session ID,0d5e2a8c3b9f4a7e9c612f4b8d1e7a90"), "bad_uuid", 8, ("8-4-4-4-12",)),
    ("zero_uuid", with_line(8, "Session ID,00000000-0000-0000-0000-000000000000"), "bad_uuid", 8, ("not all zero",)),
    ("bad_utc_offset", with_line(10, "UTC Offset,-5:00"), "bad_utc_offset", 10, ("'+HH:MM' or '-HH:MM'", "'-5:00'")),
    ("utc_offset_minutes", with_line(10, "UTC Offset,+05:60"), "bad_utc_offset", 10, ("'+05:60'",)),
    ("utc_offset_range", with_line(10, "UTC Offset,+14:30"), "out_of_range", 10, ("-12:00..+14:00", "'+14:30'")),
    ("timestamp_shape", with_line(9, "Session Start,2026-03-14 9:32:10"), "bad_timestamp", 9, ("'YYYY-MM-DD HH:MM:SS'", "'2026-03-14 9:32:10'")),
    ("timestamp_no_seconds", with_line(9, "Session Start,2026-03-14 09:32"), "bad_timestamp", 9, ("Session Start",)),
    ("timestamp_t", with_line(9, "Session Start,2026-03-14T09:32:10"), "bad_timestamp", 9, ("'2026-03-14T09:32:10'",)),
    ("timestamp_no_day", with_line(9, "Session Start,2026-02-29 09:32:10"), "bad_timestamp", 9, ("a real date and time",)),
    ("timestamp_hour_24", with_line(9, "Session Start,2026-03-14 24:00:00"), "bad_timestamp", 9, ("a real date and time",)),
    ("session_start_empty", with_line(9, "Session Start,"), "bad_timestamp", 9, ("Session Start", "found ''")),
    ("timestamp_before_2000", with_line(9, "Session Start,1999-12-31 23:59:59"), "out_of_range", 9, ("2000-01-01 00:00:00",)),
    ("timestamp_after_2136", with_line(9, "Session Start,2136-02-07 06:28:15"), "out_of_range", 9, ("2136-02-07 06:28:14",)),
    ("bad_date", insert_line(15, "Birth Date,1956-5-2"), "bad_date", 15, ("'YYYY-MM-DD'", "'1956-5-2'")),
    ("date_no_day", insert_line(15, "Birth Date,1956-02-30"), "bad_date", 15, ("a real date",)),
    ("date_before_1900", insert_line(15, "Birth Date,1899-12-31"), "out_of_range", 15, ("1900-01-01 to 2079-06-05",)),
    ("date_after_2079", with_line(30, "2026-03-14 09:43:40,Programmed,Low Reservoir Alarm Date,2079-06-06,,,"), "out_of_range", 30, ("'2079-06-06'",)),
    ("not_ascii_model", with_line(6, "Pump Model,IT-40é"), "not_ascii", 6, ("Pump Model", "ASCII")),
    ("nul_in_serial", with_line(4, "Programmer Serial,PX2\x00001"), "not_ascii", 4, ("without NUL",)),
    ("serial_too_long", with_line(7, "Pump Serial,ITP40-1188229"), "text_too_long", 7, ("at most 12 characters", "13 characters")),
    ("empty_pump_serial", with_line(7, "Pump Serial,"), "empty_value", 7, ("Pump Serial",)),
    ("operator_too_long", with_line(11, "Operator ID," + "x" * 256), "text_too_long", 11, ("Operator ID", "at most 255 bytes", "256 bytes")),
    ("patient_name_too_long", insert_line(15, "Patient Name," + "é" * 128), "text_too_long", 15, ("Patient Name", "256 bytes")),
    ("bad_role", with_line(12, "Operator Role,physician"), "bad_word", 12, ("Operator Role", "'Physician'", "found 'physician'")),
    ("bad_header_row", with_line(16, "Time,Record,Parameter,Value,Previous,Unit,Detail"), "bad_header_row", 16, ("'Time,Record,Parameter,Value,Previous Value,Unit,Detail'", "'Time,Record,Parameter,Value,Previous,Unit,Detail'")),
    ("header_row_semicolon", with_line(16, "Time;Record;Parameter;Value;Previous Value;Unit;Detail"), "bad_header_row", 16, ("event table header row",)),
    ("blank_line_in_table", insert_line(21, ""), "blank_line_in_table", 21, ("blank line inside the event table",)),
    ("empty_fields_line_in_table", insert_line(21, ",,,,,,"), "blank_line_in_table", 21, ("before the End row",)),
    ("six_fields", with_line(19, "2026-03-14 09:32:15,Interrogated,Drug 1 Concentration,10,,mg/mL"), "field_count", 19, ("expected 7 fields, found 6 fields",)),
    ("eight_fields", with_line(19, "2026-03-14 09:32:15,Interrogated,Drug 1 Concentration,10,,mg/mL,,"), "field_count", 19, ("found 8 fields",)),
    ("empty_record_word", with_line(19, "2026-03-14 09:32:15,,Drug 1 Concentration,10,,mg/mL,"), "bad_word", 19, ("Record", "found ''")),
    ("bad_unit", with_line(19, "2026-03-14 09:32:15,Interrogated,Drug 1 Concentration,10,,g/L,"), "bad_unit", 19, ("line 19: Unit of 'Drug 1 Concentration': expected one of 'mg/mL', 'mcg/mL', found 'g/L'",)),
    ("unit_on_a_name", with_line(18, "2026-03-14 09:32:15,Interrogated,Drug 1,Morphine,,mg,"), "bad_unit", 18, ("Unit of 'Drug 1': expected '', found 'mg'",)),
    ("unit_missing", with_line(21, "2026-03-14 09:32:15,Interrogated,Infusion Rate,0.2,,,"), "bad_unit", 21, ("expected 'mL/day', found ''",)),
    ("refill_unit", with_line(24, "2026-03-14 09:41:50,Refill,,40.0,,L,Expected Residual=3.4|Aspirated=3.1|New Volume=40.0"), "bad_unit", 24, ("Unit of a Refill row", "expected 'mL'", "'L'")),
    ("decimal_comma_in_iso", with_line(20, '2026-03-14 09:32:15,Interrogated,Drug 1 Daily Dose,"2,0",,mg/day,'), "bad_number", 20, ("decimal mark '.'", "'2,0'")),
    ("thousands_separator", with_line(22, '2026-03-14 09:32:15,Interrogated,Reservoir Volume,"1,003.4",,mL,'), "bad_number", 22, ("no thousands separators", "'1,003.4'")),
    ("plus_sign", with_line(22, "2026-03-14 09:32:15,Interrogated,Reservoir Volume,+3.4,,mL,"), "bad_number", 22, ("'+3.4'",)),
    ("leading_dot", with_line(22, "2026-03-14 09:32:15,Interrogated,Reservoir Volume,.4,,mL,"), "bad_number", 22, ("'.4'",)),
    ("exponent", with_line(22, "2026-03-14 09:32:15,Interrogated,Reservoir Volume,3e3,,mL,"), "bad_number", 22, ("'3e3'",)),
    ("empty_number", with_line(22, "2026-03-14 09:32:15,Interrogated,Reservoir Volume,,,mL,"), "bad_number", 22, ("Value of 'Reservoir Volume'", "found ''")),
    ("not_whole", with_line(21, "2026-03-14 09:32:15,Interrogated,Infusion Rate,0.2205,,mL/day,"), "not_whole", 21, ("a whole number of uL/day", "'0.2205' = 220.5 uL/day")),
    ("not_whole_mcg", with_line(19, "2026-03-14 09:32:15,Interrogated,Drug 1 Concentration,10.5,,mcg/mL,"), "not_whole", 19, ("ug/mL",)),
    ("negative", with_line(22, "2026-03-14 09:32:15,Interrogated,Reservoir Volume,-3.4,,mL,"), "out_of_range", 22, ("0..4294967295 uL", "-3400")),
    ("u32_overflow", with_line(22, "2026-03-14 09:32:15,Interrogated,Reservoir Volume,4294967.296,,mL,"), "out_of_range", 22, ("4294967296",)),
    ("huge_number", with_line(22, "2026-03-14 09:32:15,Interrogated,Reservoir Volume," + "9" * 30 + ",,mL,"), "out_of_range", 22, ("Reservoir Volume",)),
    ("too_many_digits", with_line(22, "2026-03-14 09:32:15,Interrogated,Reservoir Volume," + "1" * 31 + ",,mL,"), "bad_number", 22, ("Reservoir Volume",)),
    ("text_param_too_long", with_line(18, "2026-03-14 09:32:15,Interrogated,Drug 1," + "M" * 65 + ",,,"), "text_too_long", 18, ("at most 64 bytes", "65 bytes")),
    ("bad_flex_step", insert_line(22, "2026-03-14 09:32:15,Interrogated,Flex Step 1,6:30@0.48,,mL/day,"), "bad_flex_step", 22, ("'HH:MM@rate'", "'6:30@0.48'")),
    ("flex_step_hour_24", insert_line(22, "2026-03-14 09:32:15,Interrogated,Flex Step 1,24:00@0.48,,mL/day,"), "bad_flex_step", 22, ("'24:00@0.48'",)),
    ("flex_step_rate", insert_line(22, "2026-03-14 09:32:15,Interrogated,Flex Step 1,06:30@0.4805,,mL/day,"), "not_whole", 22, ("rate",)),
    ("bad_bool", insert_line(22, "2026-03-14 09:32:15,Interrogated,PTM Enabled,Yes,,,"), "bad_word", 22, ("one of 'On', 'Off'", "'Yes'")),
    ("bad_mode", insert_line(22, "2026-03-14 09:32:15,Interrogated,Infusion Mode,Continuous,,,"), "bad_word", 22, ("'Simple Continuous'", "'Continuous'")),
    ("unexpected_previous", with_line(19, "2026-03-14 09:32:15,Interrogated,Drug 1 Concentration,10,5,mg/mL,"), "unexpected_value", 19, ("Previous Value of an Interrogated row", "an empty cell", "'5'")),
    ("unexpected_detail", with_line(19, "2026-03-14 09:32:15,Interrogated,Drug 1 Concentration,10,,mg/mL,x"), "unexpected_value", 19, ("Detail",)),
    ("unexpected_refill_parameter", with_line(24, "2026-03-14 09:41:50,Refill,Reservoir Volume,40.0,,mL,Expected Residual=3.4|Aspirated=3.1|New Volume=40.0"), "unexpected_value", 24, ("Parameter of a Refill row",)),
    ("unexpected_status_value", with_line(17, "2026-03-14 09:32:14,Pump Status,,OK,,,Pump Clock=2026-03-14 09:35:02|Firmware=2.3|Battery=OK"), "unexpected_value", 17, ("Value of a Pump Status row",)),
    ("unexpected_alarm_unit", with_line(23, "2026-03-14 09:32:15,Alarm,Low Reservoir,Logged,,mL,Severity=Non-critical|Occurred="), "unexpected_value", 23, ("Unit of an Alarm row",)),
    ("unexpected_end_detail", with_line(31, ",End,,14,,,done"), "unexpected_value", 31, ("Detail of an End row",)),
    ("empty_snapshot_row_in_run", insert_line(31, "2026-03-14 09:43:40,Programmed,,,,,"), "empty_snapshot_row", 31, ("only row of its snapshot", "line 27")),
    ("empty_snapshot_row_first", insert_line(27, "2026-03-14 09:43:40,Programmed,,,,,"), "empty_snapshot_row", 28, ("line 27",)),
    ("snapshot_time", with_line(20, "2026-03-14 09:32:16,Interrogated,Drug 1 Daily Dose,2.0,,mg/day,"), "snapshot_time", 20, ("'2026-03-14 09:32:15' like the first row of its snapshot (line 18)", "'2026-03-14 09:32:16'")),
    ("duplicate_parameter", with_line(20, "2026-03-14 09:32:15,Interrogated,Drug 1 Concentration,20,,mg/mL,"), "duplicate_parameter", 20, ("'Drug 1 Concentration'", "snapshot from line 18")),
    ("bad_detail_item", with_line(24, "2026-03-14 09:41:50,Refill,,40.0,,mL,Expected Residual 3.4|Aspirated=3.1|New Volume=40.0"), "bad_detail", 24, ("'Key=Value'", "'Expected Residual 3.4'")),
    ("trailing_pipe", with_line(24, "2026-03-14 09:41:50,Refill,,40.0,,mL,Expected Residual=3.4|Aspirated=3.1|New Volume=40.0|"), "bad_detail", 24, ("found ''",)),
    ("duplicate_detail", with_line(24, "2026-03-14 09:41:50,Refill,,40.0,,mL,Expected Residual=3.4|Aspirated=3.1|Aspirated=3.2|New Volume=40.0"), "duplicate_detail", 24, ("'Aspirated'",)),
    ("missing_detail", with_line(24, "2026-03-14 09:41:50,Refill,,40.0,,mL,Expected Residual=3.4|New Volume=40.0"), "missing_detail", 24, ("a 'Aspirated' item",)),
    ("empty_detail", with_line(17, "2026-03-14 09:32:14,Pump Status,,,,,"), "missing_detail", 17, ("'Pump Clock'",)),
    ("aspirated_sentinel", with_line(24, "2026-03-14 09:41:50,Refill,,40.0,,mL,Expected Residual=3.4|Aspirated=4294967.295|New Volume=40.0"), "out_of_range", 24, ("Aspirated", "0..4294967294 uL")),
    ("missing_reason", with_line(25, "2026-03-14 09:43:05,Change,Drug 1 Daily Dose,2.2,2.0,mg/day,"), "missing_reason", 25, ("reason (Detail) of the Change of 'Drug 1 Daily Dose'", "'Unspecified'")),
    ("bad_reason", with_line(25, "2026-03-14 09:43:05,Change,Drug 1 Daily Dose,2.2,2.0,mg/day,efficacy"), "bad_word", 25, ("'Efficacy'", "found 'efficacy'")),
    ("change_old_value", with_line(25, "2026-03-14 09:43:05,Change,Drug 1 Daily Dose,2.2,,mg/day,Efficacy"), "bad_number", 25, ("Previous Value of 'Drug 1 Daily Dose'",)),
    ("change_unit", with_line(25, "2026-03-14 09:43:05,Change,Drug 1 Daily Dose,2.2,2.0,mg,Efficacy"), "bad_unit", 25, ("one of 'mg/day', 'mcg/day'", "'mg'")),
    ("bad_alarm_name", with_line(23, "2026-03-14 09:32:15,Alarm,Low Battery,Logged,,,Severity=Non-critical|Occurred="), "bad_word", 23, ("alarm name", "'Code 0xNNNN'", "'Low Battery'")),
    ("bad_alarm_code", with_line(23, "2026-03-14 09:32:15,Alarm,Code 0x1,Logged,,,Severity=Non-critical|Occurred="), "bad_word", 23, ("'Code 0x1'",)),
    ("bad_alarm_state", with_line(23, "2026-03-14 09:32:15,Alarm,Low Reservoir,Open,,,Severity=Non-critical|Occurred="), "bad_word", 23, ("alarm state", "'Open'")),
    ("bad_severity", with_line(23, "2026-03-14 09:32:15,Alarm,Low Reservoir,Logged,,,Severity=High|Occurred="), "bad_word", 23, ("Severity", "'High'")),
    ("bad_occurred", with_line(23, "2026-03-14 09:32:15,Alarm,Low Reservoir,Logged,,,Severity=Critical|Occurred=yesterday"), "bad_timestamp", 23, ("alarm Occurred", "'yesterday'")),
    ("bad_row_time", with_line(23, "14.03.2026 09:32:15,Alarm,Low Reservoir,Logged,,,Severity=Critical|Occurred="), "bad_timestamp", 23, ("Time", "'YYYY-MM-DD HH:MM:SS'")),
    ("bad_firmware", with_line(17, '2026-03-14 09:32:14,Pump Status,,,,,"Pump Clock=2026-03-14 09:35:02|Firmware=2,3|Battery=OK"'), "bad_firmware", 17, ("'major.minor'", "'2,3'")),
    ("firmware_range", with_line(17, "2026-03-14 09:32:14,Pump Status,,,,,Pump Clock=2026-03-14 09:35:02|Firmware=256.0|Battery=OK"), "out_of_range", 17, ("0..255",)),
    ("bad_battery", with_line(17, "2026-03-14 09:32:14,Pump Status,,,,,Pump Clock=2026-03-14 09:35:02|Firmware=2.3|Battery=Low"), "bad_word", 17, ("one of 'OK', 'ERI', 'EOS'", "'Low'")),
    ("bad_kind", insert_line(25, "2026-03-14 09:42:00,Bolus,,0.25,,mL,Kind=Push|Duration=30"), "bad_word", 25, ("Bolus Kind", "'Push'")),
    ("bolus_duration_whole", insert_line(25, "2026-03-14 09:42:00,Bolus,,0.25,,mL,Kind=Bridge|Duration=1.5"), "not_whole", 25, ("Bolus Duration",)),
    ("bolus_duration_u16", insert_line(25, "2026-03-14 09:42:00,Bolus,,0.25,,mL,Kind=Bridge|Duration=65536"), "out_of_range", 25, ("0..65535 min",)),
    ("note_too_long", insert_line(25, "2026-03-14 09:42:00,Note,," + "n" * 2001 + ",,,"), "text_too_long", 25, ("Note text", "at most 2000 bytes", "2001 bytes")),
    ("end_count", with_line(31, ",End,,13,,,"), "end_count", 31, ("expected 14 (rows between the header row and End), found 13",)),
    ("end_count_not_a_number", with_line(31, ",End,,fourteen,,,"), "bad_number", 31, ("End row count",)),
    ("end_time", with_line(31, "soon,End,,14,,,"), "bad_timestamp", 31, ("Time of the End row",)),
    ("data_after_end", EXAMPLE.encode() + b"\r\n2026-03-14 09:50:00,Note,,late,,,\r\n", "data_after_end", 33, ("only blank lines", "'2026-03-14 09:50:00,Note,,late,,,'")),
    ("missing_end", without_line(31), "missing_end", 30, ("no End row",)),
    # The binary sequence rules apply (§5.8), at the line of the offending record.
    ("second_interrogated_run", build([*LINES[:23], "2026-03-14 09:40:00,Interrogated,Catheter Volume,0.2,,mL,", *LINES[23:30], ",End,,15,,,"]), "second_interrogated_snapshot", 24, ("record 5 (SNAPSHOT)", "a second SNAPSHOT with phase 0")),
    ("refill_before_interrogation", build([*LINES[:16], LINES[23], *LINES[16:23], *LINES[24:]]), "before_interrogated_snapshot", 17, ("REFILL before the phase-0",)),
    ("change_after_programmed", build([*LINES[:25], *LINES[26:30], LINES[25], LINES[30]]), "change_after_programmed_snapshot", 30, ("PARAM_CHANGE after the phase-1",)),
    ("second_programmed_run", build([*LINES[:28], "2026-03-14 09:43:40,Note,,split,,,", *LINES[28:30], ",End,,15,,,"]), "second_programmed_snapshot", 30, ("record 10 (SNAPSHOT)", "a second SNAPSHOT with phase 1")),
    ("no_interrogated", build([*LINES[:17], *LINES[22:23], *LINES[26:30], ",End,,6,,,"]), "missing_interrogated_snapshot", 23, ("no SNAPSHOT with phase 0",)),
]
# fmt: on


@pytest.mark.parametrize(
    ("data", "code", "line", "texts"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_error(data: bytes, code: str, line: int, texts: tuple[str, ...]) -> None:
    expect_error(data, code, line, *texts)


# --- numbers in the wrong shape for the file's locale (§1: decimal mark, no grouping) ---

RICH_BY_LOCALE = {"ISO": RICH_ISO, "en-US": RICH_EN_US, "de-DE": RICH_DE_DE}


def rich_changed(locale: str, line: int, old: str, new: str) -> bytes:
    """The rich file of `locale` with `old` replaced by `new` on physical line `line`."""
    lines = RICH_BY_LOCALE[locale].splitlines()
    if lines[line - 1].count(old) != 1:
        raise ValueError(f"{old!r} is not once on line {line}: {lines[line - 1]!r}")
    lines[line - 1] = lines[line - 1].replace(old, new)
    return build(lines)


# (locale, line, old cell text, new cell text, what the message names, found text).
# Every number cell of the table (Value, Previous Value, Detail items, the flex-step
# rate) in every locale, with the other locales' decimal mark and with grouping.
# fmt: off
WRONG_LOCALE_NUMBERS = [
    # ISO: '.' only, never ',' and no grouping.
    ("ISO", 23, ",0.2,", ',"0,2",', "Value of 'Infusion Rate'", "'0,2'"),
    ("ISO", 25, ",3.4,", ',"1,003.4",', "Value of 'Reservoir Volume'", "'1,003.4'"),
    ("ISO", 25, ",3.4,", ',"1.003,4",', "Value of 'Reservoir Volume'", "'1.003,4'"),
    ("ISO", 25, ",3.4,", ",1 003.4,", "Value of 'Reservoir Volume'", "'1 003.4'"),
    ("ISO", 29, ",2.0,", ',"2,0",', "Previous Value of 'Drug 1 Daily Dose'", "'2,0'"),
    ("ISO", 28, ",40.0,,", ',"40,0",,', "added volume (Value) of a Refill row", "'40,0'"),
    ("ISO", 28, "Expected Residual=3.4|Aspirated=3.1|New Volume=40.0", '"Expected Residual=3,4|Aspirated=3.1|New Volume=40.0"', "Expected Residual", "'3,4'"),
    ("ISO", 24, "06:30@0.48", '"06:30@0,48"', "Value of 'Flex Step 1' rate", "'0,48'"),
    ("ISO", 35, "0.25", '"0,25"', "volume (Value) of a Bolus row", "'0,25'"),
    # en-US: '.' as decimal mark; the US thousands separator ',' is refused.
    ("en-US", 23, ",0.2,", ',"0,2",', "Value of 'Infusion Rate'", "'0,2'"),
    ("en-US", 25, ",3.4,", ',"1,003.4",', "Value of 'Reservoir Volume'", "'1,003.4'"),
    ("en-US", 25, ",3.4,", ',"1,003",', "Value of 'Reservoir Volume'", "'1,003'"),
    ("en-US", 25, ",3.4,", ',"1.003,4",', "Value of 'Reservoir Volume'", "'1.003,4'"),
    ("en-US", 29, ",2.0,", ',"2,0",', "Previous Value of 'Drug 1 Daily Dose'", "'2,0'"),
    ("en-US", 28, ",40.0,,", ',"40,0",,', "added volume (Value) of a Refill row", "'40,0'"),
    ("en-US", 28, "Aspirated=3.1", "Aspirated=3.1.0", "Aspirated", "'3.1.0'"),
    ("en-US", 28, "Expected Residual=3.4|Aspirated=3.1|New Volume=40.0", '"Expected Residual=3.4|Aspirated=3.1|New Volume=4,000.0"', "New Volume", "'4,000.0'"),
    ("en-US", 24, "06:30@0.48", '"06:30@0,48"', "Value of 'Flex Step 1' rate", "'0,48'"),
    ("en-US", 35, "0.25", '"0,25"', "volume (Value) of a Bolus row", "'0,25'"),
    # de-DE: ',' as decimal mark; '.' (the other marks' decimal, or German grouping) is refused.
    ("de-DE", 23, ";0,2;", ";0.2;", "Value of 'Infusion Rate'", "'0.2'"),
    ("de-DE", 22, ";2,0;", ";2.0;", "Value of 'Drug 1 Daily Dose'", "'2.0'"),
    ("de-DE", 25, ";3,4;", ";1.003,4;", "Value of 'Reservoir Volume'", "'1.003,4'"),
    ("de-DE", 25, ";3,4;", ";1.003;", "Value of 'Reservoir Volume'", "'1.003'"),
    ("de-DE", 25, ";3,4;", ";1 003,4;", "Value of 'Reservoir Volume'", "'1 003,4'"),
    ("de-DE", 25, ";3,4;", ";1,003.4;", "Value of 'Reservoir Volume'", "'1,003.4'"),
    ("de-DE", 29, ";2,0;", ";2.0;", "Previous Value of 'Drug 1 Daily Dose'", "'2.0'"),
    ("de-DE", 28, ";40,0;", ";40.0;", "added volume (Value) of a Refill row", "'40.0'"),
    ("de-DE", 28, "Expected Residual=3,4", "Expected Residual=3.4", "Expected Residual", "'3.4'"),
    ("de-DE", 28, "Aspirated=3,1", "Aspirated=3.1", "Aspirated", "'3.1'"),
    ("de-DE", 28, "New Volume=40,0", "New Volume=40.000,0", "New Volume", "'40.000,0'"),
    ("de-DE", 24, "06:30@0,48", "06:30@0.48", "Value of 'Flex Step 1' rate", "'0.48'"),
    ("de-DE", 35, ";0,25;", ";0.25;", "volume (Value) of a Bolus row", "'0.25'"),
]
# fmt: on


@pytest.mark.parametrize(
    ("locale", "line", "old", "new", "what", "found"),
    WRONG_LOCALE_NUMBERS,
    ids=[f"{case[0]}-line{case[1]}-{case[3]}" for case in WRONG_LOCALE_NUMBERS],
)
def test_a_number_in_another_locales_shape_is_refused(
    locale: str, line: int, old: str, new: str, what: str, found: str
) -> None:
    mark = "," if locale == "de-DE" else "."
    expect_error(
        rich_changed(locale, line, old, new),
        "bad_number",
        line,
        f"line {line}: {what}: expected a number with decimal mark '{mark}' "
        "and no thousands separators",
        f"found {found}",
    )


@pytest.mark.parametrize("locale", sorted(RICH_BY_LOCALE))
def test_the_rich_file_of_every_locale_decodes_before_its_numbers_are_broken(locale: str) -> None:
    # The cases above change one cell of a file that decodes: the refusal is that cell's.
    assert rich_session(RICH_BY_LOCALE[locale]).session_id == "0d5e2a8c-3b9f-4a7e-9c61-2f4b8d1e7a90"


def test_every_documented_error_code_is_exercised() -> None:
    # The codes docs/formats.md gives the CSV: errors of format CSV or any (§9.1) and
    # the CSV warnings (§10).
    doc = (Path(__file__).resolve().parents[2] / "docs" / "formats.md").read_text("utf-8")
    errors, warnings = doc.split("### 9.1 Error codes")[1].split("## 10. Warnings")
    documented = set(re.findall(r"^\| `([a-z_]+)` \| (?:CSV|any) \|", errors, re.MULTILINE))
    documented |= set(re.findall(r"^\| `([a-z_]+)` \| CSV \|", warnings, re.MULTILINE))
    assert {"bad_encoding", "missing_end", "unknown_label", "duplicate_parameter"} <= documented
    elsewhere = {
        "unsupported_version",
        "file_too_large",
        "binary_too_large",
        "unknown_key",
        "unknown_record_word",
        "unknown_label",
        "unknown_detail_key",
    }
    tested = {case[2] for case in ERROR_CASES}
    assert documented - tested - elsewhere == set()


def test_unsupported_major_version() -> None:
    error = expect_error(
        with_line(1, "PSL Session Export,2.0"),
        "unsupported_version",
        1,
        "expected major version 1, found 2",
        kind=UnsupportedVersion,
    )
    assert isinstance(error, UnsupportedVersion)


def test_unsupported_version_is_reported_before_anything_else() -> None:
    data = b'PSL Session Export;2.0\r\nFormat;"v2\r\nblock\r\n'
    expect_error(data, "unsupported_version", 1, "found 2", kind=UnsupportedVersion)
    hinted = b"sep=,\nPSL Session Export,3.1,,\nno more keys\n"
    expect_error(hinted, "unsupported_version", 2, "export version 3.1", kind=UnsupportedVersion)


def test_invalid_utf16_names_its_line() -> None:
    text = EXAMPLE.encode("utf-16-le")
    # A lone low surrogate in the Operator ID on line 11.
    at = text.index("dr.lee".encode("utf-16-le"))
    data = b"\xff\xfe" + text[:at] + b"\x00\xdc" + text[at:]
    expect_error(data, "bad_encoding", 11, "UTF-16LE")


def test_file_larger_than_the_limit() -> None:
    data = EXAMPLE.encode() + b"\r\n" * (4 * 1024 * 1024)
    with pytest.raises(LimitExceeded) as info:
        decode(data)
    assert info.value.code == "file_too_large"
    assert "4 MiB" in str(info.value)


def test_records_that_would_not_fit_a_binary_log() -> None:
    # Empty notes: 11 bytes of CSV each but 14 bytes of binary record (§5.4).
    count = 310_000
    data = (
        "\r\n".join(LINES[:30]).encode()
        + b"\r\n"
        + b",Note,,,,,\n" * count
        + f",End,,{14 + count},,,\r\n".encode()
    )
    assert len(data) <= 4 * 1024 * 1024
    with pytest.raises(LimitExceeded) as info:
        decode(data)
    assert info.value.code == "binary_too_large"
    assert info.value.position == Position("line", 31 + count)


def test_error_str_names_file_line_and_expected_versus_found() -> None:
    with pytest.raises(DecodeError) as info:
        psl_csv.decode(
            with_line(19, "2026-03-14 09:32:15,Interrogated,Drug 1 Concentration,10,,g/L,"),
            source="exports/visit.csv",
        )
    assert str(info.value) == (
        "exports/visit.csv: line 19: Unit of 'Drug 1 Concentration': "
        "expected one of 'mg/mL', 'mcg/mL', found 'g/L'"
    )
    assert info.value.as_dict()["position"] == {"kind": "line", "value": 19}


@pytest.mark.parametrize("seed", range(8))
def test_the_binary_size_of_a_csv_file_is_that_of_its_binary_export(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # §5.4: the 4 MiB check counts the bytes the same records take as a binary log,
    # with the record sizes of the binary layouts (docs/formats.md §2-§3).
    scenario = realistic_scenario(random.Random(seed))
    seen: list[list[object]] = []
    real_assemble = psl_csv.assemble

    def capture(header: object, records: list[object], **kwargs: object) -> Session:
        seen.append(list(records))
        return real_assemble(header, records, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(psl_csv, "assemble", capture)
    psl_csv.decode(encode_csv(scenario), source="t.csv")
    (records,) = seen
    assert psl_csv.binary_log_size(records) == len(encode_binary(scenario))  # type: ignore[arg-type]
