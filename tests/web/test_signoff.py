"""Sign-off over the API: the applicable code accepted or overridden with a reason,
field-named refusals, blocking billing edits, versions, roles, and the audit entry."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from db import audit
from tests.web.support import DemoData
from tests.web.test_pages import audit_entries

NPI = "1234567893"


def body(**fields: Any) -> dict[str, Any]:
    return {"diagnoses": ["G89.4"], "rendering_npi": NPI, **fields}


def applicable(client: TestClient, session_id: str) -> str:
    answer = client.get(f"/api/sessions/{session_id}/decision").json()
    procedure: str = answer["applicable"]["procedure"]
    return procedure


def test_an_unsigned_visit_offers_its_applicable_code(coder: TestClient, data: DemoData) -> None:
    session_id = data.session_ids[-1]
    answer = coder.get(f"/api/sessions/{session_id}/decision").json()
    assert answer["status"] == "unsigned" and answer["current"] is None
    assert answer["applicable"]["procedure"] in {
        "62367",
        "62368",
        "62369",
        "62370",
        "95990",
        "95991",
    }
    assert answer["versions"] == []


def test_accepting_the_applicable_code_signs_off_with_the_refill_drug_lines(
    coder: TestClient, data: DemoData, engine: Engine
) -> None:
    session_id = data.session_ids[-1]
    code = applicable(coder, session_id)
    response = coder.put(f"/api/sessions/{session_id}/decision", json=body(procedure=code))
    assert response.status_code == 200, response.text
    stored = response.json()
    assert stored["version"] == 1 and stored["signed_by"] == "cora"
    assert stored["procedure"] == code and stored["diagnoses"] == ["G89.4"]
    evidence = coder.get(f"/api/sessions/{session_id}").json()
    coded = [s for s in evidence["supplies"] if s.get("hcpcs")]
    assert [d["hcpcs"] for d in stored["drugs"]] == list(dict.fromkeys(s["hcpcs"] for s in coded))
    for line in stored["drugs"]:
        assert line["modifiers"] == ["JZ"] and line["discarded_units"] == 0
    (entry,) = audit_entries(engine, audit.SIGN_OFF)
    assert entry.actor == "cora" and entry.target == session_id
    assert entry.detail["version"] == 1 and entry.detail["override"] is False
    answer = coder.get(f"/api/sessions/{session_id}/decision").json()
    assert answer["status"] == "signed" and answer["current"]["version"] == 1


def test_an_override_needs_a_reason_and_every_change_is_a_new_version(
    coder: TestClient, data: DemoData
) -> None:
    session_id = data.session_ids[-1]
    code = applicable(coder, session_id)
    other = "62367" if code != "62367" else "62368"
    refused = coder.put(
        f"/api/sessions/{session_id}/decision", json=body(procedure=other, drugs=[])
    )
    assert refused.status_code == 422
    assert "reason" in [p["field"] for p in refused.json()["detail"]]
    assert (
        coder.put(f"/api/sessions/{session_id}/decision", json=body(procedure=code)).status_code
        == 200
    )
    overridden = coder.put(
        f"/api/sessions/{session_id}/decision",
        json=body(procedure=other, reason="payer counts only rate changes", drugs=[]),
    )
    assert overridden.status_code == 200, overridden.text
    answer = coder.get(f"/api/sessions/{session_id}/decision").json()
    assert [v["version"] for v in answer["versions"]] == [1, 2]
    assert [v["procedure"] for v in answer["versions"]] == [code, other]
    assert answer["current"]["reason"] == "payer counts only rate changes"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"diagnoses": ["g894x"]}, "diagnoses[0]"),
        ({"rendering_npi": "1234567890"}, "rendering_npi"),
        ({"drugs": [{"hcpcs": "J0475", "units": 0}]}, "drugs[0].units"),
    ],
)
def test_a_wrong_field_is_named(
    coder: TestClient, data: DemoData, fields: dict[str, Any], field: str
) -> None:
    session_id = data.session_ids[-1]
    code = applicable(coder, session_id)
    response = coder.put(
        f"/api/sessions/{session_id}/decision", json={**body(procedure=code), **fields}
    )
    assert response.status_code == 422
    assert field in [p["field"] for p in response.json()["detail"]]


def test_a_blocking_edit_refuses_with_its_text(coder: TestClient, data: DemoData) -> None:
    session_id = data.session_ids[-1]
    code = applicable(coder, session_id)
    clash = "95990" if code.startswith("6236") else "62367"
    response = coder.put(
        f"/api/sessions/{session_id}/decision",
        json=body(procedure=code, em_codes=[{"code": clash, "modifiers": []}]),
    )
    assert response.status_code == 422
    problems = response.json()["detail"]
    assert any(
        p["field"] == "edits" and p["message"].startswith("pump-codes-one-per-visit")
        for p in problems
    )
    assert coder.get(f"/api/sessions/{session_id}/decision").json()["versions"] == []


def test_auditors_read_decisions_but_do_not_sign_off(auditor: TestClient, data: DemoData) -> None:
    session_id = data.session_ids[-1]
    code = applicable(auditor, session_id)
    response = auditor.put(f"/api/sessions/{session_id}/decision", json=body(procedure=code))
    assert response.status_code == 403


def test_unknown_session_and_anonymous(anonymous: TestClient, coder: TestClient) -> None:
    assert coder.get("/api/sessions/nope/decision").status_code == 404
    assert anonymous.get("/api/sessions/nope/decision").status_code == 401
    assert (
        anonymous.put("/api/sessions/nope/decision", json=body(procedure="62367")).status_code
        == 401
    )
