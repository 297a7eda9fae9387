"""`GET /api/sessions/{id}/fhir`: the visit as a FHIR R4 Bundle, valid against the
official R4 JSON schema, with the applicable or the signed-off code, the charges of a
signed-off visit, the newest exported packet's SHA-256 and the raw files' SHA-256."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from db import audit
from db.models import raw_files, sessions
from evidence import fhir
from pumptrail.cli import main
from tests.fhir import profile_errors, schema_errors
from tests.web.support import DemoData
from tests.web.test_pages import audit_entries, session_with

NPI = "1234567893"


def resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def raw_hashes(engine: Engine, session_id: str) -> set[str]:
    with engine.connect() as connection:
        return set(
            connection.execute(
                select(raw_files.c.sha256)
                .join(sessions, sessions.c.id == raw_files.c.session_pk)
                .where(sessions.c.session_id == session_id)
            ).scalars()
        )


def refill_session(engine: Engine, data: DemoData) -> str:
    return session_with(engine, data, lambda e: e.get("refill") is not None)


def test_an_unsigned_visit_is_a_valid_bundle_with_its_applicable_code(
    coder: TestClient, data: DemoData, engine: Engine, app: FastAPI
) -> None:
    session_id = refill_session(engine, data)
    response = coder.get(f"/api/sessions/{session_id}/fhir")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = response.json()
    assert schema_errors(bundle) == []
    assert profile_errors(bundle) == []
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(set(urls)) == len(urls) and all(u.startswith("urn:uuid:") for u in urls)

    evidence = coder.get(f"/api/sessions/{session_id}").json()
    (procedure,) = resources(bundle, "Procedure")
    assert procedure["code"]["coding"] == [
        {"system": fhir.CPT_SYSTEM, "code": evidence["applicable"]["procedure"]}
    ]
    assert "not signed off" in procedure["code"]["text"]
    (device,) = resources(bundle, "Device")
    assert device["serialNumber"] == evidence["pump_serial"]
    # The synthetic IT-20/IT-40 models are in the built-in makers table.
    assert device["modelNumber"].startswith("IT-")
    assert device["manufacturer"] == "pumptrail synthetic pump (demo and test data only)"
    assert procedure["focalDevice"][0]["manipulated"]["reference"] == urls[1]
    assert resources(bundle, "ChargeItem") == []

    observations = resources(bundle, "Observation")
    codes = [o["code"]["coding"][0]["code"] for o in observations]
    assert len(codes) == len(set(codes)) > 0
    assert all(o["code"]["coding"][0]["system"] == fhir.PARAMETER_SYSTEM for o in observations)
    for change in evidence["changes"]:
        if change["when"] != "in_session":
            continue
        (observation,) = [
            o for o in observations if o["code"]["coding"][0]["code"] == change["parameter"]
        ]
        parts = {c["code"]["coding"][0]["code"]: c for c in observation["component"]}
        assert set(parts) == {fhir.INTERROGATED, fhir.PROGRAMMED}

    administrations = resources(bundle, "MedicationAdministration")
    assert administrations, "a refill gives a MedicationAdministration"
    for given in administrations:
        assert given["dosage"]["dose"]["value"] == evidence["refill"]["added_ul"]
        assert given["dosage"]["dose"]["code"] == "uL"

    (document,) = resources(bundle, "DocumentReference")
    assert document["content"][0]["attachment"]["url"] == f"/sessions/{session_id}/packet.pdf"
    assert "identifier" not in document

    (provenance,) = resources(bundle, "Provenance")
    named = {e["what"]["identifier"]["value"] for e in provenance["entity"]}
    assert named == raw_hashes(engine, session_id) and named
    fingerprint = app.state.pumptrail.identity.fingerprint
    assert [a["who"]["identifier"]["value"] for a in provenance["agent"]] == [fingerprint]
    assert {t["reference"] for t in provenance["target"]} == set(urls[:-1])

    (entry,) = [
        e
        for e in audit_entries(engine, audit.EXPORT_API)
        if e.detail["route"] == "/api/sessions/{session_id}/fhir"
    ]
    assert entry.target == session_id and entry.actor == "cora"
    assert entry.detail["route"] == "/api/sessions/{session_id}/fhir"
    assert entry.detail["format"] == "fhir" and entry.detail["session_ids"] == [session_id]


def test_a_signed_off_visit_carries_its_code_charges_and_exported_packet(
    coder: TestClient, data: DemoData, engine: Engine
) -> None:
    session_id = refill_session(engine, data)
    applicable = coder.get(f"/api/sessions/{session_id}/decision").json()["applicable"]
    other = "62367" if applicable["procedure"] != "62367" else "62368"
    signed = coder.put(
        f"/api/sessions/{session_id}/decision",
        json={
            "procedure": other,
            "reason": "the physician's note documents more",
            "diagnoses": ["G89.4", "Z45.1"],
            "rendering_npi": NPI,
        },
    )
    assert signed.status_code == 200, signed.text
    packet = coder.get(f"/sessions/{session_id}/packet.pdf")
    assert packet.status_code == 200

    bundle = coder.get(f"/api/sessions/{session_id}/fhir").json()
    assert schema_errors(bundle) == []
    assert profile_errors(bundle) == []
    (procedure,) = resources(bundle, "Procedure")
    assert procedure["code"]["coding"] == [{"system": fhir.CPT_SYSTEM, "code": other}]
    assert "signed off by cora (version 1)" in procedure["code"]["text"]
    assert [c["coding"][0] for c in procedure["reasonCode"]] == [
        {"system": fhir.ICD10CM_SYSTEM, "code": "G89.4"},
        {"system": fhir.ICD10CM_SYSTEM, "code": "Z45.1"},
    ]
    assert procedure["performer"][0]["actor"]["identifier"] == {
        "system": fhir.NPI_SYSTEM,
        "value": NPI,
    }

    charges = resources(bundle, "ChargeItem")
    drugs = signed.json()["drugs"]
    assert [c["code"]["coding"][0] for c in charges] == [
        {"system": fhir.CPT_SYSTEM, "code": other}
    ] + [{"system": fhir.HCPCS_SYSTEM, "code": d["hcpcs"]} for d in drugs]
    for charge, drug in zip(charges[1:], drugs, strict=True):
        assert charge["quantity"] == {"value": drug["units"]}
        assert [e["valueCoding"]["code"] for e in charge["extension"]] == ["JZ"]

    (document,) = resources(bundle, "DocumentReference")
    assert document["identifier"] == [
        {"system": fhir.PACKET_SHA256_SYSTEM, "value": hashlib.sha256(packet.content).hexdigest()}
    ]
    (provenance,) = resources(bundle, "Provenance")
    assert provenance["agent"][0]["who"]["identifier"]["value"] == "cora"


def test_unknown_sessions_and_anonymous_callers_get_no_bundle(
    coder: TestClient, anonymous: TestClient, data: DemoData
) -> None:
    missing = coder.get("/api/sessions/nope/fhir")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no stored evidence for this session ID"}
    assert coder.get(f"/api/sessions/{'x' * 65}/fhir").status_code == 404
    assert anonymous.get(f"/api/sessions/{data.session_ids[0]}/fhir").status_code == 401


def test_the_cli_writes_the_same_bundle_and_records_the_export(
    coder: TestClient, data: DemoData, engine: Engine, tmp_path: Path, capsys: Any
) -> None:
    session_id = refill_session(engine, data)
    output = tmp_path / "bundle.json"
    assert (
        main(
            [
                "export", "fhir", "--session", session_id, "--db", data.url,
                "--data-dir", str(data.root), "--output", str(output),
            ]
        )
        == 0
    )  # fmt: skip
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    written = json.loads(output.read_text(encoding="utf-8"))
    assert schema_errors(written) == []
    assert profile_errors(written) == []
    answered = coder.get(f"/api/sessions/{session_id}/fhir").json()
    # Only the generation time differs between two exports of one session.
    for bundle in (written, answered):
        del bundle["timestamp"], bundle["meta"]
        for entry in bundle["entry"]:
            entry["resource"].pop("recorded", None)
    assert written == answered
    (entry,) = [
        e
        for e in audit_entries(engine, audit.EXPORT_API)
        if e.detail["route"] == "pumptrail export fhir"
    ]
    assert entry.actor.startswith("cli:") and entry.detail["session_ids"] == [session_id]
    capsys.readouterr()
    assert (
        main(
            ["export", "fhir", "--session", "nope", "--db", data.url, "--data-dir", str(data.root)]
        )
        == 1
    )
    assert "no stored evidence for session nope" in capsys.readouterr().err
