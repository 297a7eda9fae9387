"""What the pages say: units, labels, the three-column table, charts, the PDF packet."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from sqlalchemy import Engine

from evidence import load_rules
from tests.web.support import DemoData
from web import present
from web.charts import Point, Series, nice_step, render_chart, time_ticks, timeline_charts
from web.packet import render_pdf
from web.pages import build_evidence_view
from web.queries import pump_timeline


@pytest.mark.parametrize(
    ("microlitres", "text"),
    [
        (20000, "20 mL"),
        (3400, "3.4 mL"),
        (1, "0.001 mL"),
        (23423, "23.423 mL"),
        (0, "0 mL"),
        (None, "—"),
    ],
)
def test_volumes_read_in_exact_millilitres(microlitres: int | None, text: str) -> None:
    assert present.ml(microlitres) == text


@pytest.mark.parametrize(
    ("name", "value", "text"),
    [
        ("drug1_daily_dose", 5320, "5,320 µg/day"),
        ("drug1_concentration", 10000, "10,000 µg/mL"),
        ("reservoir_volume", 40000, "40 mL"),
        ("infusion_rate", 266, "266 µL/day"),
        ("ptm_lockout", 60, "60 min"),
        ("ptm_enabled", True, "on"),
        ("low_reservoir_alarm_enabled", False, "off"),
        ("infusion_mode", "simple_continuous", "simple continuous"),
        ("flex_step_0", {"start_minute": 360, "rate_ul_per_day": 480}, "from 06:00: 480 µL/day"),
        ("refill_date", "2026-05-13", "2026-05-13"),
        ("refill_date", None, "—"),
        ("drug1_name", "Morphine", "Morphine"),
        ("unknown_param", 7, "7"),
    ],
)
def test_setting_values_in_their_units(name: str, value: object, text: str) -> None:
    assert present.format_value(name, value) == text


def test_local_time_and_offsets() -> None:
    assert present.local_time("2026-03-14T14:32:10Z", -300) == datetime(2026, 3, 14, 9, 32, 10)
    assert present.local_time("not a time", 0) is None
    assert present.local_time(None, 0) is None
    assert present.offset_text(-300) == "UTC−05:00"
    assert present.offset_text(330) == "UTC+05:30"
    assert present.position_text("offset", 420) == "offset 0x1A4"
    assert present.position_text("line", 17) == "line 17"


def _doc() -> dict[str, object]:
    return {
        "utc_offset_min": 60,
        "operator": {"id": "dr.lee", "role": "physician"},
        "programmed_at_utc": "2026-01-18T07:22:20Z",
        "interrogated": {"drug1_daily_dose": 2000, "reservoir_volume": 5000, "ptm_lockout": 60},
        "programmed": {"drug1_daily_dose": 2200, "reservoir_volume": 20000},
        "events": [
            {
                "type": "change",
                "time_utc": "2026-01-18T07:10:00Z",
                "parameter": "drug1_daily_dose",
                "old": 2000,
                "new": 2100,
                "reason": "side_effects",
            },
            {
                "type": "change",
                "time_utc": "2026-01-18T07:12:00Z",
                "parameter": "drug1_daily_dose",
                "old": 2100,
                "new": 2200,
                "reason": "efficacy",
            },
        ],
    }


def _evidence() -> dict[str, object]:
    return {
        "changes": [
            {
                "parameter": "ptm_lockout",
                "category": "ptm",
                "before": 30,
                "after": 60,
                "when": "between_sessions",
                "reason": None,
                "flags": ["changed_outside_sessions"],
            },
            {
                "parameter": "drug1_daily_dose",
                "category": "prescription",
                "before": 2000,
                "after": 2200,
                "when": "in_session",
                "reason": "efficacy",
                "flags": [],
            },
            {
                "parameter": "reservoir_volume",
                "category": "reservoir",
                "before": 5000,
                "after": 20000,
                "when": "in_session",
                "reason": "refill_bookkeeping",
                "flags": ["unlogged_change"],
            },
        ],
        "flags": ["no_prior_session", "critical_alarm", "chain_gap"],
    }


def test_each_change_has_its_reason_time_and_operator() -> None:
    views = {v.parameter: v for v in present.change_views(_doc(), _evidence())}
    dose = views["drug1_daily_dose"]
    assert (dose.before, dose.after, dose.reason) == ("2,000 µg/day", "2,200 µg/day", "efficacy")
    assert dose.time == "2026-01-18 08:12:00"  # the last logged change, local clock
    assert dose.operator == "dr.lee (physician)" and dose.edits == 2
    outside = views["ptm_lockout"]
    assert outside.time == "between sessions" and outside.operator == "not in a recorded session"
    assert outside.reason == "—"
    unlogged = views["reservoir_volume"]
    assert unlogged.time == "2026-01-18 08:22:20 (transmission)"


def test_the_three_columns_mark_changed_cells_by_category() -> None:
    doc = _doc()
    prior = {
        "interrogated": {"drug1_daily_dose": 2000, "ptm_lockout": 10},
        "programmed": {"ptm_lockout": 30},
    }
    changes = present.change_views(doc, _evidence())
    table = present.state_table(doc, _evidence(), prior, "prior-id", changes)
    rows = {r.parameter: r for r in table.rows}
    assert table.has_prior and table.has_programmed and table.prior_session_id == "prior-id"
    # Prior programmed = the prior session's end state (interrogated + programmed).
    assert rows["ptm_lockout"].prior.text == "30 min"
    assert (rows["ptm_lockout"].interrogated.mark, rows["ptm_lockout"].interrogated.category) == (
        "changed",
        "ptm",
    )
    assert rows["ptm_lockout"].programmed.mark == "" and rows["ptm_lockout"].programmed.muted
    assert rows["drug1_daily_dose"].programmed.mark == "changed"
    assert rows["drug1_daily_dose"].programmed.category == "prescription"
    assert "efficacy" in rows["drug1_daily_dose"].programmed.note
    assert rows["reservoir_volume"].programmed.category == "reservoir"
    # Parameter-table order, only parameters that appear somewhere.
    assert [r.parameter for r in table.rows] == [
        "drug1_daily_dose",
        "ptm_lockout",
        "reservoir_volume",
    ]


def test_flags_sort_danger_first_and_checklist_splits() -> None:
    flags = present.flag_views(["no_prior_session", "chain_gap", "critical_alarm"])
    assert [f.flag for f in flags] == ["critical_alarm", "chain_gap", "no_prior_session"]
    checklist = present.checklist(
        {
            "documentation": [
                {"item": "reservoir_status", "status": "proven_by_log", "group": "analysis"},
                {"item": "drug_lot_ndc", "status": "note_must_state", "group": "refill"},
                {"item": "new_reservoir_volume", "status": "missing_from_log", "group": "refill"},
            ]
        }
    )
    assert [i.item for i in checklist.proven] == ["reservoir_status"]
    assert [i.item for i in checklist.note_must_state] == ["drug_lot_ndc", "new_reservoir_volume"]


def test_refill_arithmetic_direction() -> None:
    view = present.refill_view(
        {
            "refill": {
                "expected_residual_ul": 3400,
                "recomputed_expected_ul": 3350,
                "aspirated_ul": 1100,
                "added_ul": 40000,
                "new_volume_ul": 40000,
                "discrepancy_ul": 2300,
                "discrepancy_threshold_ul": 2000,
            },
            "flags": ["discrepancy_over_threshold"],
        }
    )
    assert view is not None and view.over_threshold
    assert (view.expected, view.aspirated, view.discrepancy, view.threshold) == (
        "3.4 mL",
        "1.1 mL",
        "2.3 mL",
        "2 mL",
    )
    assert "over-infusion or a previous pocket fill" in view.direction
    assert present.refill_view({"refill": None}) is None


# ---------------------------------------------------------------------------
# Charts


def test_nice_steps_and_time_ticks() -> None:
    assert nice_step(100) == 20 and nice_step(7) == 2 and nice_step(0) == 1
    weekly = time_ticks(datetime(2026, 1, 1), datetime(2026, 2, 1))
    assert [t.weekday() for t, _ in weekly] == [0] * len(weekly) and len(weekly) == 4
    monthly = time_ticks(datetime(2025, 1, 10), datetime(2025, 12, 20))
    assert [label for _t, label in monthly][:2] == ["Feb", "Mar"]
    yearly = time_ticks(datetime(2020, 1, 1), datetime(2026, 1, 1))
    assert all(label.startswith("Jan") for _t, label in yearly)


def test_chart_text_is_escaped() -> None:
    svg = render_chart(
        title="dose <b>",
        unit="µg/day",
        series=[
            Series(
                'Drug "<x>"',
                "s1",
                [Point(datetime(2026, 1, 1), 10, "a&b", "<label>")],
                step=True,
            )
        ],
        start=datetime(2025, 12, 1),
        end=datetime(2026, 2, 1),
    )
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    assert "<x>" not in svg and "&lt;label&gt;" in svg
    assert 'href="/sessions/a&amp;b"' in svg


def test_the_timeline_charts_every_session(engine: Engine, data: DemoData) -> None:
    serial, ids = next(iter(data.pumps.items()))
    with engine.connect() as connection:
        found = pump_timeline(connection, serial)
    assert found is not None
    _pump, entries = found
    dose, reservoir = timeline_charts(entries)
    assert len(re.findall(r'<circle class="dot s1"', dose)) == len(ids)
    # Reservoir: interrogated and left-behind volumes, linked to their sessions.
    assert set(re.findall(r'href="/sessions/([^"]+)"', reservoir)) == set(ids)
    assert "low-reservoir alarm volume" in reservoir
    assert timeline_charts([]) == []


# ---------------------------------------------------------------------------
# The PDF packet


def test_the_pdf_carries_the_codes_hashes_and_versions(engine: Engine, data: DemoData) -> None:
    session_id = data.session_ids[-1]
    with engine.connect() as connection:
        view = build_evidence_view(connection, session_id, load_rules(), software_version="9.9.9")
    assert view is not None
    pdf = render_pdf(
        view,
        generated_at=datetime(2026, 1, 2, 3, 4, 5),
        generated_by="cora",
        packet_id="PKT-TEST-1",
        fonts_dir=None,
        compress=False,
    )
    assert pdf.startswith(b"%PDF-")
    text = pdf  # uncompressed, core font: the page streams hold the text as written
    for code in view.codes:
        assert code.procedure.encode() in text and code.profile.encode() in text
    for raw in view.raw_files:
        assert raw.sha256.encode() in text
    assert b"9.9.9" in text and session_id.encode() in text
    assert b"Generated 2026-01-02 03:04:05 UTC by cora" in text
    assert b"Proven by the log" in text and b"The note must state" in text
    # Every page names the packet and the patient (a loose page finds its packet).
    pages = len(re.findall(rb"/Type /Page\b", pdf))
    footer = f"packet PKT-TEST-1 - patient ID {view.patient_id}".encode()
    assert pages >= 2 and text.count(footer) == pages
    # The same inputs give the same bytes.
    again = render_pdf(
        view,
        generated_at=datetime(2026, 1, 2, 3, 4, 5),
        generated_by="cora",
        packet_id="PKT-TEST-1",
        fonts_dir=None,
        compress=False,
    )
    assert again == pdf


def test_the_pdf_with_dejavu_compresses_and_embeds_the_font(engine: Engine, data: DemoData) -> None:
    session_id = data.session_ids[0]
    with engine.connect() as connection:
        view = build_evidence_view(connection, session_id, load_rules(), software_version="1")
    assert view is not None
    pdf = render_pdf(
        view, generated_at=datetime(2026, 1, 1), generated_by="cora", packet_id="PKT-2"
    )
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    if b"/FontFile2" in pdf:  # DejaVu found: embedded, text as glyph ids
        assert b"DejaVu" in pdf
    pages = len(re.findall(rb"/Type /Page\b", pdf))
    assert 2 <= pages <= 8
    assert b"/FlateDecode" in pdf  # compressed streams are the default
