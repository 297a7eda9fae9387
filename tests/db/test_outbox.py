"""The billing outbox on SQLite and PostgreSQL (db.outbox, docs/interfaces.md "Outbox").

A message is written in the sign-off's transaction; a revision after the charges went
out queues the reversal and then the new charges; charges billing never saw or
refused are superseded instead; a rejected message is resent with its control ID.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hl7
import pytest
from sqlalchemy import Engine

from db import outbox
from db.decisions import DecisionVersion, sign_off
from db.engine import write_transaction
from evidence.dft import Hl7Settings
from tests.ingest.exports import binary, history, importer

SETTINGS = Hl7Settings(sending_facility="CLINIC1", charge_codes={"62370": "CM62370"})


def decision(procedure: str = "62370", units: int = 30) -> dict[str, Any]:
    return {
        "procedure": procedure,
        "modifiers": [],
        "diagnoses": ["G89.4"],
        "rendering_npi": "1234567893",
        "drugs": [{"hcpcs": "J2274", "units": units, "modifiers": ["JZ"], "ndc": None}],
        "date_of_service": "2026-03-04",
    }


@pytest.fixture
def stored(db_url: str, tmp_path: Path) -> Iterator[tuple[Engine, list[str]]]:
    from db.migrate import open_database

    ids = []
    with importer(db_url, tmp_path / "raw") as imp:
        for index, scenario in enumerate(history(43, visits=2)):
            result = imp.import_bytes(binary(scenario), name=f"v{index}.psl")
            assert result.session_id is not None
            ids.append(result.session_id)
    engine = open_database(db_url)
    try:
        yield engine, ids
    finally:
        engine.dispose()


def signed(engine: Engine, session_id: str, body: dict[str, Any]) -> DecisionVersion:
    with write_transaction(engine) as connection:
        version = sign_off(connection, session_id, body, author="cora")
        outbox.enqueue_for(connection, version, SETTINGS)
    return version


def messages(engine: Engine) -> list[outbox.OutboxMessage]:
    with engine.connect() as connection:
        return outbox.list_messages(connection)


def ft1_types(message: outbox.OutboxMessage) -> list[str]:
    return [str(s[6]) for s in hl7.parse(message.message).segments("FT1")]


def send(engine: Engine, message: outbox.OutboxMessage, answer: str | None) -> None:
    with write_transaction(engine) as connection:
        assert outbox.claim(connection, message.id)
    if answer is not None:
        with write_transaction(engine) as connection:
            outbox.record_answer(connection, message.id, answer, f"answer {answer}")


def test_a_sign_off_writes_its_message_in_the_same_transaction(
    stored: tuple[Engine, list[str]],
) -> None:
    engine, ids = stored
    with pytest.raises(RuntimeError), write_transaction(engine) as connection:
        version = sign_off(connection, ids[0], decision(), author="cora")
        outbox.enqueue_for(connection, version, SETTINGS)
        raise RuntimeError("the audit entry failed")
    assert messages(engine) == []
    signed(engine, ids[0], decision())
    (message,) = messages(engine)
    assert (message.session_id, message.version, message.kind) == (ids[0], 1, outbox.CHARGES)
    assert message.shown_status == "ready" and message.attempts == 0
    parsed = hl7.parse(message.message)
    assert str(parsed["MSH.10"]) == message.control_id
    assert str(parsed["PV1.19"]) == ids[0]
    assert ft1_types(message) == ["CG", "CG"]
    assert str(parsed.segments("FT1")[0][7][0][0]) == "CM62370"


def test_a_revision_after_sending_reverses_then_charges(stored: tuple[Engine, list[str]]) -> None:
    engine, ids = stored
    signed(engine, ids[0], decision(units=30))
    (first,) = messages(engine)
    send(engine, first, "AA")
    signed(engine, ids[0], decision(units=20))
    first_after, reversal, charges = messages(engine)
    assert first_after.status == outbox.ACKNOWLEDGED
    assert (reversal.kind, reversal.version) == (outbox.REVERSAL, 1)
    assert (charges.kind, charges.version) == (outbox.CHARGES, 2)
    assert ft1_types(reversal) == ["CD", "CD"] and ft1_types(charges) == ["CG", "CG"]
    # The reversal credits the units that were charged.
    assert str(hl7.parse(reversal.message).segments("FT1")[1][10]) == "30"
    assert str(hl7.parse(charges.message).segments("FT1")[1][10]) == "20"
    assert len({m.control_id for m in (first, reversal, charges)}) == 3
    # Sent without an answer (billing may have booked it): reversed as well.
    signed(engine, ids[1], decision())
    in_flight = messages(engine)[-1]
    send(engine, in_flight, None)
    assert messages(engine)[-1].shown_status == "sent"
    signed(engine, ids[1], decision(procedure="95990"))
    kinds = [(m.session_id, m.kind, m.version) for m in messages(engine)[-3:]]
    assert kinds == [
        (ids[1], outbox.CHARGES, 1),
        (ids[1], outbox.REVERSAL, 1),
        (ids[1], outbox.CHARGES, 2),
    ]


def test_charges_billing_never_saw_or_refused_are_superseded(
    stored: tuple[Engine, list[str]],
) -> None:
    engine, ids = stored
    signed(engine, ids[0], decision())
    signed(engine, ids[0], decision(units=10))
    unsent, newer = messages(engine)
    assert unsent.status == outbox.SUPERSEDED and newer.status == outbox.PENDING
    with write_transaction(engine) as connection:
        assert not outbox.claim(connection, unsent.id)
    send(engine, newer, "AR")
    signed(engine, ids[0], decision(units=5))
    statuses = [(m.version, m.kind, m.status) for m in messages(engine)]
    assert statuses == [
        (1, outbox.CHARGES, outbox.SUPERSEDED),
        (2, outbox.CHARGES, outbox.SUPERSEDED),
        (3, outbox.CHARGES, outbox.PENDING),
    ]


def test_resend_puts_only_a_rejected_message_back_with_its_control_id(
    stored: tuple[Engine, list[str]],
) -> None:
    engine, ids = stored
    signed(engine, ids[0], decision())
    (message,) = messages(engine)
    with (
        pytest.raises(outbox.OutboxError, match="only a rejected one"),
        write_transaction(engine) as connection,
    ):
        outbox.resend(connection, message.id)
    send(engine, message, "AE")
    (rejected,) = messages(engine)
    assert (rejected.status, rejected.ack_code, rejected.ack_text) == (
        outbox.REJECTED,
        "AE",
        "answer AE",
    )
    with engine.connect() as connection:
        assert outbox.next_pending(connection) is None
    with write_transaction(engine) as connection:
        outbox.resend(connection, message.id)
    with engine.connect() as connection:
        again = outbox.next_pending(connection)
        assert outbox.charges_status(connection, [(ids[0], 1)])[(ids[0], 1)].id == message.id
    assert again is not None and again.control_id == message.control_id
    send(engine, again, "AA")
    # An acknowledged message is never sent again.
    with write_transaction(engine) as connection:
        assert not outbox.claim(connection, message.id)
        with pytest.raises(outbox.OutboxError, match="no outbox message"):
            outbox.resend(connection, 999)
