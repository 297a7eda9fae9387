"""Charge lines of signed-off visits: `pumptrail charges export` and the Charges page."""

from __future__ import annotations

import csv
import io
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from db import audit
from evidence.charges import CSV_COLUMNS
from pumptrail.cli import main
from tests.web.support import DemoData
from tests.web.test_pages import audit_entries
from tests.web.test_signoff import NPI, applicable, body


def sign(client: TestClient, session_id: str, **fields: object) -> dict[str, object]:
    code = applicable(client, session_id)
    response = client.put(
        f"/api/sessions/{session_id}/decision", json=body(procedure=code, **fields)
    )
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def test_export_writes_one_line_per_code_and_drug_with_jw(
    coder: TestClient,
    data: DemoData,
    engine: Engine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    refills = [
        s
        for s in reversed(data.session_ids)
        if any(x.get("hcpcs") for x in coder.get(f"/api/sessions/{s}").json()["supplies"])
    ]
    first, second = refills[0], refills[1]
    signed = sign(coder, first)
    drugs = signed["drugs"]
    assert isinstance(drugs, list)
    wasted = [{"hcpcs": d["hcpcs"], "units": d["units"], "discarded_units": 3} for d in drugs]
    sign(coder, second, drugs=wasted)
    output = tmp_path / "charges.csv"
    assert (
        main(
            [
                "charges", "export", "--since", "2000-01-01", "--db", data.url,
                "--data-dir", str(data.root), "--output", str(output),
            ]
        )
        == 0
    )  # fmt: skip
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    rows = list(csv.DictReader(io.StringIO(output.read_text())))
    assert list(rows[0]) == list(CSV_COLUMNS)
    by_session: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_session.setdefault(row["session_id"], []).append(row)
    assert set(by_session) == {first, second}
    for session_id, lines in by_session.items():
        assert lines[0]["code"] == applicable(coder, session_id)
        assert lines[0]["rendering_npi"] == NPI and lines[0]["diagnosis_1"] == "G89.4"
        assert [int(r["line"]) for r in lines] == list(range(1, len(lines) + 1))
    drug_rows = [r for r in by_session[first] if r["code"].startswith("J")]
    assert all(r["modifier_1"] == "JZ" for r in drug_rows)
    assert drug_rows
    # Discarded units: the drug line loses JZ and a JW line with those units follows it.
    wasted_rows = [r for r in by_session[second] if r["code"].startswith("J")]
    assert [r["modifier_1"] for r in wasted_rows][:2] == ["", "JW"]
    assert wasted_rows[1]["units"] == "3" and wasted_rows[1]["code"] == wasted_rows[0]["code"]
    (entry,) = audit_entries(engine, audit.EXPORT_CHARGES)
    assert sorted(entry.detail["session_ids"]) == sorted([first, second])
    assert entry.detail["filters"] == {"since": "2000-01-01", "format": "csv"}
    capsys.readouterr()
    assert main(["charges", "export", "--since", "2999-01-01", "--db", data.url]) == 0
    assert capsys.readouterr().out.splitlines() == [",".join(CSV_COLUMNS)]


def test_the_charges_page_lists_ready_lines(coder: TestClient, data: DemoData) -> None:
    session_id = data.session_ids[-1]
    sign(coder, session_id)
    page = coder.get("/charges?since=2000-01-01")
    assert page.status_code == 200
    assert session_id in page.text and "ready" in page.text
    assert applicable(coder, session_id) in page.text


def test_the_charges_page_offers_the_same_csv_as_the_command(
    coder: TestClient, data: DemoData, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    session_id = data.session_ids[-1]
    sign(coder, session_id)
    page = coder.get("/charges?since=2000-01-01").text
    assert 'href="/charges.csv?since=2000-01-01"' in page
    download = coder.get("/charges.csv?since=2000-01-01")
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    capsys.readouterr()
    assert main(["charges", "export", "--since", "2000-01-01", "--db", data.url]) == 0
    assert download.text == capsys.readouterr().out
    exports = audit_entries(engine, audit.EXPORT_CHARGES)
    assert exports[0].actor == "cora" and exports[0].detail["session_ids"] == [session_id]
    assert coder.get("/charges.csv?since=yesterday").status_code == 404
