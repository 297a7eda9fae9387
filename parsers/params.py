"""The pump parameter table, shared by every format (docs/formats.md §4, docs/format-psl-csv.md §3.1).

One row per parameter: its wire id, canonical name, value type, canonical unit,
coding category and the CSV label with the units the CSV export may use. The
binary decoder looks parameters up by id, the CSV decoder by label, the evidence
room by category; nothing else in the project spells these facts again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import IntEnum
from types import MappingProxyType
from typing import Final


class ValueType(IntEnum):
    """Wire codes of parameter value types (docs/formats.md §2.3)."""

    U32 = 0x01
    I32 = 0x02
    DATE = 0x03
    ENUM = 0x04
    TEXT = 0x05
    BOOL = 0x06
    MINUTES = 0x07
    FLEX_STEP = 0x08


@dataclass(frozen=True, slots=True)
class FlexStep:
    """One step of a flex schedule: from `start_minute` after midnight, `rate_ul_per_day`."""

    start_minute: int
    rate_ul_per_day: int


@dataclass(frozen=True, slots=True)
class ParamDef:
    """One row of the parameter table (docs/formats.md §4)."""

    param_id: int
    name: str
    value_type: ValueType
    unit: str
    category: str
    csv_label: str
    # CSV unit word -> factor to the canonical integer unit (docs/format-psl-csv.md §3.1).
    csv_units: tuple[tuple[str, int], ...] = (("", 1),)


# Value of a parameter in canonical units: a DATE is a `date`, None one that is "not set".
ParamValue = int | str | bool | date | FlexStep | None

CATEGORIES: Final = ("prescription", "ptm", "alarms", "reservoir", "schedule", "device")

_MG = (("mg", 1000), ("mcg", 1))
_MG_DAY = (("mg/day", 1000), ("mcg/day", 1))
_ML = (("mL", 1000),)
_ML_DAY = (("mL/day", 1000),)
_MIN = (("min", 1),)
_WORD = (("", 1),)

_ROWS: tuple[ParamDef, ...] = (
    ParamDef(0x0101, "drug1_name", ValueType.TEXT, "", "prescription", "Drug 1"),
    ParamDef(
        0x0102,
        "drug1_concentration",
        ValueType.U32,
        "ug/mL",
        "prescription",
        "Drug 1 Concentration",
        (("mg/mL", 1000), ("mcg/mL", 1)),
    ),
    ParamDef(
        0x0103,
        "drug1_daily_dose",
        ValueType.U32,
        "ug/day",
        "prescription",
        "Drug 1 Daily Dose",
        _MG_DAY,
    ),
    ParamDef(0x0111, "drug2_name", ValueType.TEXT, "", "prescription", "Drug 2"),
    ParamDef(
        0x0112,
        "drug2_concentration",
        ValueType.U32,
        "ug/mL",
        "prescription",
        "Drug 2 Concentration",
        (("mg/mL", 1000), ("mcg/mL", 1)),
    ),
    ParamDef(
        0x0113,
        "drug2_daily_dose",
        ValueType.U32,
        "ug/day",
        "prescription",
        "Drug 2 Daily Dose",
        _MG_DAY,
    ),
    ParamDef(0x0120, "infusion_mode", ValueType.ENUM, "", "prescription", "Infusion Mode"),
    ParamDef(
        0x0121, "infusion_rate", ValueType.U32, "uL/day", "prescription", "Infusion Rate", _ML_DAY
    ),
    *(
        ParamDef(
            0x0130 + k,
            f"flex_step_{k}",
            ValueType.FLEX_STEP,
            "uL/day",
            "prescription",
            f"Flex Step {k + 1}",
            _ML_DAY,
        )
        for k in range(8)
    ),
    ParamDef(0x0201, "ptm_enabled", ValueType.BOOL, "", "ptm", "PTM Enabled"),
    ParamDef(0x0202, "ptm_bolus_dose", ValueType.U32, "ug", "ptm", "PTM Bolus Dose", _MG),
    ParamDef(0x0203, "ptm_bolus_duration", ValueType.U32, "min", "ptm", "PTM Bolus Duration", _MIN),
    ParamDef(0x0204, "ptm_lockout", ValueType.U32, "min", "ptm", "PTM Lockout", _MIN),
    ParamDef(0x0205, "ptm_max_per_day", ValueType.U32, "", "ptm", "PTM Max Per Day", _WORD),
    ParamDef(
        0x0301,
        "low_reservoir_alarm_volume",
        ValueType.U32,
        "uL",
        "alarms",
        "Low Reservoir Alarm Volume",
        _ML,
    ),
    ParamDef(
        0x0302, "low_reservoir_alarm_enabled", ValueType.BOOL, "", "alarms", "Low Reservoir Alarm"
    ),
    ParamDef(0x0401, "reservoir_volume", ValueType.U32, "uL", "reservoir", "Reservoir Volume", _ML),
    ParamDef(
        0x0402, "reservoir_capacity", ValueType.U32, "uL", "device", "Reservoir Capacity", _ML
    ),
    ParamDef(
        0x0501,
        "low_reservoir_alarm_date",
        ValueType.DATE,
        "",
        "schedule",
        "Low Reservoir Alarm Date",
    ),
    ParamDef(0x0502, "refill_date", ValueType.DATE, "", "schedule", "Refill Date"),
    ParamDef(0x0503, "eri_date", ValueType.DATE, "", "device", "ERI Date"),
    ParamDef(0x0601, "catheter_volume", ValueType.U32, "uL", "device", "Catheter Volume", _ML),
    ParamDef(0x0602, "catheter_tip_level", ValueType.TEXT, "", "device", "Catheter Tip Level"),
    ParamDef(0x0603, "implant_date", ValueType.DATE, "", "device", "Implant Date"),
)

PARAMS: Final = _ROWS
PARAMS_BY_ID: Final = MappingProxyType({p.param_id: p for p in _ROWS})
PARAMS_BY_NAME: Final = MappingProxyType({p.name: p for p in _ROWS})
PARAMS_BY_LABEL: Final = MappingProxyType({p.csv_label: p for p in _ROWS})
# Position of each parameter in the table: the order of `changes` (docs/coding-rules.md §7.4).
PARAM_ORDER: Final = MappingProxyType({p.name: i for i, p in enumerate(_ROWS)})

# infusion_mode enumeration (docs/formats.md §4): wire byte -> JSON word -> CSV word.
INFUSION_MODES: Final = MappingProxyType(
    {1: "simple_continuous", 2: "flex", 3: "minimum_rate"},
)
INFUSION_MODE_CODES: Final = MappingProxyType({v: k for k, v in INFUSION_MODES.items()})

# Other enumerations (docs/formats.md §3): wire byte -> word of docs/session-json.md.
OPERATOR_ROLES: Final = MappingProxyType(
    {0: "unknown", 1: "physician", 2: "qhp", 3: "nurse", 4: "technician"}
)
REASONS: Final = MappingProxyType(
    {
        0: "unspecified",
        1: "efficacy",
        2: "side_effects",
        3: "refill_bookkeeping",
        4: "drug_change",
        5: "entry_correction",
        6: "patient_request",
    }
)
BOLUS_KINDS: Final = MappingProxyType({1: "bridge", 2: "priming", 3: "clinician"})
SEVERITIES: Final = MappingProxyType({1: "critical", 2: "non_critical", 3: "informational"})
ALARM_STATES: Final = MappingProxyType({1: "active", 2: "logged", 3: "cleared"})
BATTERY_STATES: Final = MappingProxyType({1: "ok", 2: "eri", 3: "eos"})
ALARM_CODES: Final = MappingProxyType(
    {
        0x0001: "low_reservoir",
        0x0002: "empty_reservoir",
        0x0003: "elective_replacement",
        0x0004: "end_of_service",
        0x0005: "motor_stall",
        0x0006: "motor_stall_recovery",
        0x0007: "pump_memory_error",
        0x0008: "catheter_access_port_warning",
    }
)
PHASE_INTERROGATED: Final = 0
PHASE_PROGRAMMED: Final = 1

# Limits a decoder enforces before allocating (docs/formats.md §3, §2.3).
MAX_FILE_BYTES: Final = 4 * 1024 * 1024
MAX_PAYLOAD_BYTES: Final = 4096
MAX_TEXT_BYTES: Final = 64
MAX_NOTE_BYTES: Final = 2000
MAX_SNAPSHOT_ENTRIES: Final = 64
MAX_PADDING_BYTES: Final = 1023
ASCII_FIELD_BYTES: Final = 12
MAX_MINUTE: Final = 1439


def alarm_word(code: int) -> str:
    """The JSON word of an alarm code; unknown codes keep their number (§7.5)."""
    return ALARM_CODES.get(code) or f"unknown:0x{code:04x}"


def category_of(name: str) -> str:
    """The coding category of a parameter by canonical name."""
    return PARAMS_BY_NAME[name].category
