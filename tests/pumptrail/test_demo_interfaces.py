"""From `make demo` to billing and the EHR: a visit signed off in the demo reaches a local
MLLP listener as a DFT^P03 that a strict second parser reads, and its FHIR bundle
validates against the official R4 schema."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from pumptrail.cli import main
from tests.evidence.test_dft import strict
from tests.fhir import profile_errors, schema_errors
from tests.ingest.mllp_receiver import MllpReceiver, always
from tests.pumptrail.test_demo import run_demo
from tests.web.support import csrf_of
from web.app import create_app
from web.context import WebConfig

DEMO_PASSWORD = "demo-password"


def test_a_demo_visit_signed_off_reaches_billing_and_the_ehr(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    result = run_demo(data_dir)
    assert result.returncode == 0, result.stderr
    url = f"sqlite:///{data_dir}/pumptrail.db"
    config = WebConfig.for_database(url, data_dir=data_dir, sync_codes_seconds=None)
    with TestClient(create_app(config)) as coder:
        page = coder.get("/login")
        login = coder.post(
            "/login",
            data={
                "username": "coder.demo",
                "password": DEMO_PASSWORD,
                "csrf_token": csrf_of(page.text),
            },
            follow_redirects=False,
        )
        assert login.status_code == 303, login.text
        listing = coder.get("/api/sessions?limit=200").json()
        refill = next(
            item["session_id"]
            for item in listing["items"]
            if any(
                s.get("hcpcs")
                for s in coder.get(f"/api/sessions/{item['session_id']}").json()["supplies"]
            )
        )
        proposal = coder.get(f"/api/sessions/{refill}/decision").json()
        signed = coder.put(
            f"/api/sessions/{refill}/decision",
            json={
                "procedure": proposal["applicable"]["procedure"],
                "diagnoses": ["G80.1", "Z45.1"],
                "rendering_npi": "1234567893",
            },
        )
        assert signed.status_code == 200, signed.text
        bundle = coder.get(f"/api/sessions/{refill}/fhir").json()
    assert schema_errors(bundle) == []
    assert profile_errors(bundle) == []
    charges = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ChargeItem"
    ]
    assert charges, "a signed-off refill has charge items"

    with MllpReceiver(always("AA")) as receiver:
        status = main(
            [
                "charges", "send", "--data-dir", str(data_dir), "--db", url,
                "--billing-mllp", receiver.address,
            ]
        )  # fmt: skip
    assert status == 0
    (control_id,) = receiver.received
    message = strict(receiver.messages[control_id])
    assert message.msh.msh_9.to_er7() == "DFT^P03^DFT_P03"
    ft1s = [group.ft1 for group in message.dft_p03_financial]
    assert len(ft1s) == len(charges)
    first = ft1s[0]
    assert first.ft1_6.to_er7() == "CG"
    assert first.ft1_25.to_er7() == f"{proposal['applicable']['procedure']}^^C4"
    assert [d.to_er7() for d in first.ft1_19] == ["G80.1^^I10", "Z45.1^^I10"]
    assert first.ft1_20.to_er7() == "1234567893^^^^^^^^^^^^NPI"
    assert any(f.ft1_25.to_er7().startswith("J") for f in ft1s[1:])
