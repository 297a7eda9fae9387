"""Hypothesis: whatever bytes reach the CSV decoder, only the project's errors come out.

Random bytes, truncations, byte flips, inserted CSV-significant characters and
cell-level edits of good exports (every locale, delimiter and encoding) must either
decode or raise a `parsers.errors.DecodeError` subclass: never UnicodeDecodeError,
ValueError, IndexError, csv.Error, decimal exceptions or anything else
(docs/formats.md §9).
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.csv_writer import csv_rows, encode_csv, render_csv
from fixtures.scenarios import realistic_scenario
from parsers import psl_csv
from parsers.errors import DecodeError
from parsers.model import Session

_SCENARIO = realistic_scenario(random.Random(2026))
GOOD_FILES = [
    encode_csv(_SCENARIO),
    encode_csv(_SCENARIO, locale="en-US", line_ending="\n", trailing_sub=3),
    encode_csv(_SCENARIO, locale="de-DE", delimiter=";", sep_hint=True, encoding="utf-8-sig"),
    encode_csv(_SCENARIO, locale="de-DE", delimiter=",", encoding="utf-16-le-bom", trailing_sub=9),
    encode_csv(_SCENARIO, quote_all=True, pad_fields=True),
]
INTERESTING = [
    b",",
    b";",
    b'"',
    b"\r",
    b"\n",
    b"\r\n",
    b"|",
    b"=",
    b"\x1a",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"-",
    b".",
    b" ",
]
CELL_VALUES = [
    "",
    "0",
    "-1",
    "1.5",
    "1,5",
    "4294967.296",
    "9" * 40,
    "Code 0xFFFF",
    "On",
    "12:00@0.5",
    "99:99@x",
    "2026-02-30 10:00:00",
    "13/45/2026 13:00:00 PM",
    "Kind=Bridge|Duration=",
    "Pump Clock=|Firmware=999.1|Battery=OK",
    "=|=",
    "Interrogated",
    "Programmed",
    "End",
    "\u00e9" * 70,
    '"',
    "x\ny",
]

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_or_decode_error(data: bytes) -> Session | None:
    """Decode; a DecodeError is fine, any other exception fails the test."""
    try:
        return psl_csv.decode(data, source="fuzz.csv")
    except DecodeError as error:
        # Every error names a line (or the file) and has a stable code.
        assert error.code
        assert str(error).startswith("fuzz.csv: ")
        return None


def test_good_files_decode() -> None:
    for data in GOOD_FILES:
        assert decode_or_decode_error(data) is not None


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes(data: bytes) -> None:
    decode_or_decode_error(data)


@FUZZ
@given(
    st.sampled_from([b"PSL Session Export,1.0\r\n", b"sep=;\n", b"\xef\xbb\xbf", b"\xff\xfe"]),
    st.binary(max_size=2000),
)
def test_random_bytes_after_a_csv_sign(prefix: bytes, rest: bytes) -> None:
    decode_or_decode_error(prefix + rest)


@FUZZ
@given(st.sampled_from(GOOD_FILES), st.data())
def test_truncations(data: bytes, draw: st.DataObject) -> None:
    cut = draw.draw(st.integers(min_value=0, max_value=len(data)))
    decode_or_decode_error(data[:cut])


@FUZZ
@given(
    st.sampled_from(GOOD_FILES),
    st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
        min_size=1,
        max_size=8,
    ),
)
def test_byte_flips(data: bytes, flips: list[tuple[int, int]]) -> None:
    mutable = bytearray(data)
    for where, value in flips:
        mutable[where % len(mutable)] = value
    decode_or_decode_error(bytes(mutable))


@FUZZ
@given(
    st.sampled_from(GOOD_FILES),
    st.lists(
        st.tuples(st.integers(min_value=0), st.sampled_from(INTERESTING)), min_size=1, max_size=4
    ),
)
def test_inserted_csv_characters(data: bytes, inserts: list[tuple[int, bytes]]) -> None:
    for where, chunk in inserts:
        at = where % (len(data) + 1)
        data = data[:at] + chunk + data[at:]
    decode_or_decode_error(data)


_ROWS = csv_rows(_SCENARIO, locale="ISO")


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0),
            st.integers(min_value=0, max_value=6),
            st.sampled_from(CELL_VALUES),
        ),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from(["ISO", "en-US", "de-DE"]),
)
def test_cell_edits(edits: list[tuple[int, int, str]], locale: str) -> None:
    rows = [list(row) for row in csv_rows(_SCENARIO, locale=locale)]  # type: ignore[arg-type]
    for row_number, column, value in edits:
        row = rows[row_number % len(rows)]
        if row:
            row[column % len(row)] = value
    decode_or_decode_error(render_csv(rows))


@FUZZ
@given(st.integers(min_value=0), st.integers(min_value=0))
def test_rows_dropped_or_duplicated(drop: int, duplicate: int) -> None:
    rows = [list(row) for row in _ROWS]
    rows.insert(duplicate % len(rows), list(rows[duplicate % len(rows)]))
    del rows[drop % len(rows)]
    decode_or_decode_error(render_csv(rows))
