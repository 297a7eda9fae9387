"""A visit's evidence as a FHIR R4 (4.0.1) Bundle of type `collection` (docs/fhir.md).

Pure mapping, no database: `fhir_bundle` takes the normalized session
(docs/session-json.md §2), its evidence document with `applicable` (§3), the coder's
decision (the current signed-off version, or the proposal built from the applicable
code when nobody signed it off), its charge lines (docs/coding-rules.md §9.6), the
newest exported packet, the raw files' SHA-256 and the signing identity, and returns
plain dicts in the JSON form of FHIR R4:

- `Patient` (patient ID, name, birth date as the export carries them);
- `Device`: the pump (serial number, model, manufacturer when known);
- `Procedure`: the signed-off CPT code, or the applicable one when unsigned, with its
  performer (NPI), the pump as `focalDevice`, the date, the diagnoses (ICD-10-CM);
- one `Observation` per pump setting at the end of the session: the value in force,
  with the interrogated (prior) and programmed values as components;
- one `MedicationAdministration` per drug of a refill: the drug, the volume added and
  the concentration (a contained `Medication`);
- one `ChargeItem` per charge line of a signed-off decision;
- a `DocumentReference` to the signed packet with its SHA-256;
- a `Provenance` naming the raw files' SHA-256, the coder who signed off and the
  clinic's signing identity (certificate fingerprint).

Code systems (docs/fhir.md "Code systems"): CPT, HCPCS Level II, ICD-10-CM, NDC and
NPI by their HL7 terminology URIs; pump settings in the pumptrail code system
`PARAMETER_SYSTEM`, whose codes are the parameter names of docs/formats.md §4.
Every resource's `fullUrl` is a `urn:uuid:` derived from the session ID (UUID
version 5), so one session always yields the same resource identities.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote

from evidence.charges import ChargeLine
from evidence.decision import CPT_PATTERN, Decision
from parsers.params import PARAMS_BY_NAME, ValueType

FHIR_VERSION: Final = "4.0.1"

# Code systems (docs/fhir.md "Code systems"; HL7 Terminology THO).
CPT_SYSTEM: Final = "http://www.ama-assn.org/go/cpt"
# THO CodeSystem hcpcs-Level-II: the canonical URL is http, not https.
HCPCS_SYSTEM: Final = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ICD10CM_SYSTEM: Final = "http://hl7.org/fhir/sid/icd-10-cm"
NDC_SYSTEM: Final = "http://hl7.org/fhir/sid/ndc"
NPI_SYSTEM: Final = "http://hl7.org/fhir/sid/us-npi"
UCUM_SYSTEM: Final = "http://unitsofmeasure.org"
DATA_ABSENT_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
PARTICIPANT_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"

# The pumptrail code systems and identifier systems (docs/fhir.md): URNs, because a
# clinic's installation has no web address of its own to name them by.
PUMPTRAIL_URN: Final = "urn:pumptrail:fhir"
PARAMETER_SYSTEM: Final = f"{PUMPTRAIL_URN}:pump-parameter"
COMPONENT_SYSTEM: Final = f"{PUMPTRAIL_URN}:setting-value"
MODIFIER_EXTENSION: Final = f"{PUMPTRAIL_URN}:procedure-modifier"
SESSION_ID_SYSTEM: Final = f"{PUMPTRAIL_URN}:session-id"
CHARGE_LINE_SYSTEM: Final = f"{PUMPTRAIL_URN}:charge-line"
PACKET_ID_SYSTEM: Final = f"{PUMPTRAIL_URN}:packet-id"
PACKET_SHA256_SYSTEM: Final = f"{PUMPTRAIL_URN}:packet-sha256"
RAW_SHA256_SYSTEM: Final = f"{PUMPTRAIL_URN}:raw-file-sha256"
CERTIFICATE_SYSTEM: Final = f"{PUMPTRAIL_URN}:certificate-sha256"
USER_SYSTEM: Final = f"{PUMPTRAIL_URN}:user"

# The settings' values: the value in force at the end, the interrogated and the
# programmed one (codes of COMPONENT_SYSTEM).
INTERROGATED: Final = "interrogated"
PROGRAMMED: Final = "programmed"

# Canonical units of docs/formats.md §4 as UCUM codes.
_UCUM: Final = {
    "ug": "ug",
    "uL": "uL",
    "min": "min",
    "ug/mL": "ug/mL",
    "ug/day": "ug/d",
    "uL/day": "uL/d",
}

# The resource type of each role of a bundle's resources (by prefix).
_KINDS: Final = (
    ("patient", "Patient"),
    ("device", "Device"),
    ("procedure", "Procedure"),
    ("observation/", "Observation"),
    ("refill/", "MedicationAdministration"),
    ("charge/", "ChargeItem"),
    ("packet", "DocumentReference"),
    ("provenance", "Provenance"),
)

# Namespace of the resource UUIDs (uuid5 of the session ID and the resource's role).
_NAMESPACE: Final = uuid.UUID("6f1d3c1e-8c8e-5a63-9d0f-3a4b8f0e2c11")


@dataclass(frozen=True, slots=True)
class Performer:
    """Who rendered the visit: the NPI and, when a provider is mapped, the name."""

    npi: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class SignOffInfo:
    """The stored decision version the bundle shows (absent when unsigned)."""

    version: int
    author: str
    signed_at: datetime


@dataclass(frozen=True, slots=True)
class PacketInfo:
    """The signed packet: where to fetch it and, once one was exported, its identity."""

    url: str
    sha256: str | None = None
    packet_id: str | None = None
    exported_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RawFileInfo:
    """One raw export file of the session, by content hash (no file name: names may
    carry patient data)."""

    sha256: str
    source_format: str | None
    received_at: datetime


@dataclass(frozen=True, slots=True)
class SignerInfo:
    """The clinic's signing identity (docs/operations.md, `pumptrail keys show`)."""

    fingerprint: str
    subject: str


@dataclass(frozen=True, slots=True)
class FhirInputs:
    """Everything one session's bundle is built from."""

    session: Mapping[str, Any]
    evidence: Mapping[str, Any]
    decision: Decision
    signed: SignOffInfo | None
    charges: Sequence[ChargeLine]
    performer: Performer | None
    packet: PacketInfo
    raw_files: Sequence[RawFileInfo]
    signer: SignerInfo | None
    generated_at: datetime
    manufacturer: str | None = None


def instant(value: datetime) -> str:
    """A naive UTC datetime as a FHIR instant (to the second, with Z)."""
    return value.replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def resource_uuid(session_id: str, role: str) -> str:
    """The UUID of one resource of a session's bundle (stable across exports)."""
    return str(uuid.uuid5(_NAMESPACE, f"{session_id}/{role}"))


def code_system_of(code: str) -> str:
    """CPT for five-character CPT codes, else HCPCS Level II (docs/coding-rules.md §9)."""
    return CPT_SYSTEM if CPT_PATTERN.fullmatch(code) else HCPCS_SYSTEM


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def _concept(system: str, code: str, text: str | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {"coding": [_coding(system, code)]}
    if text:
        concept["text"] = text
    return concept


def _npi_reference(performer: Performer) -> dict[str, Any]:
    reference: dict[str, Any] = {
        "type": "Practitioner",
        "identifier": {"system": NPI_SYSTEM, "value": performer.npi},
    }
    if performer.name:
        reference["display"] = performer.name
    return reference


def _quantity(value: int, unit: str) -> dict[str, Any]:
    code = _UCUM.get(unit)
    if code is None:
        return {"value": value, "unit": unit} if unit else {"value": value}
    return {"value": value, "unit": unit, "system": UCUM_SYSTEM, "code": code}


class _Builder:
    def __init__(self, inputs: FhirInputs) -> None:
        self.inputs = inputs
        self.session_id = str(inputs.session.get("session_id", ""))
        self.entries: list[dict[str, Any]] = []
        # HCPCS code of a refill's drug -> the role of its MedicationAdministration.
        self.drug_roles: dict[str, str] = {}

    def ref(self, role: str) -> dict[str, str]:
        """A reference to the bundle's resource of `role`, typed (a `urn:uuid:` names
        no resource type of its own)."""
        kind = next(k for prefix, k in _KINDS if role.startswith(prefix))
        return {"reference": f"urn:uuid:{resource_uuid(self.session_id, role)}", "type": kind}

    def add(self, role: str, resource: dict[str, Any]) -> None:
        rid = resource_uuid(self.session_id, role)
        kind = resource.pop("resourceType")
        self.entries.append(
            {
                "fullUrl": f"urn:uuid:{rid}",
                "resource": {"resourceType": kind, "id": rid, **resource},
            }
        )


def fhir_bundle(inputs: FhirInputs) -> dict[str, Any]:
    """The session's FHIR R4 Bundle (type `collection`) as JSON-ready dicts."""
    b = _Builder(inputs)
    _patient(b)
    _device(b)
    _procedure(b)
    _observations(b)
    _medication_administrations(b)
    _charge_items(b)
    _document_reference(b)
    _provenance(b)
    return {
        "resourceType": "Bundle",
        "id": resource_uuid(b.session_id, "bundle"),
        "meta": {"lastUpdated": instant(inputs.generated_at)},
        "identifier": {"system": SESSION_ID_SYSTEM, "value": b.session_id},
        "type": "collection",
        "timestamp": instant(inputs.generated_at),
        "entry": b.entries,
    }


# ---------------------------------------------------------------------------
# Resources


def _patient(b: _Builder) -> None:
    session = b.inputs.session
    patient = session.get("patient") or {}
    resource: dict[str, Any] = {"resourceType": "Patient"}
    patient_id = patient.get("id")
    if patient_id:
        clinic = quote(str(session.get("clinic_id") or "unknown"), safe="")
        resource["identifier"] = [
            {"system": f"{PUMPTRAIL_URN}:clinic:{clinic}:patient-id", "value": str(patient_id)}
        ]
    name = str(patient.get("name") or "").strip()
    if name:
        family, _, given = (part.strip() for part in name.partition(","))
        human: dict[str, Any] = {"text": name}
        if family:
            human["family"] = family
        if given:
            human["given"] = given.split()
        resource["name"] = [human]
    if patient.get("birth_date"):
        resource["birthDate"] = str(patient["birth_date"])
    b.add("patient", resource)


def _device(b: _Builder) -> None:
    pump = b.inputs.session.get("pump") or {}
    resource: dict[str, Any] = {
        "resourceType": "Device",
        "status": "active",
        "serialNumber": str(pump.get("serial", "")),
        "modelNumber": str(pump.get("model", "")),
        "deviceName": [{"name": str(pump.get("model", "")), "type": "model-name"}],
        "type": {"text": "implanted programmable drug infusion pump"},
        "patient": b.ref("patient"),
    }
    if b.inputs.manufacturer:
        resource["manufacturer"] = b.inputs.manufacturer
    b.add("device", resource)


def _procedure(b: _Builder) -> None:
    inputs = b.inputs
    decision = inputs.decision
    code = decision.procedures[0].code if decision.procedures else ""
    if inputs.signed is not None:
        text = f"CPT {code}, signed off by {inputs.signed.author} (version {inputs.signed.version})"
    else:
        applicable = inputs.evidence.get("applicable") or {}
        text = (
            f"CPT {code or 'none'}, the applicable code under profile "
            f"{applicable.get('profile', 'unknown')}; not signed off"
        )
    resource: dict[str, Any] = {
        "resourceType": "Procedure",
        "identifier": [{"system": SESSION_ID_SYSTEM, "value": b.session_id}],
        "status": "completed",
        "code": {"coding": [_coding(CPT_SYSTEM, code)], "text": text} if code else {"text": text},
        "subject": b.ref("patient"),
        "performedDateTime": str(inputs.session.get("session_start_utc", "")),
        "focalDevice": [{"manipulated": b.ref("device")}],
    }
    if inputs.performer is not None:
        resource["performer"] = [{"actor": _npi_reference(inputs.performer)}]
    if decision.diagnoses:
        resource["reasonCode"] = [_concept(ICD10CM_SYSTEM, d) for d in decision.diagnoses]
    b.add("procedure", resource)


def _end_time(session: Mapping[str, Any]) -> str | None:
    for key in ("programmed_at_utc", "interrogated_at_utc", "session_start_utc"):
        value = session.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _value(name: str, value: Any) -> tuple[str, Any] | None:
    """The `value[x]` element of a setting's value (docs/session-json.md §1)."""
    if value is None:
        return None
    definition = PARAMS_BY_NAME.get(name)
    kind = definition.value_type if definition is not None else None
    if isinstance(value, bool):
        return "valueBoolean", value
    if isinstance(value, int):
        return "valueQuantity", _quantity(value, definition.unit if definition else "")
    if kind is ValueType.DATE and isinstance(value, str):
        return "valueDateTime", value
    if isinstance(value, Mapping):
        # A flex step: its JSON form (start minute, µL/day), keys sorted.
        return "valueString", json.dumps(dict(value), sort_keys=True, separators=(",", ":"))
    return "valueString", str(value)


def _component(code: str, name: str, value: Any) -> dict[str, Any]:
    component: dict[str, Any] = {"code": _concept(COMPONENT_SYSTEM, code)}
    element = _value(name, value)
    if element is None:
        component["dataAbsentReason"] = _concept(DATA_ABSENT_SYSTEM, "unknown")
    else:
        component[element[0]] = element[1]
    return component


def _observations(b: _Builder) -> None:
    session = b.inputs.session
    interrogated: Mapping[str, Any] = session.get("interrogated") or {}
    programmed: Mapping[str, Any] = session.get("programmed") or {}
    names = list(interrogated) + [n for n in programmed if n not in interrogated]
    order = {name: i for i, name in enumerate(PARAMS_BY_NAME)}
    names.sort(key=lambda n: (order.get(n, len(order)), n))
    effective = _end_time(session)
    for name in names:
        end_value = programmed[name] if name in programmed else interrogated.get(name)
        definition = PARAMS_BY_NAME.get(name)
        resource: dict[str, Any] = {
            "resourceType": "Observation",
            "status": "final",
            "code": {
                "coding": [
                    _coding(PARAMETER_SYSTEM, name, definition.csv_label if definition else None)
                ],
                "text": definition.csv_label if definition else name,
            },
            "subject": b.ref("patient"),
            "focus": [b.ref("device")],
            "device": b.ref("device"),
        }
        if effective:
            resource["effectiveDateTime"] = effective
        element = _value(name, end_value)
        if element is None:
            resource["dataAbsentReason"] = _concept(DATA_ABSENT_SYSTEM, "unknown")
        else:
            resource[element[0]] = element[1]
        components = []
        if name in interrogated:
            components.append(_component(INTERROGATED, name, interrogated[name]))
        if name in programmed:
            components.append(_component(PROGRAMMED, name, programmed[name]))
        resource["component"] = components
        b.add(f"observation/{name}", resource)


def _settings_at_end(session: Mapping[str, Any]) -> dict[str, Any]:
    settings = dict(session.get("interrogated") or {})
    settings.update(session.get("programmed") or {})
    return settings


def _medication_administrations(b: _Builder) -> None:
    inputs = b.inputs
    refill = inputs.evidence.get("refill")
    if not isinstance(refill, Mapping):
        return
    events = [e for e in inputs.session.get("events", ()) if e.get("type") == "refill"]
    when = events[-1].get("time_utc") if events else None
    settings = _settings_at_end(inputs.session)
    supplies = [s for s in inputs.evidence.get("supplies", ()) if isinstance(s, Mapping)]
    added = refill.get("added_ul")
    for slot in (1, 2):
        drug = settings.get(f"drug{slot}_name")
        if not isinstance(drug, str) or not drug.strip():
            continue
        concentration = settings.get(f"drug{slot}_concentration")
        medication: dict[str, Any] = {
            "resourceType": "Medication",
            "id": "drug",
            "code": {"text": drug},
        }
        hcpcs = next(
            (s.get("hcpcs") for s in supplies if s.get("drug") == drug and s.get("hcpcs")), None
        )
        if isinstance(hcpcs, str):
            medication["code"]["coding"] = [_coding(HCPCS_SYSTEM, hcpcs)]
            b.drug_roles.setdefault(hcpcs, f"refill/drug{slot}")
        if isinstance(concentration, int) and not isinstance(concentration, bool):
            medication["ingredient"] = [
                {
                    "itemCodeableConcept": {"text": drug},
                    "strength": {
                        "numerator": _quantity(concentration, "ug"),
                        "denominator": {
                            "value": 1,
                            "unit": "mL",
                            "system": UCUM_SYSTEM,
                            "code": "mL",
                        },
                    },
                }
            ]
        resource: dict[str, Any] = {
            "resourceType": "MedicationAdministration",
            "contained": [medication],
            "status": "completed",
            "medicationReference": {"reference": "#drug", "display": drug},
            "subject": b.ref("patient"),
            "device": [b.ref("device")],
            "partOf": [b.ref("procedure")],
            "effectiveDateTime": str(when or inputs.session.get("session_start_utc", "")),
        }
        if isinstance(added, int) and not isinstance(added, bool):
            text = f"reservoir refill: {added} µL of {drug}"
            if isinstance(concentration, int):
                text += f" at {concentration} µg/mL"
            resource["dosage"] = {"text": text, "dose": _quantity(added, "uL")}
        if inputs.performer is not None:
            resource["performer"] = [{"actor": _npi_reference(inputs.performer)}]
        b.add(f"refill/drug{slot}", resource)


def _charge_items(b: _Builder) -> None:
    inputs = b.inputs
    for line in inputs.charges:
        system = code_system_of(line.code)
        resource: dict[str, Any] = {
            "resourceType": "ChargeItem",
            "identifier": [
                {"system": CHARGE_LINE_SYSTEM, "value": f"{line.session_id}/{line.line}"}
            ],
            "status": "billable",
            "code": _concept(system, line.code),
            "subject": b.ref("patient"),
            "occurrenceDateTime": line.date_of_service.isoformat(),
            "performer": [
                {"actor": _npi_reference(Performer(line.rendering_npi, _name_of(inputs, line)))}
            ],
            "quantity": {"value": line.units},
        }
        service = "procedure" if system == CPT_SYSTEM else b.drug_roles.get(line.code)
        if service is not None:
            resource["service"] = [b.ref(service)]
        if line.modifiers:
            resource["extension"] = [
                {"url": MODIFIER_EXTENSION, "valueCoding": _coding(system, modifier)}
                for modifier in line.modifiers
            ]
        if line.pointed_diagnoses:
            resource["reason"] = [_concept(ICD10CM_SYSTEM, d) for d in line.pointed_diagnoses]
        if line.ndc is not None:
            resource["productCodeableConcept"] = _concept(NDC_SYSTEM, line.ndc)
        b.add(f"charge/{line.line}", resource)


def _name_of(inputs: FhirInputs, line: ChargeLine) -> str | None:
    performer = inputs.performer
    return performer.name if performer is not None and performer.npi == line.rendering_npi else None


def _document_reference(b: _Builder) -> None:
    packet = b.inputs.packet
    attachment: dict[str, Any] = {
        "contentType": "application/pdf",
        "url": packet.url,
        "title": f"Signed evidence packet of session {b.session_id}",
    }
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"text": "signed evidence packet (PDF, PAdES)"},
        "subject": b.ref("patient"),
        "content": [{"attachment": attachment}],
        "context": {"related": [b.ref("procedure")]},
    }
    identifiers = []
    if packet.sha256 is not None:
        identifiers.append({"system": PACKET_SHA256_SYSTEM, "value": packet.sha256})
        resource["description"] = "The newest exported signed packet; its SHA-256 is an identifier."
    else:
        resource["description"] = (
            "No signed packet of this session was exported yet: fetching the URL makes one."
        )
    if packet.packet_id is not None:
        resource["masterIdentifier"] = {"system": PACKET_ID_SYSTEM, "value": packet.packet_id}
    if packet.exported_at is not None:
        resource["date"] = instant(packet.exported_at)
        attachment["creation"] = instant(packet.exported_at)
    if identifiers:
        resource["identifier"] = identifiers
    b.add("packet", resource)


def _provenance(b: _Builder) -> None:
    inputs = b.inputs
    targets = [
        {"reference": entry["fullUrl"], "type": entry["resource"]["resourceType"]}
        for entry in b.entries
    ]
    agents: list[dict[str, Any]] = []
    if inputs.signed is not None:
        agents.append(
            {
                "type": _concept(PARTICIPANT_SYSTEM, "verifier", "signed off the decision"),
                "who": {
                    "identifier": {"system": USER_SYSTEM, "value": inputs.signed.author},
                    "display": inputs.signed.author,
                },
            }
        )
    if inputs.signer is not None:
        agents.append(
            {
                "type": _concept(PARTICIPANT_SYSTEM, "attester", "signs the evidence packet"),
                "who": {
                    "type": "Organization",
                    "identifier": {
                        "system": CERTIFICATE_SYSTEM,
                        "value": inputs.signer.fingerprint,
                    },
                    "display": inputs.signer.subject,
                },
            }
        )
    if not agents:
        agents.append(
            {
                "type": _concept(PARTICIPANT_SYSTEM, "assembler"),
                "who": {"display": "pumptrail"},
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": targets,
        "recorded": instant(inputs.generated_at),
        "agent": agents,
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": RAW_SHA256_SYSTEM, "value": raw.sha256},
                    "display": f"{raw.source_format or 'unknown'} export received "
                    f"{instant(raw.received_at)}",
                },
            }
            for raw in inputs.raw_files
        ],
    }
    if inputs.signed is not None:
        resource["occurredDateTime"] = instant(inputs.signed.signed_at)
    if not resource["entity"]:
        del resource["entity"]
    b.add("provenance", resource)
