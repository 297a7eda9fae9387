"""evidence.fhir without a database: code systems, settings' values, stable resource
ids, and R4 schema validity of a visit without patient, decision or packet."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from evidence import fhir
from evidence.charges import charge_lines
from evidence.decision import Decision, DrugLine, ProcedureLine
from tests.fhir import profile_errors, schema_errors

SESSION: dict[str, Any] = {
    "session_id": "0d5e2a8c-3b9f-4a7e-9c61-2f4b8d1e7a90",
    "session_start_utc": "2026-03-14T14:32:10Z",
    "clinic_id": "PAIN 01",
    "pump": {"model": "IT-40", "serial": "ITP40-118822"},
    "patient": {"id": "MRN0042117", "name": "Doe, Jane", "birth_date": "1956-05-02"},
    "interrogated_at_utc": "2026-03-14T14:32:15Z",
    "interrogated": {
        "drug1_name": "Morphine",
        "drug1_concentration": 10000,
        "drug1_daily_dose": 2000,
        "ptm_enabled": True,
        "refill_date": None,
        "flex_step_0": {"start_minute": 360, "rate_ul_per_day": 480},
    },
    "programmed_at_utc": "2026-03-14T14:43:40Z",
    "programmed": {"drug1_daily_dose": 2200},
    "events": [{"type": "refill", "time_utc": "2026-03-14T14:40:00Z", "added_ul": 40000}],
}
EVIDENCE: dict[str, Any] = {
    "applicable": {"profile": "rate-dose", "procedure": "62370"},
    "refill": {"added_ul": 40000},
    "supplies": [{"hcpcs": "J2274", "units": 40, "drug": "Morphine"}],
}
DECISION = Decision(
    SESSION["session_id"],
    date(2026, 3, 14),
    (ProcedureLine("62370"),),
    ("G89.4",),
    "1234567893",
    (DrugLine("J2274", 40, discarded_units=2, ndc="00409-1890-01"),),
    patient_id="MRN0042117",
)


def inputs(**changes: Any) -> fhir.FhirInputs:
    base: dict[str, Any] = {
        "session": SESSION,
        "evidence": EVIDENCE,
        "decision": DECISION,
        "signed": fhir.SignOffInfo(1, "cora", datetime(2026, 3, 15, 10)),
        "charges": charge_lines(DECISION),
        "performer": fhir.Performer("1234567893", "Lee, Ann"),
        "packet": fhir.PacketInfo(
            "/sessions/x/packet.pdf", "ab" * 32, "P-1", datetime(2026, 3, 15)
        ),
        "raw_files": [fhir.RawFileInfo("cd" * 32, "psl-binary", datetime(2026, 3, 14, 15))],
        "signer": fhir.SignerInfo("AA:BB", "CN=Clinic"),
        "generated_at": datetime(2026, 3, 16, 1, 2, 3),
    }
    base.update(changes)
    return fhir.FhirInputs(**base)


def by_kind(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_a_signed_refill_visit_is_valid_r4_with_official_code_systems() -> None:
    bundle = fhir.fhir_bundle(inputs())
    assert schema_errors(bundle) == []
    assert profile_errors(bundle) == []
    charges = by_kind(bundle, "ChargeItem")
    assert [
        (c["code"]["coding"][0]["system"], c["code"]["coding"][0]["code"]) for c in charges
    ] == [
        ("http://www.ama-assn.org/go/cpt", "62370"),
        ("http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "J2274"),
        ("http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "J2274"),
    ]
    assert [e["valueCoding"]["code"] for e in charges[2]["extension"]] == ["JW"]
    assert charges[2]["quantity"] == {"value": 2}
    assert charges[1]["productCodeableConcept"]["coding"][0] == {
        "system": "http://hl7.org/fhir/sid/ndc",
        "code": "00409189001",
    }
    assert charges[0]["reason"][0]["coding"][0]["system"] == "http://hl7.org/fhir/sid/icd-10-cm"
    (patient,) = by_kind(bundle, "Patient")
    assert patient["name"] == [{"text": "Doe, Jane", "family": "Doe", "given": ["Jane"]}]
    assert patient["identifier"][0]["system"] == "urn:pumptrail:fhir:clinic:PAIN%2001:patient-id"
    (given,) = by_kind(bundle, "MedicationAdministration")
    (medication,) = given["contained"]
    assert medication["ingredient"][0]["strength"]["numerator"]["value"] == 10000
    assert given["effectiveDateTime"] == "2026-03-14T14:40:00Z"


def test_each_setting_is_an_observation_with_its_prior_and_programmed_values() -> None:
    observations = {
        o["code"]["coding"][0]["code"]: o
        for o in by_kind(fhir.fhir_bundle(inputs()), "Observation")
    }
    assert set(observations) == set(SESSION["interrogated"])
    dose = observations["drug1_daily_dose"]
    assert dose["valueQuantity"] == {
        "value": 2200,
        "unit": "ug/day",
        "system": "http://unitsofmeasure.org",
        "code": "ug/d",
    }
    assert [
        (c["code"]["coding"][0]["code"], c["valueQuantity"]["value"]) for c in dose["component"]
    ] == [
        ("interrogated", 2000),
        ("programmed", 2200),
    ]
    assert dose["effectiveDateTime"] == "2026-03-14T14:43:40Z"
    assert observations["ptm_enabled"]["valueBoolean"] is True
    assert observations["refill_date"]["dataAbsentReason"]["coding"][0]["code"] == "unknown"
    assert (
        observations["flex_step_0"]["valueString"] == '{"rate_ul_per_day":480,"start_minute":360}'
    )
    assert all(
        o["code"]["coding"][0]["system"] == fhir.PARAMETER_SYSTEM for o in observations.values()
    )


def test_an_unsigned_visit_without_patient_or_packet_is_still_valid() -> None:
    session = {**SESSION, "patient": None}
    unsigned = inputs(
        session=session,
        signed=None,
        charges=(),
        performer=None,
        packet=fhir.PacketInfo("/sessions/x/packet.pdf"),
        raw_files=[],
        signer=None,
    )
    bundle = fhir.fhir_bundle(unsigned)
    assert schema_errors(bundle) == []
    assert profile_errors(bundle) == []
    assert by_kind(bundle, "ChargeItem") == []
    (document,) = by_kind(bundle, "DocumentReference")
    assert "identifier" not in document and "masterIdentifier" not in document
    (procedure,) = by_kind(bundle, "Procedure")
    assert "not signed off" in procedure["code"]["text"] and "performer" not in procedure


def test_resource_ids_are_stable_and_a_broken_bundle_fails_both_validators() -> None:
    first = fhir.fhir_bundle(inputs())
    again = fhir.fhir_bundle(inputs(generated_at=datetime(2027, 1, 1)))
    assert [e["fullUrl"] for e in first["entry"]] == [e["fullUrl"] for e in again["entry"]]
    first["entry"][0]["resource"]["birthDate"] = "1956-13-45"
    first["entry"][2]["resource"]["unknownElement"] = 1
    errors = schema_errors(first)
    assert any(e.startswith("entry/0/resource/birthDate") for e in errors)
    assert any("unknownElement" in e for e in errors)
    del first["entry"][2]["resource"]["unknownElement"]
    first["entry"][0]["resource"]["birthDate"] = "1956-05-02"
    del first["entry"][3]["resource"]["status"]
    first["entry"][4]["resource"]["valueQuantity"]["value"] = "2200"
    assert schema_errors(first) != []
    assert profile_errors(first) == [
        "Bundle.entry[3].resource.status: Missing required property",
        "Bundle.entry[4].resource.value[x].value: Invalid JSON type: expected number, but got string",
    ]
