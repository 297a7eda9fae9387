"""The payers page, the applicable code on the pages, and the list kept for the session."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from db import audit
from db.models import sessions
from tests.web.support import DemoData, csrf_of


def _entries(engine: Engine, action: str) -> list[audit.AuditEntry]:
    with engine.connect() as connection:
        return audit.show(connection, audit.AuditFilter(action=action, limit=None))


def _patient_and_day(engine: Engine, session_id: str) -> tuple[str, str]:
    with engine.connect() as connection:
        patient, start = connection.execute(
            select(sessions.c.patient_id, sessions.c.session_start_local).where(
                sessions.c.session_id == session_id
            )
        ).one()
    return str(patient), start.date().isoformat()


def _post(client: TestClient, path: str, **fields: str) -> object:
    token = csrf_of(client.get("/payers").text)
    return client.post(path, data={**fields, "csrf_token": token}, follow_redirects=False)


def test_a_coder_adds_a_payer_and_coverage_and_the_evidence_follows(
    coder: TestClient, data: DemoData, engine: Engine
) -> None:
    session_id = data.session_ids[2]
    patient, day = _patient_and_day(engine, session_id)
    before = coder.get(f"/sessions/{session_id}").text
    assert "no payer on file for the date of service" in before
    assert "flag-no_payer_on_file" in before

    response = _post(coder, "/payers", name="Acme", profile="any-setting", payer_id="A1")
    assert response.status_code == 303  # type: ignore[attr-defined]
    page = coder.get("/payers?done=payer_added").text
    assert "Payer added." in page
    assert "Any setting written, reservoir volume included" in page  # the profile's label
    response = _post(coder, "/payers/coverage", patient_id=patient, payer="acme", starts_on=day)
    assert response.status_code == 303  # type: ignore[attr-defined]

    after = coder.get(f"/sessions/{session_id}").text
    assert 'id="applicable-payer">Acme (payer ID A1)' in after
    assert (
        'id="applicable-profile">Any setting written, reservoir volume included '
        '<span class="mono muted">any-setting</span>'
    ) in after
    assert "flag-no_payer_on_file" not in after
    packet = coder.get(f"/sessions/{session_id}/packet").text
    assert "Acme (payer ID A1)" in packet

    added = _entries(engine, audit.COVERAGE_ADD)
    assert [(e.actor, e.target) for e in added] == [("cora", "coverage:1")]
    assert patient not in str(added[0].detail)
    assert [e.target for e in _entries(engine, audit.PAYER_ADD)] == ["payer:1"]


def test_overlaps_and_reversed_ranges_are_refused_on_the_page(
    coder: TestClient, engine: Engine
) -> None:
    _post(coder, "/payers", name="Acme", profile="rate-dose")
    assert _post(coder, "/payers/coverage", patient_id="P-9", payer="Acme", starts_on="2026-01-01")
    overlap = _post(
        coder, "/payers/coverage", patient_id="P-9", payer="Acme", starts_on="2026-06-01"
    )
    assert overlap.status_code == 400  # type: ignore[attr-defined]
    assert "overlaps" in overlap.text  # type: ignore[attr-defined]
    reversed_ = _post(
        coder,
        "/payers/coverage",
        patient_id="P-8",
        payer="Acme",
        starts_on="2026-02-01",
        ends_on="2026-01-01",
    )
    assert reversed_.status_code == 400  # type: ignore[attr-defined]
    assert "before it starts" in reversed_.text  # type: ignore[attr-defined]
    # Ending the open period makes room for the next one.
    ended = _post(coder, "/payers/coverage/1/end", ends_on="2026-05-31")
    assert ended.status_code == 303  # type: ignore[attr-defined]
    again = _post(coder, "/payers/coverage", patient_id="P-9", payer="Acme", starts_on="2026-06-01")
    assert again.status_code == 303  # type: ignore[attr-defined]
    assert [e.target for e in _entries(engine, audit.COVERAGE_END)] == ["coverage:1"]


def test_auditors_read_the_payers_page_but_cannot_change_it(
    auditor: TestClient, admin: TestClient, engine: Engine
) -> None:
    page = auditor.get("/payers")
    assert page.status_code == 200
    assert 'id="add-payer"' not in page.text
    refused = auditor.post(
        "/payers",
        data={"name": "X", "profile": "rate-dose", "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert refused.status_code == 403
    assert _entries(engine, audit.PAYER_ADD) == []
    assert 'id="add-payer"' in admin.get("/payers").text


def test_the_list_shows_the_applicable_code_and_keeps_its_filters(
    coder: TestClient, data: DemoData, engine: Engine
) -> None:
    session_id = data.session_ids[0]
    page = coder.get("/sessions", params={"profile": "any-setting", "flagged": "1"}).text
    assert "applicable-code" in page
    assert "no payer · rate-dose" in page
    # Back on the list without a query: the same filters and profile.
    again = coder.get("/sessions").text
    assert re.search(r'<option value="any-setting" selected>', again)
    assert 'name="flagged" value="1" checked' in again
    # The evidence page highlights the chosen profile and links back to the same list.
    evidence = coder.get(f"/sessions/{session_id}").text
    assert 'class="code-card  chosen" data-profile="any-setting"' in evidence
    assert 'href="/sessions?profile=any-setting&amp;flagged=1" id="back-to-list"' in evidence
    packet = coder.get(f"/sessions/{session_id}/packet").text
    assert 'href="/sessions?profile=any-setting&amp;flagged=1" id="back-to-list"' in packet
    # Clear forgets them.
    cleared = coder.get("/sessions", params={"clear": "1"}).text
    assert not re.search(r'<option value="any-setting" selected>', cleared)
    assert not re.search(r'<option value="any-setting" selected>', coder.get("/sessions").text)


def test_searches_ignore_case_and_find_a_patient_by_name(
    coder: TestClient, data: DemoData, engine: Engine
) -> None:
    session_id = data.session_ids[0]
    with engine.connect() as connection:
        patient, name = connection.execute(
            select(sessions.c.patient_id, sessions.c.patient_name).where(
                sessions.c.session_id == session_id
            )
        ).one()
    serial = next(s for s, ids in data.pumps.items() if session_id in ids)

    def ids(**params: str) -> set[str]:
        text = coder.get("/sessions", params={**params, "limit": "200"}).text
        return set(re.findall(r'class="session-link" href="/sessions/([0-9a-f-]{36})"', text))

    exact = ids(patient_id=patient)
    assert session_id in exact
    assert ids(patient_id=patient.lower()) == exact
    assert ids(patient_id=str(name).split()[-1].upper()) >= exact
    assert ids(pump_serial=serial.lower()) == ids(pump_serial=serial) == set(data.pumps[serial])


def test_a_reversed_date_range_says_so(coder: TestClient) -> None:
    page = coder.get("/sessions", params={"date_from": "2026-05-01", "date_to": "2026-04-01"})
    assert "the date range is reversed: From (2026-05-01) is after To (2026-04-01)" in page.text


def test_the_api_says_a_date_range_is_reversed(coder: TestClient) -> None:
    body = coder.get(
        "/api/sessions", params={"date_from": "2026-05-01", "date_to": "2026-04-01"}
    ).json()
    assert body["items"] == []
    assert body["notes"][0].startswith("the date range is reversed: date_from (2026-05-01)")
