"""Sign-off on the evidence page and the bulk action on the list: the applicable code
preselected, an override refused without a reason and kept with one, field errors
next to their fields, versions shown, auditors without the form, clean visits only
in bulk, and the audit entries."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from db import audit
from db.engine import write_transaction
from db.models import sessions
from db.payers import add_payer, add_provider, assign_coverage
from tests.web.support import DemoData, csrf_of
from tests.web.test_pages import audit_entries

NPI = "1234567893"


def applicable_of(client: TestClient, session_id: str) -> str:
    answer = client.get(f"/api/sessions/{session_id}/decision").json()
    code: str = answer["applicable"]["procedure"]
    return code


def form_fields(html: str) -> dict[str, Any]:
    """The sign-off form's fields as a browser would post them unchanged."""
    form = html[html.index('id="sign-off-form"') :]
    form = form[: form.index("</form>")]
    selected = re.search(r'<option value="([^"]+)" selected', form)
    fields: dict[str, Any] = {
        "csrf_token": csrf_of(html),
        "procedure": selected.group(1) if selected else "",
    }
    for name in ("reason", "diagnoses", "modifiers", "rendering_npi"):
        found = re.search(rf'name="{name}"[^>]*value="([^"]*)"', form)
        fields[name] = found.group(1) if found else ""
    for name in ("drug_hcpcs", "drug_units", "drug_discarded_units", "drug_ndc"):
        fields[name] = re.findall(rf'name="{name}" value="([^"]*)"', form)
    return fields


def post(client: TestClient, session_id: str, **changes: Any) -> Any:
    fields = {**form_fields(client.get(f"/sessions/{session_id}").text), **changes}
    return client.post(f"/sessions/{session_id}/decision", data=fields, follow_redirects=False)


def test_the_form_preselects_the_applicable_code_and_offers_the_usual_diagnoses(
    coder: TestClient, data: DemoData
) -> None:
    session_id = data.session_ids[-1]
    code = applicable_of(coder, session_id)
    page = coder.get(f"/sessions/{session_id}").text
    assert 'id="sign-off-form"' in page and "Not signed off yet." in page
    assert form_fields(page)["procedure"] == code
    assert f"{code} (applicable)" in page
    datalist = page[page.index('<datalist id="common-diagnoses">') :]
    offered = re.findall(r'<option value="([^"]+)"', datalist[: datalist.index("</datalist>")])
    assert offered == ["G89.4", "G89.29", "G89.3", "G80.1", "R25.2", "Z45.1"]
    # The decision section comes before the codes under every profile.
    assert page.index('id="decision"') < page.index('id="codes"')


def test_accepting_the_applicable_code_stores_version_1_and_shows_it(
    coder: TestClient, data: DemoData, engine: Engine
) -> None:
    session_id = data.session_ids[-1]
    code = applicable_of(coder, session_id)
    response = post(coder, session_id, diagnoses="g89.4, Z45.1", rendering_npi=NPI)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == f"/sessions/{session_id}?signed=1#decision"
    page = coder.get(response.headers["location"]).text
    assert "Visit signed off (version 1)." in page
    assert 'data-version="1"' in page and "G89.4, Z45.1" in page
    stored = coder.get(f"/api/sessions/{session_id}/decision").json()["current"]
    assert stored["version"] == 1 and stored["signed_by"] == "cora"
    assert stored["procedure"] == code and stored["diagnoses"] == ["G89.4", "Z45.1"]
    (entry,) = audit_entries(engine, audit.SIGN_OFF)
    assert entry.actor == "cora" and entry.target == session_id
    assert entry.detail["route"] == "/sessions/{session_id}/decision"
    assert entry.detail["override"] is False


def test_an_override_without_a_reason_comes_back_with_the_error_next_to_the_field(
    coder: TestClient, data: DemoData, engine: Engine
) -> None:
    session_id = data.session_ids[-1]
    code = applicable_of(coder, session_id)
    other = "62367" if code != "62367" else "62368"
    refused = post(coder, session_id, procedure=other, diagnoses="G89.4", rendering_npi=NPI)
    assert refused.status_code == 422
    assert 'id="error-reason"' in refused.text
    assert 'id="decision-errors"' in refused.text
    # The submitted values are kept.
    assert form_fields(refused.text)["procedure"] == other
    assert form_fields(refused.text)["diagnoses"] == "G89.4"
    assert audit_entries(engine, audit.SIGN_OFF) == []

    accepted = post(
        coder,
        session_id,
        procedure=other,
        reason="payer counts only rate changes",
        diagnoses="G89.4",
        rendering_npi=NPI,
    )
    assert accepted.status_code == 303, accepted.text
    answer = coder.get(f"/api/sessions/{session_id}/decision").json()
    assert answer["current"]["procedure"] == other
    assert answer["current"]["reason"] == "payer counts only rate changes"
    (entry,) = audit_entries(engine, audit.SIGN_OFF)
    assert entry.detail["override"] is True


def test_every_change_is_a_new_version_and_earlier_ones_stay_visible(
    coder: TestClient, auditor: TestClient, data: DemoData
) -> None:
    session_id = data.session_ids[-1]
    assert post(coder, session_id, diagnoses="G89.4", rendering_npi=NPI).status_code == 303
    # The form starts from the current version the second time.
    assert form_fields(coder.get(f"/sessions/{session_id}").text)["diagnoses"] == "G89.4"
    second = post(coder, session_id, diagnoses="G89.29, R25.2")
    assert second.headers["location"].endswith("?signed=2#decision")
    page = coder.get(f"/sessions/{session_id}").text
    assert 'data-version="1"' in page and 'data-version="2"' in page
    assert "version 2 by cora" in page
    seen = auditor.get(f"/sessions/{session_id}").text
    assert "version 2 by cora" in seen and 'data-version="1"' in seen
    assert 'id="sign-off-form"' not in seen


def test_wrong_fields_are_named_next_to_them(coder: TestClient, data: DemoData) -> None:
    session_id = data.session_ids[-1]
    response = post(coder, session_id, diagnoses="g894x", rendering_npi="1234567890")
    assert response.status_code == 422
    assert 'id="error-diagnoses"' in response.text
    assert 'id="error-rendering_npi"' in response.text
    assert 'id="error-reason"' not in response.text


def test_a_drug_line_error_is_shown_on_its_line(coder: TestClient, data: DemoData) -> None:
    session_id = next(
        s
        for s in reversed(data.session_ids)
        if coder.get(f"/api/sessions/{s}/decision").json()["applicable"]
        and form_fields(coder.get(f"/sessions/{s}").text)["drug_hcpcs"]
    )
    fields = form_fields(coder.get(f"/sessions/{session_id}").text)
    units = ["0", *fields["drug_units"][1:]]
    response = post(coder, session_id, diagnoses="G89.4", rendering_npi=NPI, drug_units=units)
    assert response.status_code == 422
    line = response.text[response.text.index('class="drug-row"') :]
    line = line[: line.index("</tr>")]
    assert 'class="field-error"' in line
    assert 'name="drug_units" value="0"' in line


def test_an_auditor_cannot_post_a_sign_off(auditor: TestClient, data: DemoData) -> None:
    session_id = data.session_ids[-1]
    token = csrf_of(auditor.get("/sessions").text)
    response = auditor.post(
        f"/sessions/{session_id}/decision",
        data={"csrf_token": token, "procedure": "62367", "diagnoses": "G89.4"},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert auditor.get(f"/api/sessions/{session_id}/decision").json()["versions"] == []


def test_a_sign_off_without_the_csrf_token_is_refused(coder: TestClient, data: DemoData) -> None:
    session_id = data.session_ids[-1]
    fields = form_fields(coder.get(f"/sessions/{session_id}").text)
    fields.update(csrf_token="forged", diagnoses="G89.4", rendering_npi=NPI)
    response = coder.post(f"/sessions/{session_id}/decision", data=fields, follow_redirects=False)
    assert response.status_code in (400, 403)
    assert coder.get(f"/api/sessions/{session_id}/decision").json()["versions"] == []


# ---------------------------------------------------------------------------
# The bulk action on the list


def cover_everyone(engine: Engine) -> None:
    """Coverage for every fixture patient and a physician for every operator ID, so
    visits without other flags are clean."""
    with write_transaction(engine) as connection:
        add_payer(connection, "Lakeside Health Plan", "any-setting", ["any-setting"])
        rows = connection.execute(
            select(sessions.c.patient_id, sessions.c.operator_id).distinct()
        ).all()
        for patient in sorted({str(r[0]) for r in rows if r[0]}):
            assign_coverage(connection, patient, "Lakeside Health Plan", date(2000, 1, 1))
        for operator in sorted({str(r[1]) for r in rows}):
            add_provider(connection, operator, npi=NPI, name=f"Dr {operator}", role="physician")


def listed(client: TestClient) -> tuple[list[str], list[str]]:
    """The list's selectable session IDs, and every session ID shown."""
    page = client.get("/sessions?limit=100").text
    return (
        re.findall(r'name="session_id" value="([^"]+)"', page),
        re.findall(r'class="session-link" href="/sessions/([^"]+)"', page),
    )


def bulk(client: TestClient, session_ids: list[str], diagnoses: str = "G89.4") -> Any:
    token = csrf_of(client.get("/sessions").text)
    return client.post(
        "/sessions/sign-off",
        data={"csrf_token": token, "session_id": session_ids, "diagnoses": diagnoses},
    )


def test_only_visits_without_flags_can_be_ticked(coder: TestClient, engine: Engine) -> None:
    selectable, shown = listed(coder)
    assert selectable == []  # no coverage on file: every visit has a flag
    cover_everyone(engine)
    selectable, shown = listed(coder)
    assert selectable and set(selectable) < set(shown)
    for session_id in selectable:
        assert coder.get(f"/api/sessions/{session_id}").json()["flags"] == []


def test_bulk_signs_the_clean_visits_with_their_applicable_codes(
    coder: TestClient, engine: Engine
) -> None:
    cover_everyone(engine)
    selectable, _shown = listed(coder)
    chosen = selectable[:3]
    response = bulk(coder, chosen, "g89.4, Z45.1")
    assert response.status_code == 200, response.text
    assert f"{len(chosen)} visits signed off." in response.text
    for session_id in chosen:
        answer = coder.get(f"/api/sessions/{session_id}/decision").json()
        assert answer["current"]["version"] == 1
        assert answer["current"]["procedure"] == answer["applicable"]["procedure"]
        assert answer["current"]["diagnoses"] == ["G89.4", "Z45.1"]
        assert answer["current"]["rendering_npi"] == NPI
    entries = audit_entries(engine, audit.SIGN_OFF)
    assert sorted(e.target for e in entries) == sorted(chosen)
    assert all(e.detail["bulk"] is True and e.actor == "cora" for e in entries)


def test_bulk_refuses_a_flagged_visit_sent_anyway(
    coder: TestClient, data: DemoData, engine: Engine
) -> None:
    cover_everyone(engine)
    selectable, shown = listed(coder)
    flagged = next(s for s in shown if s not in selectable)
    response = bulk(coder, [selectable[0], flagged])
    assert response.status_code == 200
    assert "1 visit signed off, 1 refused." in response.text
    refused = response.text[response.text.index('id="bulk-refused"') :]
    assert flagged in refused and "has flags" in refused
    assert coder.get(f"/api/sessions/{flagged}/decision").json()["versions"] == []
    assert [e.target for e in audit_entries(engine, audit.SIGN_OFF)] == [selectable[0]]


def test_bulk_refuses_a_visit_already_signed_and_bad_diagnoses(
    coder: TestClient, engine: Engine
) -> None:
    cover_everyone(engine)
    selectable, _shown = listed(coder)
    assert "1 visit signed off." in bulk(coder, selectable[:1]).text
    again = bulk(coder, selectable[:2], "nonsense")
    assert "0 visits signed off, 2 refused." in again.text
    assert "already signed off (version 1)" in again.text
    assert "diagnoses[0]" in again.text
    assert len(audit_entries(engine, audit.SIGN_OFF)) == 1


def test_bulk_is_for_coders_and_admins(auditor: TestClient, engine: Engine) -> None:
    cover_everyone(engine)
    page = auditor.get("/sessions").text
    assert 'id="bulk-sign-off"' not in page and 'name="session_id"' not in page
    response = bulk(auditor, ["anything"])
    assert response.status_code == 403
    assert audit_entries(engine, audit.SIGN_OFF) == []


def test_bulk_without_a_ticked_visit_says_so(coder: TestClient) -> None:
    response = bulk(coder, [])
    assert response.status_code == 400
    assert "No visit was ticked" in response.text
