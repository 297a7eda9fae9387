"""The JSON API and its OpenAPI document (web view item 5), and the audit of exports."""

from __future__ import annotations

import json
import typing

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from db import audit
from db.codec import dumps, loads
from db.engine import write_transaction
from db.models import sessions
from db.payers import add_payer, assign_coverage
from db.queries import evidence_document_text
from evidence.codes import DECISION_TABLE, PROCEDURE_CODES
from evidence.flags import SESSION_FLAGS
from evidence.payers import with_applicable
from tests.web.support import DemoData


def exports(engine: Engine) -> list[audit.AuditEntry]:
    with engine.connect() as connection:
        return audit.show(connection, audit.AuditFilter(action=audit.EXPORT_API, limit=None))


def test_the_session_list_as_json(coder: TestClient, data: DemoData, engine: Engine) -> None:
    response = coder.get("/api/sessions", params={"limit": 500})
    assert response.status_code == 200
    body = response.json()
    assert body["profile"] == "rate-dose"
    assert body["count"] == len(data.session_ids) and body["count_capped"] is False
    items = body["items"]
    assert sorted(i["session_id"] for i in items) == sorted(data.session_ids)
    starts = [i["session_start_utc"] for i in items]
    assert starts == sorted(starts, reverse=True)
    first = items[0]
    assert set(first["codes"]) == {"rate-dose", "rate-dose-alarms", "any-setting"}
    assert first["href"] == f"/api/sessions/{first['session_id']}"
    assert first["session_start_utc"].endswith("Z")
    assert first["patient_id"].startswith("SYN-")
    assert body["next_cursor"] is None and body["prev_cursor"] is None
    # Audited: the route, the client, the filters with their values (a patient ID
    # only as used) and the session IDs of the answer.
    coder.get("/api/sessions", params={"patient_id": "SYN-0000001", "flag": "chain_gap"})
    entries = exports(engine)
    assert [(e.actor, e.target) for e in entries] == [("cora", "sessions"), ("cora", "sessions")]
    assert sorted(entries[0].detail["session_ids"]) == sorted(data.session_ids)
    assert entries[-1].detail == {
        "route": "/api/sessions",
        "client": "testclient",
        "filters": {
            "flags": ["chain_gap"],
            "patient_filter": True,
            "profile": "rate-dose",
            "sort": "newest",
            "limit": 50,
            "page": "first",
        },
        "rows": 0,
        "session_ids": [],
    }
    assert "SYN-0000001" not in json.dumps([e.detail for e in entries])


def test_the_list_filters_and_pages_like_the_page(coder: TestClient, data: DemoData) -> None:
    serial, ids = next(iter(data.pumps.items()))
    body = coder.get("/api/sessions", params={"pump_serial": serial, "sort": "oldest"}).json()
    assert [i["session_id"] for i in body["items"]] == ids
    seen: list[str] = []
    params: dict[str, str | int] = {"limit": 4}
    while True:
        body = coder.get("/api/sessions", params=params).json()
        seen += [i["session_id"] for i in body["items"]]
        if body["next_cursor"] is None:
            break
        params = {"limit": 4, "cursor": body["next_cursor"]}
    assert len(seen) == len(set(seen)) == len(data.session_ids)


def test_bad_parameters_are_4xx_never_5xx(coder: TestClient) -> None:
    assert coder.get("/api/sessions", params={"cursor": "garbage"}).status_code == 400
    assert coder.get("/api/sessions", params={"profile": "nope"}).status_code == 400
    assert coder.get("/api/sessions", params={"date_from": "2026-13-40"}).status_code == 422
    assert coder.get("/api/sessions", params={"procedure": "12345"}).status_code == 422
    assert coder.get("/api/sessions", params={"limit": 0}).status_code == 422
    assert coder.get("/api/sessions", params={"flag": "nope"}).status_code == 422


def test_one_session_is_the_stored_evidence_document(
    coder: TestClient, data: DemoData, engine: Engine
) -> None:
    session_id = data.session_ids[5]
    response = coder.get(f"/api/sessions/{session_id}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with engine.connect() as connection:
        stored = evidence_document_text(connection, session_id)
    assert stored is not None
    # The stored document, key order kept, with what coverage decides when it is read:
    # `applicable` before `refill`, and (no coverage here) the flag no_payer_on_file.
    assert response.text == dumps(with_applicable(loads(stored), None, "rate-dose"))
    document = response.json()
    assert list(document)[: list(document).index("refill") + 1][-2:] == ["applicable", "refill"]
    assert document["applicable"] == {
        "payer": None,
        "payer_id": None,
        "profile": "rate-dose",
        "procedure": loads(stored)["codes"]["rate-dose"]["procedure"],
    }
    assert document["flags"][-1] == "no_payer_on_file"
    assert document["session_id"] == session_id
    for key in (
        "pump_serial",
        "prior_session_id",
        "refill",
        "changes",
        "codes",
        "supplies",
        "documentation",
        "flags",
    ):
        assert key in document
    assert [(e.actor, e.target) for e in exports(engine)] == [("cora", session_id)]


def test_an_unknown_session_is_404_json(coder: TestClient) -> None:
    response = coder.get("/api/sessions/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "no stored evidence for this session ID"}
    assert coder.get("/api/nothing").json() == {"detail": "Not Found"}


def test_the_openapi_document_describes_the_api(coder: TestClient) -> None:
    document = coder.get("/openapi.json").json()
    assert set(document["paths"]) == {
        "/api/sessions",
        "/api/sessions/{session_id}",
        "/api/sessions/{session_id}/decision",
        "/api/sessions/{session_id}/fhir",
    }
    decision = document["paths"]["/api/sessions/{session_id}/decision"]
    assert set(decision) == {"get", "put"}
    assert {"200", "401", "403", "404", "422"} <= set(decision["put"]["responses"])
    put_body = decision["put"]["requestBody"]["content"]["application/json"]["schema"]
    assert put_body["$ref"].endswith("/DecisionIn")
    required = document["components"]["schemas"]["DecisionIn"]["required"]
    assert set(required) == {"procedure", "diagnoses", "rendering_npi"}
    list_op = document["paths"]["/api/sessions"]["get"]
    names = {p["name"] for p in list_op["parameters"]}
    assert {
        "date_from",
        "date_to",
        "pump_serial",
        "patient_id",
        "profile",
        "procedure",
        "flag",
        "flagged",
        "sort",
        "limit",
        "cursor",
    } <= names
    assert {"200", "401", "400", "422"} <= set(list_op["responses"])
    one = document["paths"]["/api/sessions/{session_id}"]["get"]
    assert one["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/EvidenceOut"
    )
    schemes = document["components"]["securitySchemes"]
    assert any(s["type"] == "apiKey" and s["in"] == "cookie" for s in schemes.values())


def test_the_documented_enumerations_are_the_evidence_rooms(coder: TestClient) -> None:
    """The API offers exactly the codes and flags the evidence room can write."""
    assert set(DECISION_TABLE.values()) == set(PROCEDURE_CODES)
    document = coder.get("/openapi.json").json()
    parameters = {
        p["name"]: p["schema"] for p in document["paths"]["/api/sessions"]["get"]["parameters"]
    }

    def enum_of(schema: dict[str, typing.Any]) -> list[str]:
        for choice in schema.get("anyOf", [schema]):
            if "enum" in choice:
                return list(choice["enum"])
            if "items" in choice:
                return enum_of(choice["items"])
        raise AssertionError(f"no enum in {schema}")

    assert enum_of(parameters["procedure"]) == list(PROCEDURE_CODES)
    assert enum_of(parameters["flag"]) == list(SESSION_FLAGS)


def test_the_list_page_offers_the_evidence_rooms_codes_and_flags(coder: TestClient) -> None:
    page = coder.get("/sessions").text
    for code in PROCEDURE_CODES:
        assert f'<option value="{code}"' in page
    for flag in SESSION_FLAGS:
        assert f'value="{flag}"' in page


def test_list_dates_are_iso_dates_only(coder: TestClient) -> None:
    """A number is no date: pydantic alone would read 0.0 as 1970-01-01."""
    for bad in ("0.0", "17", "2026-3-4", "14.03.2026"):
        assert coder.get("/api/sessions", params={"date_from": bad}).status_code == 422
    assert coder.get("/api/sessions", params={"date_from": "2026-03-04"}).status_code == 200


def test_coverage_decides_the_applicable_code_at_once(
    coder: TestClient, data: DemoData, engine: Engine
) -> None:
    session_id = data.session_ids[5]
    with engine.connect() as connection:
        row = connection.execute(
            select(sessions.c.patient_id, sessions.c.session_start_local).where(
                sessions.c.session_id == session_id
            )
        ).one()
        stored = loads(evidence_document_text(connection, session_id) or "{}")
    with write_transaction(engine) as connection:
        add_payer(connection, "Acme", "any-setting", ["rate-dose", "any-setting"], payer_id="A1")
        assign_coverage(connection, row[0], "Acme", row[1].date())
    document = coder.get(f"/api/sessions/{session_id}").json()
    assert document["applicable"] == {
        "payer": "Acme",
        "payer_id": "A1",
        "profile": "any-setting",
        "procedure": stored["codes"]["any-setting"]["procedure"],
    }
    assert "no_payer_on_file" not in document["flags"]
    listed = coder.get("/api/sessions", params={"limit": 500}).json()["items"]
    item = next(i for i in listed if i["session_id"] == session_id)
    assert (item["payer"], item["applicable_profile"], item["applicable"]) == (
        "Acme",
        "any-setting",
        stored["codes"]["any-setting"]["procedure"],
    )
    assert "no_payer_on_file" not in item["flags"]
    others = [i for i in listed if i["session_id"] != session_id and i["evidence"]]
    assert all("no_payer_on_file" in i["flags"] and i["payer"] is None for i in others)
    # The read-time flag filters too.
    uncovered = coder.get(
        "/api/sessions", params={"limit": 500, "flag": "no_payer_on_file"}
    ).json()["items"]
    assert session_id not in {i["session_id"] for i in uncovered}
    assert len(uncovered) == len(others)
