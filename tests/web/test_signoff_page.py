"""Sign-off on the evidence page and the bulk action on the list: the applicable code
preselected, an override refused without a reason and kept with one, field errors
next to their fields, versions shown, auditors without the form, clean visits only
in bulk, and the audit entries."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from db import audit
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
