"""DFT^P03 messages (evidence.dft), read back by a second, independent HL7 parser.

The messages are built with python-hl7; hl7apy parses them here in strict mode
against the v2.5.1 DFT_P03 structure and validates them, and each field position of
docs/interfaces.md ("Message layout") is asserted on hl7apy's reading.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from evidence.charges import ChargeLine
from evidence.dft import (
    CREDIT,
    DftSettingsError,
    Hl7Settings,
    Patient,
    dft_p03,
    parse_charge_codes,
)

NPI = "1234567893"
DX = ("G89.4", "T85.615A", "R52")
SIGNED = datetime(2026, 3, 4, 15, 30, 5)
CREATED = datetime(2026, 3, 4, 15, 30, 6)


def line(n: int, code: str, units: int, modifiers: tuple[str, ...] = (), **kw: Any) -> ChargeLine:
    fields: dict[str, Any] = {
        "session_id": "PT-0001",
        "patient_id": "MRN77",
        "date_of_service": date(2026, 3, 4),
        "line": n,
        "code": code,
        "units": units,
        "modifiers": modifiers,
        "diagnosis_pointers": (1, 2),
        "diagnoses": DX,
        "rendering_npi": NPI,
        "ndc": None,
    }
    fields.update(kw)
    return ChargeLine(**fields)


LINES = (
    line(1, "62370", 1, ("25",)),
    line(2, "J2274", 30, ("JZ",), ndc="00409123401", diagnosis_pointers=(3,)),
    line(3, "J2274", 4, ("JW",), ndc="00409123401"),
)
SETTINGS = Hl7Settings(
    sending_facility="CLINIC1",
    receiving_application="BILLING",
    receiving_facility="BILLFAC",
    processing_id="T",
    charge_codes={"62370": "CM62370"},
)
PATIENT = Patient("MRN77", "Doe, Jane", date(1960, 1, 2))


def strict(text: str) -> Any:
    message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert message.validate() is True
    return message


def build(**kw: Any) -> Any:
    args: dict[str, Any] = {"signed_at": SIGNED, "created_at": CREATED}
    args.update(kw)
    return dft_p03(LINES, PATIENT, SETTINGS, **args)


def test_every_field_position_as_a_strict_second_parser_reads_it() -> None:
    built = build()
    assert built.text.endswith("\r") and "\n" not in built.text
    message = strict(built.text)
    msh = message.msh
    assert msh.msh_3.to_er7() == "PUMPTRAIL"
    assert msh.msh_4.to_er7() == "CLINIC1"
    assert msh.msh_5.to_er7() == "BILLING"
    assert msh.msh_6.to_er7() == "BILLFAC"
    assert msh.msh_7.to_er7() == "20260304153006+0000"
    assert msh.msh_9.to_er7() == "DFT^P03^DFT_P03"
    assert msh.msh_10.to_er7() == built.control_id
    assert msh.msh_11.to_er7() == "T"
    assert msh.msh_12.to_er7() == "2.5.1"
    assert message.evn.evn_1.to_er7() == "P03"
    assert message.evn.evn_2.to_er7() == "20260304153005+0000"
    pid = message.pid
    assert pid.pid_3.to_er7() == "MRN77^^^^MR"
    assert pid.pid_5.to_er7() == "Doe^Jane"
    assert pid.pid_7.to_er7() == "19600102"
    assert message.pv1.pv1_2.to_er7() == "O"
    assert message.pv1.pv1_19.to_er7() == "PT-0001"
    ft1s = [group.ft1 for group in message.dft_p03_financial]
    assert len(ft1s) == 3
    assert [f.ft1_1.to_er7() for f in ft1s] == ["1", "2", "3"]
    for ft1 in ft1s:
        assert ft1.ft1_4.to_er7() == "20260304"
        assert ft1.ft1_6.to_er7() == "CG"
        assert ft1.ft1_20.to_er7() == f"{NPI}^^^^^^^^^^^^NPI"
    first, drug, waste = ft1s
    # The chargemaster mapping gives FT1-7; FT1-25 keeps the CPT code.
    assert first.ft1_7.to_er7() == "CM62370^^CDM"
    assert first.ft1_25.to_er7() == "62370^^C4"
    assert [m.to_er7() for m in first.ft1_26] == ["25^^C4"]
    assert first.ft1_10.to_er7() == "1"
    assert [d.to_er7() for d in first.ft1_19] == ["G89.4^^I10", "T85.615A^^I10"]
    assert not first.ft1_29.to_er7()
    # An unmapped code is its own charge code.
    assert drug.ft1_7.to_er7() == "J2274^^HCPCS"
    assert drug.ft1_25.to_er7() == "J2274^^HCPCS"
    assert drug.ft1_10.to_er7() == "30"
    assert [d.to_er7() for d in drug.ft1_19] == ["R52^^I10"]
    assert [m.to_er7() for m in drug.ft1_26] == ["JZ^^HCPCS"]
    assert drug.ft1_29.to_er7() == "00409123401^^N4"
    assert waste.ft1_10.to_er7() == "4"
    assert [m.to_er7() for m in waste.ft1_26] == ["JW^^HCPCS"]


def test_a_reversal_credits_the_same_lines() -> None:
    message = strict(build(transaction_type=CREDIT).text)
    ft1s = [group.ft1 for group in message.dft_p03_financial]
    assert [f.ft1_6.to_er7() for f in ft1s] == ["CD", "CD", "CD"]
    assert [f.ft1_10.to_er7() for f in ft1s] == ["1", "30", "4"]


def test_control_ids_are_unique_and_a_given_one_is_kept() -> None:
    ids = {build().control_id for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 20 for i in ids)
    assert strict(build(control_id="ABC123").text).msh.msh_10.to_er7() == "ABC123"


def test_separators_in_stored_text_are_escaped_not_structure() -> None:
    patient = Patient("A|B^C~D&E\\F", "O'Brien^X, Ann|Marie", None)
    built = dft_p03(LINES, patient, SETTINGS, signed_at=SIGNED, created_at=CREATED)
    message = strict(built.text)
    assert len(built.text.split("\r")) == 8
    assert message.pid.pid_3.cx_1.to_er7() == "A\\F\\B\\S\\C\\R\\D\\T\\E\\E\\F"
    assert message.pid.pid_5.xpn_1.to_er7() == "O'Brien\\S\\X"
    assert message.pid.pid_5.xpn_2.to_er7() == "Ann\\F\\Marie"
    assert not message.pid.pid_7.to_er7()


def test_a_missing_name_is_the_unspecified_name_type() -> None:
    built = dft_p03(LINES, Patient("P1"), SETTINGS, signed_at=SIGNED, created_at=CREATED)
    assert strict(built.text).pid.pid_5.to_er7() == "^^^^^^U"


def test_charge_code_mapping_and_processing_id_settings() -> None:
    assert parse_charge_codes("") == {}
    assert parse_charge_codes(" 62370=CM1, j2274 = cm2 ,") == {"62370": "CM1", "J2274": "CM2"}
    with pytest.raises(DftSettingsError, match="CODE=CHARGE"):
        parse_charge_codes("62370")
    with pytest.raises(DftSettingsError, match="P, T or D"):
        Hl7Settings(processing_id="X")
    with pytest.raises(ValueError, match="at least one"):
        dft_p03((), PATIENT, SETTINGS, signed_at=SIGNED, created_at=CREATED)
