"""The coder's sign-off: from a form or an API body to a stored, checked decision.

One path for the evidence page's form, the bulk action and `PUT
/api/sessions/{id}/decision` (docs/web.md "Sign-off", docs/coding-rules.md §9):

1. `proposal` builds what the coder starts from: the applicable code (payer's
   profile on the date of service, `db.payers`), the rendering provider (the
   operator's NPI when a physician or QHP, else the supervising physician's), the
   drug lines the refill yields (units from the exact amount, JZ when nothing was
   discarded), and the edits that proposal hits.
2. `decision_from_body` turns a submitted body into an `evidence.decision.Decision`,
   naming the field of every problem (a 422 answer); a missing `drugs` means the
   refill's drug lines, with JZ.
3. `sign_off` validates, checks the billing edits against the patient's other
   decisions of that day, refuses on a blocking edit with its text, and stores the
   decision as a new version with its audit entry and its DFT^P03 billing
   messages (docs/interfaces.md "Outbox") in one transaction.

Decisions are stored as the JSON of `decision_json`; `decision_from_json` reads
them back (for the day's other decisions and the charge lines).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from fastapi import Request
from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection

from db import audit, outbox
from db.decisions import (
    DecisionVersion,
    current_decision,
    decision_versions,
    decisions_on_day,
)
from db.decisions import sign_off as store_version
from db.engine import write_transaction
from db.models import sessions
from db.payers import evidence_with_applicable, find_provider
from evidence.charges import ChargeLine, charge_lines
from evidence.decision import (
    Decision,
    DrugLine,
    FieldError,
    ProcedureLine,
    decision_from_json,
    decision_json,
    default_drug_lines,
    drug_line,
    validate_decision,
)
from evidence.dft import Hl7Settings
from evidence.edits import EditResult, Edits, blocking, check
from evidence.rules import Rules
from parsers.errors import PumptrailError
from web.context import app_state, client_address, route_template
from web.users import User

QHP_ROLES = frozenset({"physician", "qhp"})
# Session IDs are UUIDs (36 characters); anything longer is no session ID.
MAX_SESSION_ID_LEN = 64


class SignOffRefused(PumptrailError):
    """Raised by `sign_off` when the submitted decision cannot be stored: a field is
    wrong (`errors` name each one) or a blocking billing edit refuses it (`edits`)."""

    def __init__(self, errors: Sequence[FieldError] = (), edits: Sequence[EditResult] = ()) -> None:
        self.errors = list(errors)
        self.edits = list(edits)
        parts = [f"{e.field}: {e.message}" for e in self.errors] + [e.text for e in self.edits]
        super().__init__("; ".join(parts))

    def as_detail(self) -> list[dict[str, str]]:
        """The 422 body's `detail`: one object per problem, naming its field."""
        return [{"field": e.field, "message": e.message} for e in self.errors] + [
            {"field": "edits", "message": f"{e.edit_id}: {e.text}"} for e in self.edits
        ]


@dataclass(frozen=True)
class SessionFacts:
    """What a decision needs of one stored session."""

    session_id: str
    patient_id: str | None
    date_of_service: date
    operator_id: str
    evidence: Mapping[str, Any]

    @property
    def applicable(self) -> Mapping[str, Any]:
        value = self.evidence.get("applicable")
        return value if isinstance(value, Mapping) else {}

    @property
    def applicable_procedure(self) -> str | None:
        procedure = self.applicable.get("procedure")
        return procedure if isinstance(procedure, str) else None

    @property
    def flags(self) -> list[str]:
        return [str(f) for f in self.evidence.get("flags", [])]


def session_facts(
    connection: Connection, session_id: str, default_profile: str
) -> SessionFacts | None:
    """The stored session and its evidence with `applicable`; None when there is none."""
    if len(session_id) > MAX_SESSION_ID_LEN:
        return None  # longer than any stored session ID: nothing to look up
    row = connection.execute(
        select(sessions.c.patient_id, sessions.c.session_start_local, sessions.c.operator_id).where(
            sessions.c.session_id == session_id
        )
    ).first()
    if row is None:
        return None
    evidence = evidence_with_applicable(connection, session_id, default_profile)
    if evidence is None:
        return None
    return SessionFacts(session_id, row[0], row[1].date(), str(row[2]), evidence)


def rendering_npi(
    connection: Connection, facts: SessionFacts, supervising_physician: str
) -> str | None:
    """The operator's NPI when a physician or QHP performed it, else the supervising
    physician's (the `supervising_physician` setting names an operator ID)."""
    operator = find_provider(connection, facts.operator_id)
    if operator is not None and operator.role in QHP_ROLES:
        return str(operator.npi)
    supervisor = find_provider(connection, supervising_physician) if supervising_physician else None
    return None if supervisor is None else str(supervisor.npi)


# ---------------------------------------------------------------------------
# The JSON a decision is stored and answered as


def version_json(version: DecisionVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "signed_by": version.author,
        "signed_at": version.created_at.isoformat(timespec="seconds") + "Z",
        **version.decision,
    }


# ---------------------------------------------------------------------------
# From a submitted body


def _strings(body: Mapping[str, Any], key: str, errors: list[FieldError]) -> tuple[str, ...]:
    value = body.get(key, [])
    if isinstance(value, str):
        value = [part for part in value.replace(",", " ").split() if part]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors.append(FieldError(key, "expected a list of strings"))
        return ()
    return tuple(v.strip().upper() for v in value if v.strip())


def _int(value: Any, where: str, errors: list[FieldError], default: int = 0) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        errors.append(FieldError(where, f"expected a whole number, found {value!r}"))
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        errors.append(FieldError(where, f"expected a whole number, found {value!r}"))
        return default


def decision_from_body(
    body: Mapping[str, Any],
    facts: SessionFacts,
    rules: Rules,
) -> tuple[Decision, list[FieldError]]:
    """The decision a body asks for, and the problems of its shape (names each field).

    Keys: `procedure` (required), `diagnoses` (list or comma-separated text),
    `rendering_npi`, optional `reason`, `modifiers`, `em_codes`
    ([{"code", "modifiers"}]), `drugs` ([{"hcpcs", "units", "discarded_units",
    "ndc"}]; absent: the refill's drug lines with JZ), `specialty_pharmacy_supplied`.
    """
    errors: list[FieldError] = []
    procedure = body.get("procedure")
    if not isinstance(procedure, str) or not procedure.strip():
        errors.append(FieldError("procedure", "required: the CPT code billed for the visit"))
        procedure = ""
    modifiers = _strings(body, "modifiers", errors)
    procedures = [ProcedureLine(procedure.strip(), modifiers)]
    for index, em in enumerate(body.get("em_codes") or []):
        if not isinstance(em, Mapping) or not isinstance(em.get("code"), str):
            errors.append(
                FieldError(f"em_codes[{index}]", 'expected {"code": ..., "modifiers": [...]}')
            )
            continue
        procedures.append(
            ProcedureLine(
                em["code"].strip(), tuple(str(m).strip().upper() for m in em.get("modifiers", []))
            )
        )
    diagnoses = _strings(body, "diagnoses", errors)
    npi = body.get("rendering_npi")
    if npi is not None and not isinstance(npi, str):
        errors.append(FieldError("rendering_npi", "expected ten digits as text"))
        npi = None
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        errors.append(FieldError("reason", "expected text"))
        reason = None
    if "drugs" in body and body["drugs"] is not None:
        drugs: list[DrugLine] = []
        if not isinstance(body["drugs"], list):
            errors.append(FieldError("drugs", "expected a list of drug lines"))
        else:
            for index, line in enumerate(body["drugs"]):
                where = f"drugs[{index}]"
                if not isinstance(line, Mapping) or not isinstance(line.get("hcpcs"), str):
                    errors.append(FieldError(where, 'expected {"hcpcs": ..., "units": ...}'))
                    continue
                ndc = line.get("ndc") or None
                drugs.append(
                    drug_line(
                        line["hcpcs"].strip().upper(),
                        _int(line.get("units"), f"{where}.units", errors),
                        rules,
                        discarded_units=_int(
                            line.get("discarded_units"), f"{where}.discarded_units", errors
                        ),
                        ndc=str(ndc) if ndc is not None else None,
                    )
                )
        drug_lines = tuple(drugs)
    else:
        drug_lines = default_drug_lines(facts.evidence.get("supplies", []), rules)
    decision = Decision(
        session_id=facts.session_id,
        date_of_service=facts.date_of_service,
        procedures=tuple(procedures),
        diagnoses=diagnoses,
        rendering_npi=(npi or "").strip(),
        drugs=drug_lines,
        reason=(reason or "").strip() or None,
        specialty_pharmacy_supplied=bool(body.get("specialty_pharmacy_supplied", False)),
        patient_id=facts.patient_id,
    )
    return decision, errors


# ---------------------------------------------------------------------------
# Checking and storing


def _others_same_day(connection: Connection, facts: SessionFacts) -> list[Decision]:
    if facts.patient_id is None:
        return []
    return [
        decision_from_json(v.session_id, facts.patient_id, v.decision)
        for v in decisions_on_day(
            connection, facts.patient_id, facts.date_of_service, except_session=facts.session_id
        )
    ]


def edit_results(
    connection: Connection, decision: Decision, facts: SessionFacts, edits: Edits
) -> list[EditResult]:
    return check(decision, _others_same_day(connection, facts), facts.evidence, edits)


@dataclass
class Proposal:
    """What the evidence page's form starts from, and the edits it would hit."""

    facts: SessionFacts
    decision: Decision
    edits: list[EditResult] = field(default_factory=list)
    current: DecisionVersion | None = None
    versions: list[DecisionVersion] = field(default_factory=list)


def proposal(
    connection: Connection,
    facts: SessionFacts,
    rules: Rules,
    edits: Edits,
    supervising_physician: str,
) -> Proposal:
    current = current_decision(connection, facts.session_id)
    if current is not None:
        decision = decision_from_json(facts.session_id, facts.patient_id, current.decision)
    else:
        decision = Decision(
            session_id=facts.session_id,
            date_of_service=facts.date_of_service,
            procedures=(ProcedureLine(facts.applicable_procedure or ""),),
            diagnoses=(),
            rendering_npi=rendering_npi(connection, facts, supervising_physician) or "",
            drugs=default_drug_lines(facts.evidence.get("supplies", []), rules),
            patient_id=facts.patient_id,
        )
    return Proposal(
        facts=facts,
        decision=decision,
        edits=edit_results(connection, decision, facts, edits),
        current=current,
        versions=decision_versions(connection, facts.session_id),
    )


def sign_off(
    engine: Engine,
    facts: SessionFacts,
    body: Mapping[str, Any],
    rules: Rules,
    edits: Edits,
    *,
    actor: str,
    audit_detail: Mapping[str, object] | None = None,
    hl7: Hl7Settings | None = None,
) -> tuple[DecisionVersion, list[EditResult]]:
    """Validate, check the edits, store the next version, its audit entry and its
    billing messages (`db.outbox.enqueue_for`, built with `hl7`).

    Raises SignOffRefused (field errors, or blocking edits); returns the stored version
    and the warnings it was signed with.
    """
    decision, errors = decision_from_body(body, facts, rules)
    errors += validate_decision(decision, applicable=facts.applicable_procedure)
    if errors:
        raise SignOffRefused(errors)
    with write_transaction(engine) as connection:
        results = edit_results(connection, decision, facts, edits)
        refused = blocking(results)
        if refused:
            raise SignOffRefused(edits=refused)
        stored = decision_json(decision)
        version = store_version(connection, facts.session_id, stored, author=actor)
        outbox.enqueue_for(connection, version, hl7 or Hl7Settings())
        audit.append(
            connection,
            actor=actor,
            action=audit.SIGN_OFF,
            target=facts.session_id,
            detail={
                **(audit_detail or {}),
                "version": version.version,
                "procedure": decision.procedures[0].code,
                "override": decision.procedures[0].code != facts.applicable_procedure,
                "warnings": [r.edit_id for r in results],
            },
        )
    return version, results


def lines_of(version: DecisionVersion, patient_id: str | None) -> tuple[ChargeLine, ...]:
    """The charge lines of a stored decision version."""
    return charge_lines(decision_from_json(version.session_id, patient_id, version.decision))


def sign_off_for(
    request: Request,
    user: User,
    facts: SessionFacts,
    body: Mapping[str, Any],
    **detail: object,
) -> tuple[DecisionVersion, list[EditResult]]:
    """`sign_off` by the logged-in `user` of a web request (form, bulk action or API):
    the app's engine, rules, edits and HL7 settings, and the route and client address
    in the audit entry with any `detail` the caller adds (`bulk=True`)."""
    state = app_state(request)
    return sign_off(
        state.engine,
        facts,
        body,
        state.rules,
        state.edits,
        actor=user.username,
        hl7=state.config.hl7,
        audit_detail={
            "route": route_template(request),
            "client": client_address(request),
            **detail,
        },
    )
