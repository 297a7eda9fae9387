"""Payers, coverage and providers on SQLite and PostgreSQL (`db.payers`, migration 0006)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
from sqlalchemy import Engine, func, select

from db.engine import write_transaction
from db.migrate import open_database
from db.payers import (
    CoverageLine,
    add_payer,
    add_provider,
    assign_coverage,
    coverage,
    end_coverage,
    find_payer,
    import_coverage,
    list_payers,
    list_providers,
    payer_on,
    payers_on,
)
from evidence.payers import CoverageError, Payer

PROFILES = ["rate-dose", "rate-dose-alarms", "any-setting"]


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_database(db_url)
    try:
        with write_transaction(engine) as connection:
            add_payer(connection, "Acme Health", "any-setting", PROFILES, payer_id="ACM01")
            add_payer(connection, "Medicare", "rate-dose", PROFILES)
        yield engine
    finally:
        engine.dispose()


def test_payers_are_unique_in_any_case_and_need_a_known_profile(engine: Engine) -> None:
    with engine.connect() as connection:
        assert [(p.name, p.payer_id, p.profile) for p in list_payers(connection)] == [
            ("Acme Health", "ACM01", "any-setting"),
            ("Medicare", None, "rate-dose"),
        ]
        assert find_payer(connection, "  acme HEALTH ") is not None
    with pytest.raises(CoverageError, match="exists already"), write_transaction(engine) as c:
        add_payer(c, "MEDICARE", "rate-dose", PROFILES)
    with (
        pytest.raises(CoverageError, match="unknown profile 'nope'"),
        write_transaction(engine) as c,
    ):
        add_payer(c, "Other", "nope", PROFILES)


def test_coverage_by_date_with_gaps(engine: Engine) -> None:
    with write_transaction(engine) as connection:
        assign_coverage(connection, "P-1", "Medicare", date(2026, 1, 1), date(2026, 3, 31))
        assign_coverage(connection, "P-1", "acme health", date(2026, 5, 1))
    with engine.connect() as connection:
        assert payer_on(connection, "P-1", date(2025, 12, 31)) is None
        assert payer_on(connection, "P-1", date(2026, 1, 1)) == Payer("Medicare", "rate-dose")
        assert payer_on(connection, "P-1", date(2026, 3, 31)) == Payer("Medicare", "rate-dose")
        assert payer_on(connection, "P-1", date(2026, 4, 15)) is None  # the gap
        assert payer_on(connection, "P-1", date(2030, 1, 1)) == Payer(
            "Acme Health", "any-setting", "ACM01"
        )
        assert payer_on(connection, "P-2", date(2026, 2, 1)) is None
        assert payer_on(connection, None, date(2026, 2, 1)) is None
        found = payers_on(connection, [("P-1", date(2026, 2, 1)), ("P-1", date(2026, 4, 2))])
        assert found == {("P-1", date(2026, 2, 1)): Payer("Medicare", "rate-dose")}


def test_overlapping_coverage_is_refused(engine: Engine) -> None:
    with write_transaction(engine) as connection:
        first = assign_coverage(connection, "P-1", "Medicare", date(2026, 1, 1))
    for starts, ends in ((date(2026, 6, 1), None), (date(2025, 1, 1), date(2026, 1, 1))):
        with pytest.raises(CoverageError, match="overlaps"), write_transaction(engine) as c:
            assign_coverage(c, "P-1", "Acme Health", starts, ends)
    # Ending the open period makes room for the next payer.
    with write_transaction(engine) as connection:
        ended = end_coverage(connection, first.pk, date(2026, 5, 31))
        assert ended.ends_on == date(2026, 5, 31)
        assign_coverage(connection, "P-1", "Acme Health", date(2026, 6, 1))
    with engine.connect() as connection:
        assert payer_on(connection, "P-1", date(2026, 6, 1)) == Payer(
            "Acme Health", "any-setting", "ACM01"
        )


def test_a_reversed_range_and_an_unknown_payer_are_refused(engine: Engine) -> None:
    with pytest.raises(CoverageError, match="before it starts"), write_transaction(engine) as c:
        assign_coverage(c, "P-1", "Medicare", date(2026, 2, 1), date(2026, 1, 31))
    with (
        pytest.raises(CoverageError, match="no payer named 'Nobody'"),
        write_transaction(engine) as c,
    ):
        assign_coverage(c, "P-1", "Nobody", date(2026, 2, 1))


def test_an_import_with_a_bad_line_stores_nothing(engine: Engine) -> None:
    lines = [
        CoverageLine(2, "P-1", "Medicare", date(2026, 1, 1), date(2026, 6, 30)),
        CoverageLine(3, "P-2", "Acme Health", date(2026, 1, 1), None),
        CoverageLine(4, "P-1", "Acme Health", date(2026, 6, 1), None),  # overlaps line 2
    ]
    with pytest.raises(CoverageError, match=r"^line 4: overlaps"), write_transaction(engine) as c:
        import_coverage(c, lines)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(coverage)).scalar_one() == 0
    with write_transaction(engine) as connection:
        assert len(import_coverage(connection, lines[:2])) == 2


def test_providers_need_a_valid_npi(engine: Engine) -> None:
    with write_transaction(engine) as connection:
        add_provider(connection, "OP7", npi="1234567893", name="Dr. Lee", role="physician")
    for npi in ("1234567890", "12345", "abcdefghij"):
        with pytest.raises(CoverageError, match="not a valid NPI"), write_transaction(engine) as c:
            add_provider(c, "OP8", npi=npi, name="N. Nurse", role="nurse")
    with pytest.raises(CoverageError, match="unknown role"), write_transaction(engine) as c:
        add_provider(c, "OP8", npi="1234567893", name="N. Nurse", role="surgeon")
    with pytest.raises(CoverageError, match="mapped already"), write_transaction(engine) as c:
        add_provider(c, "OP7", npi="1234567893", name="Dr. Lee", role="physician")
    with engine.connect() as connection:
        assert [(p.operator_id, p.npi, p.role) for p in list_providers(connection)] == [
            ("OP7", "1234567893", "physician")
        ]
