"""Every view of patient data is audited; the audit page filters by date, actor, action, subject.

The route walk covers every GET route the app serves: a route showing patient
data appends exactly one view entry (actor, client address, route template, the
IDs shown); a route without patient data appends none. A route added without a
decision here fails the walk.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update

from db import audit
from db.models import pumps, raw_files, sessions
from tests.web.support import DemoData, served_routes


@dataclass(frozen=True)
class Viewed:
    """What one GET route must record: its action, the role it needs, the IDs it names."""

    action: str
    account: str
    path: Callable[[DemoData, str], str]
    # The detail key listing the IDs shown, and a check of that list.
    ids_key: str
    ids: Callable[[DemoData, str, list[str]], bool]


def _serial(data: DemoData) -> str:
    return next(iter(data.pumps))


def _raw_of(engine: Engine, session_id: str) -> str:
    with engine.connect() as connection:
        return str(
            connection.execute(
                select(raw_files.c.sha256)
                .select_from(raw_files.join(sessions, sessions.c.id == raw_files.c.session_pk))
                .where(sessions.c.session_id == session_id)
                .limit(1)
            ).scalar_one()
        )


# Every GET route with patient data, by route template.
VIEWS: dict[str, Viewed] = {
    "/sessions": Viewed(
        audit.VIEW_SESSIONS,
        "cora",
        lambda d, s: "/sessions",
        "session_ids",
        lambda d, s, ids: sorted(ids) == sorted(d.session_ids),
    ),
    "/sessions/{session_id}": Viewed(
        audit.VIEW_SESSION,
        "cora",
        lambda d, s: f"/sessions/{s}",
        "session_ids",
        lambda d, s, ids: ids == [s],
    ),
    "/sessions/{session_id}/packet": Viewed(
        audit.EXPORT_PACKET,
        "cora",
        lambda d, s: f"/sessions/{s}/packet",
        "session_ids",
        lambda d, s, ids: ids == [s],
    ),
    "/sessions/{session_id}/packet.pdf": Viewed(
        audit.EXPORT_PACKET,
        "cora",
        lambda d, s: f"/sessions/{s}/packet.pdf",
        "session_ids",
        lambda d, s, ids: ids == [s],
    ),
    "/sessions/{session_id}/replay": Viewed(
        audit.VIEW_REPLAY,
        "audrey",
        lambda d, s: f"/sessions/{s}/replay",
        "session_ids",
        lambda d, s, ids: ids == [s],
    ),
    "/raw/{sha256}": Viewed(
        audit.EXPORT_RAW,
        "cora",
        lambda d, s: "/raw/{raw}",
        "session_ids",
        lambda d, s, ids: ids == [s],
    ),
    "/pumps/{serial}": Viewed(
        audit.VIEW_TIMELINE,
        "cora",
        lambda d, s: f"/pumps/{_serial(d)}",
        "session_ids",
        lambda d, s, ids: ids == d.pumps[_serial(d)],
    ),
    "/due": Viewed(
        audit.VIEW_DUE,
        "cora",
        lambda d, s: "/due",
        "pump_serials",
        lambda d, s, ids: set(ids) <= set(d.pumps),
    ),
    "/imports": Viewed(
        audit.VIEW_IMPORTS,
        "cora",
        lambda d, s: "/imports",
        "session_ids",
        lambda d, s, ids: bool(ids) and set(ids) <= set(d.session_ids),
    ),
    "/audit": Viewed(
        audit.VIEW_AUDIT,
        "audrey",
        lambda d, s: "/audit",
        "entry_ids",
        lambda d, s, ids: bool(ids),
    ),
    "/replay": Viewed(
        audit.VIEW_REPLAY,
        "audrey",
        lambda d, s: "/replay",
        "entry_ids",
        lambda d, s, ids: isinstance(ids, list),
    ),
    "/api/sessions": Viewed(
        audit.EXPORT_API,
        "cora",
        lambda d, s: "/api/sessions?limit=500",
        "session_ids",
        lambda d, s, ids: sorted(ids) == sorted(d.session_ids),
    ),
    "/payers": Viewed(
        audit.VIEW_PAYERS,
        "cora",
        lambda d, s: "/payers",
        "coverage_ids",
        lambda d, s, ids: isinstance(ids, list),
    ),
    "/api/sessions/{session_id}": Viewed(
        audit.EXPORT_API,
        "cora",
        lambda d, s: f"/api/sessions/{s}",
        "session_ids",
        lambda d, s, ids: ids == [s],
    ),
    "/charges": Viewed(
        audit.VIEW_CHARGES,
        "cora",
        lambda d, s: "/charges?since=2000-01-01",
        "session_ids",
        lambda d, s, ids: isinstance(ids, list),
    ),
    "/charges.csv": Viewed(
        audit.EXPORT_CHARGES,
        "cora",
        lambda d, s: "/charges.csv?since=2000-01-01",
        "session_ids",
        lambda d, s, ids: isinstance(ids, list),
    ),
    "/api/sessions/{session_id}/decision": Viewed(
        audit.EXPORT_API,
        "cora",
        lambda d, s: f"/api/sessions/{s}/decision",
        "session_ids",
        lambda d, s, ids: ids == [s],
    ),
    "/api/sessions/{session_id}/fhir": Viewed(
        audit.EXPORT_API,
        "cora",
        lambda d, s: f"/api/sessions/{s}/fhir",
        "session_ids",
        lambda d, s, ids: ids == [s],
    ),
}

# GET routes that show no patient data: nothing is recorded.
NO_PATIENT_DATA = {"/", "/login", "/admin/users", "/openapi.json"}


def _all_entries(engine: Engine) -> list[audit.AuditEntry]:
    with engine.connect() as connection:
        return audit.show(connection, audit.AuditFilter(limit=None))


def test_every_get_route_is_classified(app: FastAPI) -> None:
    templates = {path for path, route in served_routes(app) if "GET" in (route.methods or ())}
    assert templates == set(VIEWS) | NO_PATIENT_DATA


@pytest.mark.parametrize("template", sorted(VIEWS))
def test_a_view_of_patient_data_adds_one_entry(
    template: str,
    client_for: Callable[[str], TestClient],
    data: DemoData,
    engine: Engine,
) -> None:
    expected = VIEWS[template]
    client = client_for(expected.account)
    session_id = data.session_ids[1]
    path = expected.path(data, session_id).replace("{raw}", _raw_of(engine, session_id))
    before = _all_entries(engine)
    response = client.get(path)
    assert response.status_code == 200, response.text
    added = _all_entries(engine)[len(before) :]
    views = [e for e in added if e.action not in (audit.REPLAY_VERIFY,)]
    # The replay page also runs the replay, which records its own run (replay_verify).
    assert len(views) == 1, [(e.action, e.target) for e in added]
    entry = views[0]
    assert (entry.actor, entry.action) == (expected.account, expected.action)
    assert entry.detail["client"] == "testclient"
    assert entry.detail["route"] == template
    assert expected.ids(data, session_id, list(entry.detail[expected.ids_key]))
    patient_ids = _patient_ids(engine)
    assert not any(p in json.dumps(entry.detail) or p == entry.target for p in patient_ids)


@pytest.mark.parametrize("template", sorted(NO_PATIENT_DATA))
def test_a_route_without_patient_data_adds_nothing(
    template: str, client_for: Callable[[str], TestClient], engine: Engine
) -> None:
    client = client_for("adam")
    before = _all_entries(engine)
    response = client.get(template, follow_redirects=False)
    assert response.status_code in (200, 303)
    assert _all_entries(engine) == before


def test_the_sessions_page_records_filter_values_but_never_a_patient_id(
    coder: TestClient, data: DemoData, engine: Engine
) -> None:
    patient = _patient_of(engine, data.session_ids[0])
    serial = _serial(data)
    coder.get("/sessions", params={"patient_id": patient, "pump_serial": serial, "flagged": "1"})
    entry = _all_entries(engine)[-1]
    assert entry.action == audit.VIEW_SESSIONS
    assert entry.detail["filters"] == {
        "pump_serial": serial,
        "flagged": True,
        "patient_filter": True,
        "limit": 50,
        "page": "first",
    }
    assert patient not in json.dumps(entry.detail)


def _patient_ids(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return {
            str(p) for p in connection.execute(select(sessions.c.patient_id).distinct()).scalars()
        }


def _patient_of(engine: Engine, session_id: str) -> str:
    with engine.connect() as connection:
        return str(
            connection.execute(
                select(sessions.c.patient_id).where(sessions.c.session_id == session_id)
            ).scalar_one()
        )


# ---------------------------------------------------------------------------
# The audit page's filters


def _audit_rows(page: str) -> list[tuple[str, str, str]]:
    """(actor, action, target) of every row of the audit table."""
    rows = re.findall(
        r'<tr class="audit-[a-z_]+">\s*<td class="num">\d+</td><td class="nowrap">[^<]*</td>'
        r"<td>([^<]*)</td><td><span class=\"pill\">([^<]*)</span></td>\s*"
        r'<td class="mono small">(?:<a href="[^"]*">)?([^<]*)',
        page,
    )
    return [(a, b, c) for a, b, c in rows]


@pytest.mark.parametrize("chunk", [200, 2])
def test_the_audit_page_finds_everything_that_touched_one_patient(
    chunk: int,
    client_for: Callable[[str], TestClient],
    data: DemoData,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # chunk 2: the patient's sessions are looked for in several queries, merged.
    monkeypatch.setattr("web.views.audit.LIKE_CHUNK", chunk)
    coder = client_for("cora")
    auditor = client_for("audrey")
    serial, own = next(iter(data.pumps.items()))
    other_serial, others = list(data.pumps.items())[1]
    # Give the first pump's sessions one patient ID of their own.
    with engine.begin() as connection:
        pump_pk = connection.execute(
            select(pumps.c.id).where(pumps.c.serial == serial)
        ).scalar_one()
        connection.execute(
            update(sessions).where(sessions.c.pump_id == pump_pk).values(patient_id="PT-ONE")
        )
    coder.get(f"/sessions/{own[0]}")
    coder.get(f"/sessions/{others[0]}")
    coder.get(f"/pumps/{other_serial}")
    coder.get(f"/api/sessions/{own[-1]}")
    coder.get("/sessions", params={"pump_serial": serial})
    page = auditor.get("/audit", params={"subject": "PT-ONE"})
    assert page.status_code == 200
    rows = _audit_rows(page.text)
    targets = [t for _, _, t in rows]
    assert own[0] in targets and own[-1] in targets
    assert others[0] not in targets and other_serial not in targets
    # The list whose page showed this patient's sessions is found through its IDs.
    assert ("cora", audit.VIEW_SESSIONS, "sessions") in rows
    # Imports of this patient's files are found too (target: the raw file's SHA-256).
    assert any(action == audit.IMPORT for _, action, _ in rows)
    # The audit view itself is recorded with the IDs it stood for, never the patient ID.
    entry = _all_entries(engine)[-1]
    assert entry.action == audit.VIEW_AUDIT
    assert entry.detail["filters"] == {"subject_filter": True}
    assert entry.detail["session_ids"] == own
    assert entry.detail["pump_serials"] == [serial]
    assert "PT-ONE" not in json.dumps(entry.detail)
    # A pump serial works the same way.
    by_pump = _audit_rows(auditor.get("/audit", params={"subject": other_serial}).text)
    assert {t for _, _, t in by_pump} >= {others[0], other_serial}
    assert own[0] not in {t for _, _, t in by_pump}
    # An unknown subject shows nothing and says so.
    unknown = auditor.get("/audit", params={"subject": "PT-NOBODY"})
    assert _audit_rows(unknown.text) == []
    assert "no stored session" in unknown.text


def test_the_audit_page_filters_by_date_actor_and_action(
    client_for: Callable[[str], TestClient], data: DemoData, engine: Engine
) -> None:
    coder = client_for("cora")
    auditor = client_for("audrey")
    coder.get(f"/sessions/{data.session_ids[0]}")
    today = datetime.now(UTC).date()
    rows = _audit_rows(
        auditor.get("/audit", params={"actor": "cora", "action": audit.VIEW_SESSION}).text
    )
    assert rows == [("cora", audit.VIEW_SESSION, data.session_ids[0])]
    same_day = _audit_rows(
        auditor.get(
            "/audit",
            params={"date_from": today.isoformat(), "date_to": today.isoformat(), "actor": "cora"},
        ).text
    )
    assert ("cora", audit.VIEW_SESSION, data.session_ids[0]) in same_day
    tomorrow = (today + timedelta(days=1)).isoformat()
    assert _audit_rows(auditor.get("/audit", params={"date_from": tomorrow}).text) == []
    yesterday = (today - timedelta(days=1)).isoformat()
    assert _audit_rows(auditor.get("/audit", params={"date_to": yesterday}).text) == []
    bad = auditor.get("/audit", params={"date_from": "yesterday"})
    assert "not a date" in bad.text
