"""The safety flags on the pages: list filter, evidence page, packet, timeline (docs/coding-rules.md §8.3)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from db.queries import evidence_document_text
from evidence import load_rules
from fixtures.binary_writer import encode_binary
from fixtures.csv_writer import encode_csv
from fixtures.scenarios import troubled_pump
from ingest.pipeline import Importer
from ingest.rawstore import RawStore
from tests.web.support import DemoData
from web.charts import SAFETY_FLAGS
from web.present import flag_views

UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
SERIAL = "ITP20-555001"


@dataclass(frozen=True)
class Troubled:
    session_ids: list[str]  # chain order
    dry: str  # the visit that found the pump run dry


def listed(page: str) -> list[str]:
    return re.findall(rf'class="session-link" href="/sessions/({UUID_RE})"', page)


def flags_of(engine: Engine, session_id: str) -> list[str]:
    with engine.connect() as connection:
        text = evidence_document_text(connection, session_id)
    assert text is not None
    return list(json.loads(text)["flags"])


@pytest.fixture
def troubled(data: DemoData, engine: Engine) -> Troubled:
    """The demo's troubled pump imported beside the web fixtures' pumps."""
    importer = Importer(engine, RawStore(data.raw_store, durable=False), load_rules())
    ids: list[str] = []
    exports = troubled_pump(random.Random(5), start=datetime(2025, 11, 12, 10, 15), serial=SERIAL)
    for n, export in enumerate(exports):
        if export.fmt == "psl-csv":
            blob, name = encode_csv(export.scenario), f"troubled-{n}.csv"
        else:
            blob, name = encode_binary(export.scenario), f"troubled-{n}.psl"
        result = importer.import_bytes(blob, name=name)
        # The second export of a visit is a duplicate (here a conflicting one).
        expected = "duplicate" if export.fmt == "psl-csv" else "imported"
        assert result.outcome == expected, result.detail
        if result.session_id is not None and result.session_id not in ids:
            ids.append(result.session_id)
    assert len(ids) == 5
    return Troubled(ids, ids[-1])


def test_the_troubled_pump_raises_both_safety_flags_once(
    troubled: Troubled, engine: Engine
) -> None:
    assert flags_of(engine, troubled.dry) == [
        "critical_alarm",
        "reservoir_depleted",
        "refill_overdue",
    ]
    for session_id in troubled.session_ids[:-1]:
        assert not set(SAFETY_FLAGS) & set(flags_of(engine, session_id))


@pytest.mark.parametrize("flag", ["reservoir_depleted", "refill_overdue"])
def test_the_list_filters_by_each_safety_flag(
    flag: str, coder: TestClient, data: DemoData, engine: Engine, troubled: Troubled
) -> None:
    page = coder.get("/sessions", params={"flag": flag})
    assert page.status_code == 200
    assert f'name="flag" value="{flag}"' in page.text  # offered as a filter
    expected = {s for s in data.session_ids + troubled.session_ids if flag in flags_of(engine, s)}
    assert troubled.dry in expected
    assert set(listed(page.text)) == expected
    # Combined with a flag the dry visit does not have: only sessions with both.
    both = coder.get("/sessions", params=[("flag", flag), ("flag", "no_prior_session")])
    assert troubled.dry not in listed(both.text)


def test_the_evidence_page_shows_safety_flags_first(coder: TestClient, troubled: Troubled) -> None:
    page = coder.get(f"/sessions/{troubled.dry}").text
    banner = re.search(r'<section class="flags-banner".*?</section>', page, re.S)
    assert banner is not None
    shown = re.findall(r'class="banner banner-(\w+) flag-(\w+)"', banner.group(0))
    # The safety flags lead; `no_payer_on_file` (no coverage in this fixture) follows.
    assert shown == [
        ("danger", "critical_alarm"),
        ("danger", "reservoir_depleted"),
        ("danger", "refill_overdue"),
        ("info", "no_payer_on_file"),
    ]
    # Above every other section of the evidence, the critical-alarm box included.
    assert page.index('id="flags"') < page.index('id="critical-alarms"')
    assert "baclofen withdrawal is an emergency" in page
    # The printable packet carries the same banner.
    packet = coder.get(f"/sessions/{troubled.dry}/packet").text
    assert 'class="banner banner-danger flag-reservoir_depleted"' in packet
    assert 'class="banner banner-danger flag-refill_overdue"' in packet


def test_safety_flags_sort_before_warnings_whatever_the_input_order() -> None:
    views = flag_views(
        ["changed_outside_sessions", "no_prior_session", "refill_overdue", "reservoir_depleted"]
    )
    assert [(v.flag, v.level) for v in views] == [
        ("refill_overdue", "danger"),
        ("reservoir_depleted", "danger"),
        ("changed_outside_sessions", "warn"),
        ("no_prior_session", "info"),
    ]


def test_the_pdf_packet_names_the_safety_flags(coder: TestClient, troubled: Troubled) -> None:
    if shutil.which("pdftotext") is None:
        if os.environ.get("CI"):
            pytest.fail("pdftotext (Debian poppler-utils) is required in CI")
        pytest.skip("pdftotext (Debian poppler-utils) not installed")
    pdf = coder.get(f"/sessions/{troubled.dry}/packet.pdf").content
    text = subprocess.run(
        ["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True, timeout=60
    ).stdout.decode()
    flat = " ".join(text.split())
    assert "(reservoir_depleted)" in flat and "(refill_overdue)" in flat
    assert flat.index("(critical_alarm)") < flat.index("(reservoir_depleted)")
    assert flat.index("(reservoir_depleted)") < flat.index("(refill_overdue)")


def test_the_timeline_marks_the_flagged_session(coder: TestClient, troubled: Troubled) -> None:
    page = coder.get(f"/pumps/{SERIAL}")
    assert page.status_code == 200
    svgs = re.findall(r"<svg class=\"chart\".*?</svg>", page.text, re.S)
    assert len(svgs) == 2
    for svg in svgs:
        marks = re.findall(
            r'<a class="safety-link" href="/sessions/([^"]+)" data-flags="([^"]+)"', svg
        )
        assert marks == [(troubled.dry, "reservoir_depleted refill_overdue")]
        assert "reservoir depleted, refill overdue" in svg


def test_a_timeline_without_safety_flags_has_no_marks(
    coder: TestClient, data: DemoData, engine: Engine
) -> None:
    for serial, ids in data.pumps.items():
        if not any(set(SAFETY_FLAGS) & set(flags_of(engine, s)) for s in ids):
            page = coder.get(f"/pumps/{serial}")
            assert 'class="chart"' in page.text
            assert "safety-link" not in page.text
            return
    pytest.fail("every fixture pump has a safety flag: the test has nothing to check")
