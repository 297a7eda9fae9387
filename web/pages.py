"""The evidence of one session as the evidence page, the printable packet and the PDF show it.

One view model (`EvidenceView`) built from the stored rows (`web.queries.session_record`)
feeds all three, so the packet says exactly what the page says: the applicable
payer, profile and code first (docs/coding-rules.md §9.1), the session's facts, the flags (critical first), the code under every profile with its
counterfactual sentence, what changed with reason, time and operator, the
three-column settings table, the refill arithmetic, the alarms (critical first),
the checklist split, the drug supply lines, the session log with each event's
place in the export, and the raw files with their SHA-256 and the versions of
the software that produced the evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.engine import Connection

from db.payers import Provider, find_provider, payer_on
from evidence import Rules
from evidence.payers import Payer, with_applicable
from web import present
from web.queries import RawFile, SessionRecord, event_positions, raw_files_of, session_record


@dataclass(frozen=True, slots=True)
class Fact:
    label: str
    value: str


@dataclass(frozen=True, slots=True)
class EvidenceView:
    record: SessionRecord
    title: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    start_local: str
    offset: str
    facts: list[Fact]
    flags: list[present.FlagView]
    codes: list[present.CodeView]
    codes_agree: bool
    changes: list[present.ChangeView]
    state: present.StateTable
    refill: present.RefillView | None
    alarms: list[present.AlarmView]
    critical_alarms: list[present.AlarmView]
    checklist: present.Checklist
    supplies: list[present.SupplyView]
    events: list[present.EventView]
    raw_files: list[RawFile]
    warnings: list[str]
    versions: list[Fact]
    has_evidence: bool
    # The payer covering the date of service, its profile and code (docs/coding-rules.md
    # §9.1); None without evidence.
    applicable: ApplicableView | None = None
    # The profile the coder chose on the list (kept for the browser session).
    chosen_profile: str = ""
    # The evidence document with `applicable` as looked up for this view (what the
    # packet embeds); None without evidence.
    document: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ApplicableView:
    payer: str | None
    payer_id: str | None
    profile: str
    profile_label: str
    procedure: str | None

    @property
    def payer_text(self) -> str:
        if self.payer is None:
            return "no payer on file for the date of service: the default profile applies"
        return self.payer + (f" (payer ID {self.payer_id})" if self.payer_id else "")


def _birth(value: date | None) -> str:
    return present.DASH if value is None else value.isoformat()


def build_evidence_view(
    connection: Connection,
    session_id: str,
    rules: Rules,
    *,
    software_version: str,
    chosen_profile: str = "",
    supervising_physician: str = "",
) -> EvidenceView | None:
    """The view model of one session; None when no such session is stored.

    The covering payer is looked up now (`db.payers.payer_on`), so a coverage change
    shows at once; `supervising_physician` is the operator ID of the clinic's default
    supervising physician, shown for a session a non-QHP performed.
    """
    record = session_record(connection, session_id)
    if record is None:
        return None
    positions = [(p.kind, p.value) for p in event_positions(connection, record.pk)]
    raws = raw_files_of(connection, record.pk)
    payer = payer_on(connection, record.patient_id, record.start_local.date())
    people = {
        operator: find_provider(connection, operator)
        for operator in (record.operator_id, supervising_physician)
        if operator
    }
    return evidence_view(
        record,
        positions,
        raws,
        rules,
        software_version=software_version,
        payer=payer,
        chosen_profile=chosen_profile,
        operator=people.get(record.operator_id),
        supervisor=people.get(supervising_physician) if supervising_physician else None,
        supervisor_id=supervising_physician,
    )


def _person(provider: Provider) -> str:
    return f"{provider.name}, NPI {provider.npi}"


def evidence_view(
    record: SessionRecord,
    positions: list[tuple[str, int]],
    raws: list[RawFile],
    rules: Rules,
    *,
    software_version: str,
    payer: Payer | None = None,
    chosen_profile: str = "",
    operator: Provider | None = None,
    supervisor: Provider | None = None,
    supervisor_id: str = "",
) -> EvidenceView:
    doc = record.document
    ev: Mapping[str, Any] = (
        with_applicable(record.evidence, payer, rules.default_profile)
        if record.evidence is not None
        else {}
    )
    found = ev.get("applicable")
    applicable_view = None
    if isinstance(found, Mapping):
        key = str(found.get("profile"))
        label = next((p.title for p in rules.profiles if p.name == key), key)
        applicable_view = ApplicableView(
            payer=found.get("payer"),
            payer_id=found.get("payer_id"),
            profile=key,
            profile_label=label,
            procedure=found.get("procedure"),
        )
    offset = record.utc_offset_min
    changes = present.change_views(doc, ev)
    profile_info = {p.name: (p.description, p.held_by) for p in rules.profiles}
    codes = present.code_views(
        ev, profile_info, rules.default_profile, {p.name: p.label for p in rules.profiles}
    )
    alarms = present.alarm_views(ev, offset)
    programmer = doc.get("programmer") or {}
    pump = doc.get("pump") or {}
    status = doc.get("pump_status") or {}
    role = present.ROLE_LABELS.get(record.operator_role, record.operator_role)
    facts: list[Fact] = []
    if applicable_view is not None:
        facts += [
            Fact("Payer", applicable_view.payer_text),
            Fact(
                "Applicable code",
                f"{applicable_view.procedure or present.DASH} under "
                f"{applicable_view.profile_label} ({applicable_view.profile})",
            ),
        ]
    operator_text = f"{record.operator_id} ({role})"
    if operator is not None:
        operator_text += f": {_person(operator)}"
    facts += [
        Fact("Pump", f"{pump.get('model', '')} serial {record.pump_serial}"),
        Fact(
            "Session start",
            f"{present.when_text(record.start_local, seconds=True)} "
            f"({present.offset_text(offset)}; {present.when_text(record.start_utc)} UTC)",
        ),
        Fact("Operator", operator_text),
        Fact("Clinic", record.clinic_id or present.DASH),
        Fact(
            "Programmer",
            f"{programmer.get('model', '')} serial {programmer.get('serial', '')}, "
            f"software {programmer.get('software', '')}",
        ),
        Fact(
            "Interrogated",
            present.when_text(
                present.local_time(doc.get("interrogated_at_utc"), offset), seconds=True
            ),
        ),
        Fact(
            "Programmed (transmitted)",
            present.when_text(
                present.local_time(doc.get("programmed_at_utc"), offset), seconds=True
            )
            if doc.get("programmed_at_utc")
            else "nothing transmitted",
        ),
    ]
    if supervisor_id and not rules.is_qhp(record.operator_role):
        facts.append(
            Fact(
                "Supervising physician",
                f"{supervisor_id}: {_person(supervisor)}"
                if supervisor is not None
                else f"{supervisor_id} (not mapped: `pumptrail provider add`)",
            )
        )
    if status:
        clock = status.get("pump_clock_offset_s")
        facts.append(
            Fact(
                "Pump status",
                f"firmware {status.get('firmware', '')}, battery {status.get('battery', '')}"
                + (f", pump clock {clock:+d} s from programmer" if isinstance(clock, int) else ""),
            )
        )
    versions = [
        Fact("pumptrail", software_version),
        Fact("Parser (stored session)", record.parser_version),
        Fact("Parser (evidence)", record.evidence_parser_version or present.DASH),
        Fact("Rules (evidence)", record.rules_version or present.DASH),
        Fact(
            "Evidence derived",
            present.when_text(record.derived_at, seconds=True) + " UTC"
            if record.derived_at
            else present.DASH,
        ),
        Fact("Imported", present.when_text(record.imported_at, seconds=True) + " UTC"),
    ]
    patient = doc.get("patient") or {}
    return EvidenceView(
        record=record,
        title=f"Session {present.when_text(record.start_local)} · pump {record.pump_serial}",
        patient_name=record.patient_name or str(patient.get("name") or "") or "(no name)",
        patient_id=record.patient_id or present.DASH,
        patient_birth_date=_birth(record.patient_birth_date),
        start_local=present.when_text(record.start_local),
        offset=present.offset_text(offset),
        facts=facts,
        flags=present.flag_views([str(f) for f in ev.get("flags") or ()]),
        codes=codes,
        codes_agree=present.codes_agree(codes),
        changes=changes,
        state=present.state_table(
            doc, record.evidence, record.prior_document, record.prior_session_id, changes
        ),
        refill=present.refill_view(ev),
        alarms=alarms,
        critical_alarms=[a for a in alarms if a.critical],
        checklist=present.checklist(ev),
        supplies=present.supply_views(ev),
        events=present.event_views(
            doc, positions if len(positions) == len(doc.get("events") or ()) else None
        ),
        raw_files=raws,
        warnings=[str(w) for w in doc.get("warnings") or ()],
        versions=versions,
        has_evidence=record.evidence is not None,
        applicable=applicable_view,
        chosen_profile=chosen_profile,
        document=ev if record.evidence is not None else None,
    )


def generated_stamp(now: datetime, username: str) -> str:
    return f"{present.when_text(now, seconds=True)} UTC by {username}"
