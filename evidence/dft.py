"""HL7 v2.5.1 DFT^P03 messages: a signed-off decision's charge lines for the billing system.

docs/interfaces.md ("Message layout") describes every field. One message carries one
visit's charge lines (`evidence.charges`, docs/coding-rules.md §9.6):

- MSH: sending application `PUMPTRAIL`, the sending and receiving facility and
  receiving application of the settings, the message time, `DFT^P03^DFT_P03`, a
  control ID unique to the message (MSH-10), the processing ID (MSH-11), `2.5.1`;
- EVN: event type `P03` and the time the decision was signed off;
- PID: patient ID in PID-3 (identifier type `MR`), name (PID-5), birth date (PID-7);
- PV1: patient class `O` (outpatient), the session ID as visit number (PV1-19);
- one FT1 per charge line: FT1-1 set ID, FT1-4 date of service, FT1-6 `CG` (a
  charge) or `CD` (a credit reversing a charge sent before), FT1-7 the clinic's
  chargemaster code (the CPT/HCPCS code when the mapping has none), FT1-10 units,
  FT1-19 diagnoses (ICD-10-CM, `I10`), FT1-20 the rendering provider's NPI, FT1-25
  the CPT (`C4`) or HCPCS (`HCPCS`) code, FT1-26 modifiers (`C4` or `HCPCS`), FT1-29 the NDC (`N4`).

The message is built with python-hl7's containers; every value taken from a
session or a setting goes through its escaping, so a `|`, `^`, `~`, `&` or `\\` in
a patient's name cannot break the message's structure.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final

import hl7

from evidence.charges import ChargeLine
from evidence.decision import HCPCS_PATTERN
from parsers.errors import PumptrailError

SENDING_APPLICATION: Final = "PUMPTRAIL"
HL7_VERSION: Final = "2.5.1"
MESSAGE_TYPE: Final = ("DFT", "P03", "DFT_P03")
CHARGE: Final = "CG"
CREDIT: Final = "CD"
PROCESSING_IDS: Final = ("P", "T", "D")
# MSH-10 is at most 20 characters in v2.5.1 (ST).
CONTROL_ID_LEN: Final = 20
# Segments end with a carriage return (HL7 v2.5.1 chapter 2, "Message construction rules").
SEGMENT_END: Final = "\r"
# Coding systems (HL7 table 0396).
CPT: Final = "C4"
HCPCS: Final = "HCPCS"
ICD10CM: Final = "I10"
NDC_SYSTEM: Final = "N4"
CHARGEMASTER: Final = "CDM"

# python-hl7 parses a header only with a field after the encoding characters.
_SKELETON: Final = "MSH|^~\\&|" + SENDING_APPLICATION + SEGMENT_END
_CHARGE_CODE_ITEM: Final = re.compile(r"\s*([A-Z0-9]{5})\s*=\s*([^,=\s]+)\s*")


class DftSettingsError(PumptrailError, ValueError):
    """Raised by `parse_charge_codes` when the charge-code mapping setting is not a
    comma-separated list of `CODE=CHARGE` items, and by `Hl7Settings` when the
    processing ID is not P, T or D."""


def parse_charge_codes(text: str) -> dict[str, str]:
    """The chargemaster mapping of the `hl7_charge_codes` setting: `96522=CM1001,
    J2274=CM2274` (CPT/HCPCS code = the clinic's charge code); empty: no mapping."""
    mapping: dict[str, str] = {}
    for item in (part for part in text.split(",") if part.strip()):
        match = _CHARGE_CODE_ITEM.fullmatch(item.upper())
        if match is None:
            raise DftSettingsError(
                f"hl7_charge_codes: expected CODE=CHARGE (e.g. 96522=CM1001), found {item.strip()!r}"
            )
        mapping[match.group(1)] = match.group(2)
    return mapping


@dataclass(frozen=True)
class Hl7Settings:
    """The settings a message is built with (docs/interfaces.md, "Settings")."""

    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    processing_id: str = "P"
    # CPT/HCPCS code -> the clinic's chargemaster code for FT1-7.
    charge_codes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.processing_id not in PROCESSING_IDS:
            raise DftSettingsError(
                f"hl7_processing_id: expected P, T or D, found {self.processing_id!r}"
            )


@dataclass(frozen=True, slots=True)
class Patient:
    """The patient of a visit as the session stored it."""

    patient_id: str
    name: str | None = None
    birth_date: date | None = None


@dataclass(frozen=True, slots=True)
class DftMessage:
    """A built message: its control ID (MSH-10) and its text (segments end with CR)."""

    control_id: str
    text: str


def new_control_id() -> str:
    """A message control ID: 20 random upper-case hex digits (80 bits)."""
    return secrets.token_hex(CONTROL_ID_LEN // 2).upper()


def hl7_timestamp(moment: datetime) -> str:
    """A DTM of a naive UTC instant (how the database stores them), with its offset."""
    return moment.strftime("%Y%m%d%H%M%S") + "+0000"


def _name_parts(name: str | None) -> tuple[str, str]:
    """Family and given name of a stored name: `Family, Given` or `Given Family`."""
    text = " ".join((name or "").split())
    if "," in text:
        family, _, given = text.partition(",")
        return family.strip(), given.strip()
    if " " in text:
        given, _, family = text.rpartition(" ")
        return family, given
    return text, ""


class _Builder:
    """Segments assembled with python-hl7's containers (1-based field numbers)."""

    def __init__(self) -> None:
        self.message: Any = hl7.parse(_SKELETON)

    def escape(self, value: str) -> str:
        return str(self.message.escape(value))

    def segment(self, name: str) -> Any:
        segment = self.message.create_segment([self.message.create_field([name])])
        self.message.append(segment)
        return segment

    def set(
        self,
        segment: Any,
        field_num: int,
        components: Sequence[str],
        *,
        repetition: int = 1,
    ) -> None:
        """Put the (escaped) components into one repetition of a field (the first
        repetition replaces whatever the field held)."""
        while len(segment) <= field_num:
            segment.append(segment.create_field([]))
        if repetition == 1:
            segment[field_num] = segment.create_field([])
        for index, value in enumerate(components, start=1):
            if value:
                segment.assign_field(self.escape(value), field_num, repetition, index)

    def text(self) -> str:
        return str(self.message)


def _code_system(code: str) -> str:
    return HCPCS if HCPCS_PATTERN.fullmatch(code) else CPT


def dft_p03(
    lines: Sequence[ChargeLine],
    patient: Patient,
    settings: Hl7Settings,
    *,
    signed_at: datetime,
    created_at: datetime,
    transaction_type: str = CHARGE,
    control_id: str | None = None,
) -> DftMessage:
    """The DFT^P03 message of one visit's charge lines (`CG`), or of their reversal
    (`CD`, the lines of the version sent before)."""
    if transaction_type not in (CHARGE, CREDIT):
        raise ValueError(f"transaction type CG or CD, not {transaction_type!r}")
    if not lines:
        raise ValueError("a DFT^P03 message needs at least one charge line")
    control = control_id or new_control_id()
    build = _Builder()
    msh = build.message.segment("MSH")
    build.set(msh, 3, [SENDING_APPLICATION])
    build.set(msh, 4, [settings.sending_facility])
    build.set(msh, 5, [settings.receiving_application])
    build.set(msh, 6, [settings.receiving_facility])
    build.set(msh, 7, [hl7_timestamp(created_at)])
    build.set(msh, 9, MESSAGE_TYPE)
    build.set(msh, 10, [control])
    build.set(msh, 11, [settings.processing_id])
    build.set(msh, 12, [HL7_VERSION])

    evn = build.segment("EVN")
    build.set(evn, 1, ["P03"])
    build.set(evn, 2, [hl7_timestamp(signed_at)])

    family, given = _name_parts(patient.name)
    pid = build.segment("PID")
    build.set(pid, 1, ["1"])
    # PID-3 (CX): ID, check digit, check digit scheme, assigning authority, type.
    build.set(pid, 3, [patient.patient_id, "", "", "", "MR"])
    # PID-5 is required; a session without a stored name sends only the name type
    # code (XPN.7) `U`, unspecified.
    build.set(pid, 5, [family, given, "", "", "", "", "" if family else "U"])
    if patient.birth_date is not None:
        build.set(pid, 7, [patient.birth_date.strftime("%Y%m%d")])

    pv1 = build.segment("PV1")
    build.set(pv1, 1, ["1"])
    build.set(pv1, 2, ["O"])
    build.set(pv1, 19, [lines[0].session_id])

    for set_id, line in enumerate(lines, start=1):
        ft1 = build.segment("FT1")
        build.set(ft1, 1, [str(set_id)])
        build.set(ft1, 4, [line.date_of_service.strftime("%Y%m%d")])
        build.set(ft1, 6, [transaction_type])
        charge_code = settings.charge_codes.get(line.code)
        if charge_code is None:
            build.set(ft1, 7, [line.code, "", _code_system(line.code)])
        else:
            build.set(ft1, 7, [charge_code, "", CHARGEMASTER])
        build.set(ft1, 10, [str(line.units)])
        for repetition, diagnosis in enumerate(line.pointed_diagnoses, start=1):
            build.set(ft1, 19, [diagnosis, "", ICD10CM], repetition=repetition)
        # FT1-20 (XCN): ID number, then the identifier type code (XCN.13) `NPI`.
        build.set(ft1, 20, [line.rendering_npi, *([""] * 11), "NPI"])
        build.set(ft1, 25, [line.code, "", _code_system(line.code)])
        for repetition, modifier in enumerate(line.modifiers, start=1):
            # Two digits: a CPT modifier (25, 59); letters: HCPCS Level II (JW, JZ).
            system = CPT if modifier.isdigit() else HCPCS
            build.set(ft1, 26, [modifier, "", system], repetition=repetition)
        if line.ndc:
            build.set(ft1, 29, [line.ndc, "", NDC_SYSTEM])
    return DftMessage(control, build.text())


__all__: Sequence[str] = (
    "CHARGE",
    "CREDIT",
    "DftMessage",
    "DftSettingsError",
    "Hl7Settings",
    "Patient",
    "dft_p03",
    "new_control_id",
    "parse_charge_codes",
)
