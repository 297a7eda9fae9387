"""Charge lines of signed-off visits: `pumptrail charges export` and the Charges page."""

from __future__ import annotations

import csv
import io
import socket
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


def charges_cli(data: DemoData, *args: str) -> int:
    return main(["charges", *args, "--db", data.url, "--data-dir", str(data.root)])


def test_sign_off_queues_hl7_and_the_page_and_cli_follow_billing_answers(
    coder: TestClient,
    data: DemoData,
    engine: Engine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from db import outbox
    from tests.ingest.mllp_receiver import MllpReceiver, always

    session_id = data.session_ids[-1]
    sign(coder, session_id)
    with engine.connect() as connection:
        (message,) = outbox.list_messages(connection)
    assert (message.session_id, message.version, message.kind) == (session_id, 1, "charges")
    assert (
        '<span class="status status-ready">ready</span>'
        in coder.get("/charges?since=2000-01-01").text
    )
    # Billing not configured: the command cannot send (2); unreachable: 1, still queued.
    assert charges_cli(data, "send") == 2
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"
    assert charges_cli(data, "send", "--billing-mllp", closed) == 1
    assert "stays queued" in capsys.readouterr().err
    with MllpReceiver(always("AR")) as receiver:
        assert charges_cli(data, "send", "--billing-mllp", receiver.address) == 0
    assert receiver.received == [message.control_id]
    page = coder.get("/charges?since=2000-01-01").text
    assert "status-rejected" in page and "AR: unknown provider (AR)" in page
    capsys.readouterr()
    assert charges_cli(data, "list", "--status", "rejected") == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2 and listed[1].startswith(f"{message.id}\t")
    assert listed[1].endswith("\trejected\t2\tAR unknown provider (AR)")
    assert charges_cli(data, "resend", "999") == 1
    assert charges_cli(data, "resend", str(message.id)) == 0
    (entry,) = audit_entries(engine, audit.CHARGES_RESEND)
    assert entry.detail["control_id"] == message.control_id
    assert charges_cli(data, "resend", str(message.id)) == 1
    with MllpReceiver(always("AA")) as receiver:
        assert charges_cli(data, "send", "--billing-mllp", receiver.address) == 0
        # Acknowledged: a further pass sends nothing.
        assert charges_cli(data, "send", "--billing-mllp", receiver.address) == 0
    assert receiver.received == [message.control_id]
    assert "status-acknowledged" in coder.get("/charges?since=2000-01-01").text
