"""A decoded session, stored as a document and rows, rebuilt without re-decoding."""

from __future__ import annotations

import random
from datetime import date

import pytest

from db.codec import (
    NO_POSITION,
    StoredDocumentError,
    StoredEvent,
    event_rows,
    session_columns,
    session_from_document,
    setting_rows,
    value_from_json,
)
from fixtures.binary_writer import encode_binary
from fixtures.csv_writer import encode_csv
from fixtures.scenarios import realistic_scenario
from parsers.model import AlarmEvent, Position, Session
from parsers.params import FlexStep
from parsers.registry import decode_bytes
from parsers.session_json import session_document


def decoded(seed: int, fmt: str) -> Session:
    scenario = realistic_scenario(random.Random(seed))
    data = encode_binary(scenario) if fmt == "binary" else encode_csv(scenario)
    return decode_bytes(data, source=f"s{seed}.{fmt}")


def stored_events(session: Session) -> list[StoredEvent]:
    document = session_document(session)
    return [
        StoredEvent(
            Position(row["position_kind"], row["position_value"]),
            row["pump_clock_local"],
        )
        for row in event_rows(1, session, document)
    ]


@pytest.mark.parametrize("fmt", ["binary", "csv"])
@pytest.mark.parametrize("seed", range(12))
def test_rows_rebuild_the_decoded_session_exactly(seed: int, fmt: str) -> None:
    session = decoded(seed, fmt)
    document = session_document(session)
    rebuilt = session_from_document(
        document,
        source=session.source,
        stored_events=stored_events(session),
        pump_clock_local=None
        if session.pump_status is None
        else session.pump_status.pump_clock_local,
    )
    assert rebuilt == session


@pytest.mark.parametrize("seed", range(12))
def test_document_alone_rebuilds_the_same_document(seed: int) -> None:
    session = decoded(seed, "binary")
    document = session_document(session)
    rebuilt = session_from_document(document)
    assert session_document(rebuilt) == document
    assert all(event.position == NO_POSITION for event in rebuilt.events)
    # Alarm pump-clock times come back from the clock offset (docs/formats.md §5).
    for original, again in zip(session.events, rebuilt.events, strict=True):
        if isinstance(original, AlarmEvent) and original.occurred_local is not None:
            assert isinstance(again, AlarmEvent)
            assert again.occurred_pump_clock == original.occurred_pump_clock


def test_values_get_their_types_back() -> None:
    assert value_from_json("refill_date", "2026-03-14") == date(2026, 3, 14)
    assert value_from_json("refill_date", None) is None
    assert value_from_json("flex_step_0", {"start_minute": 360, "rate_ul_per_day": 480}) == (
        FlexStep(360, 480)
    )
    assert value_from_json("infusion_mode", "flex") == "flex"
    assert value_from_json("ptm_enabled", False) is False
    assert value_from_json("drug1_daily_dose", 2200) == 2200


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("refill_date", "14/03/2026", "refill_date: expected YYYY-MM-DD"),
        ("flex_step_1", [360, 480], "flex_step_1: expected a flex step object"),
        ("ptm_enabled", 1, "ptm_enabled: expected true or false"),
        ("drug1_daily_dose", True, "drug1_daily_dose: expected an integer"),
        ("drug1_name", 5, "drug1_name: expected text"),
    ],
)
def test_malformed_values_are_reported(name: str, value: object, message: str) -> None:
    with pytest.raises(StoredDocumentError, match=message):
        value_from_json(name, value)


def test_malformed_document_is_reported() -> None:
    document = session_document(decoded(1, "binary"))
    del document["pump"]
    with pytest.raises(StoredDocumentError, match="missing or malformed field"):
        session_from_document(document)
    document = session_document(decoded(1, "binary"))
    document["session_start_utc"] = "2026-03-14 14:32:10"
    with pytest.raises(StoredDocumentError, match="expected an ISO 8601 UTC instant"):
        session_from_document(document)


def test_rows_follow_the_document() -> None:
    session = decoded(2, "binary")
    document = session_document(session)
    columns = session_columns(session, document)
    assert columns["session_start_utc"] == session.session_start_utc
    assert columns["patient_id"] == (session.patient.id if session.patient else None)
    settings = setting_rows(7, session, document)
    interrogated = [r for r in settings if r["phase"] == 0]
    assert [r["param"] for r in interrogated] == list(document["interrogated"])
    assert len(settings) == len(document["interrogated"]) + len(document["programmed"] or {})
    rows = event_rows(7, session, document)
    assert [r["seq"] for r in rows] == list(range(len(session.events)))
    assert [r["type"] for r in rows] == [e["type"] for e in document["events"]]
