"""Every page, rendered from a database the real import pipeline filled (web view item 3, 4, 6)."""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update

from db import audit
from db.models import evidence, pumps, sessions
from db.queries import evidence_document_text
from db.users import users
from ingest.rawstore import RawStore
from tests.web.support import DemoData, csrf_of
from web.packet_signing import verify_packet

UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def listed(page: str) -> list[str]:
    return re.findall(rf'class="session-link" href="/sessions/({UUID_RE})"', page)


def stored_evidence(engine: Engine, session_id: str) -> dict:  # type: ignore[type-arg]
    with engine.connect() as connection:
        text = evidence_document_text(connection, session_id)
    assert text is not None
    return json.loads(text)  # type: ignore[no-any-return]


def audit_entries(engine: Engine, action: str) -> list[audit.AuditEntry]:
    with engine.connect() as connection:
        return audit.show(connection, audit.AuditFilter(action=action, limit=None))


def session_with(engine: Engine, data: DemoData, test: Callable[[dict], bool]) -> str:  # type: ignore[type-arg]
    for session_id in data.session_ids:
        if test(stored_evidence(engine, session_id)):
            return session_id
    raise AssertionError("no fixture session fits")


# ---------------------------------------------------------------------------
# Sessions list


def test_the_list_shows_every_session_newest_first(
    coder: TestClient, data: DemoData, engine: Engine
) -> None:
    page = coder.get("/sessions")
    assert page.status_code == 200
    ids = listed(page.text)
    assert sorted(ids) == sorted(data.session_ids)
    with engine.connect() as connection:
        rows = connection.execute(select(sessions.c.session_id, sessions.c.session_start_utc))
        starts = {row[0]: row[1] for row in rows}
    assert [starts[i] for i in ids] == sorted((starts[i] for i in ids), reverse=True)
    assert f"{len(data.session_ids)} matching sessions" in page.text
    # Every profile's code is a column; the default one is highlighted.
    for profile in ("rate-dose", "rate-dose-alarms", "any-setting"):
        assert f">{profile}</th>" in page.text
    assert 'class="code-col chosen">rate-dose</th>' in page.text


def test_filter_by_pump_serial(coder: TestClient, data: DemoData) -> None:
    serial, expected = next(iter(data.pumps.items()))
    page = coder.get("/sessions", params={"pump_serial": serial})
    assert sorted(listed(page.text)) == sorted(expected)
    assert f'value="{serial}"' in page.text


def test_filter_by_patient_id(coder: TestClient, data: DemoData, engine: Engine) -> None:
    with engine.connect() as connection:
        (patient,) = connection.execute(
            select(sessions.c.patient_id).where(sessions.c.session_id == data.session_ids[0])
        ).one()
        expected = set(
            connection.execute(
                select(sessions.c.session_id).where(sessions.c.patient_id == patient)
            ).scalars()
        )
    page = coder.get("/sessions", params={"patient_id": patient})
    assert set(listed(page.text)) == expected
    assert expected


def test_filter_by_local_date_range(coder: TestClient, data: DemoData, engine: Engine) -> None:
    with engine.connect() as connection:
        rows = list(
            connection.execute(select(sessions.c.session_id, sessions.c.session_start_local))
        )
    day = rows[3][1].date()
    expected = {sid for sid, local in rows if local.date() == day}
    page = coder.get("/sessions", params={"date_from": day.isoformat(), "date_to": day.isoformat()})
    assert set(listed(page.text)) == expected
    later = {sid for sid, local in rows if local.date() >= day}
    page = coder.get("/sessions", params={"date_from": day.isoformat()})
    assert set(listed(page.text)) == later


@pytest.mark.parametrize("profile", ["rate-dose", "rate-dose-alarms", "any-setting"])
def test_filter_by_code_under_each_profile(
    coder: TestClient, data: DemoData, engine: Engine, profile: str
) -> None:
    by_code: dict[str, set[str]] = {}
    for session_id in data.session_ids:
        code = stored_evidence(engine, session_id)["codes"][profile]["procedure"]
        by_code.setdefault(code, set()).add(session_id)
    assert len(by_code) >= 2
    for code, expected in by_code.items():
        page = coder.get("/sessions", params={"profile": profile, "procedure": code})
        assert set(listed(page.text)) == expected, (profile, code)


def test_profiles_give_different_answers_for_a_refill(
    coder: TestClient, data: DemoData, engine: Engine
) -> None:
    # A refill whose only writes are reservoir bookkeeping: 9599x under rate-dose,
    # 6236x under any-setting (docs/coding-rules.md §3).
    session_id = session_with(
        engine,
        data,
        lambda ev: (
            ev["codes"]["rate-dose"]["procedure"].startswith("9599")
            and ev["codes"]["any-setting"]["procedure"].startswith("6237")
        ),
    )
    code = stored_evidence(engine, session_id)["codes"]["any-setting"]["procedure"]
    under_any = coder.get("/sessions", params={"profile": "any-setting", "procedure": code})
    assert session_id in listed(under_any.text)
    under_default = coder.get("/sessions", params={"procedure": code})
    assert session_id not in listed(under_default.text)


def test_filter_by_flags(coder: TestClient, data: DemoData, engine: Engine) -> None:
    first_visits = {ids[0] for ids in data.pumps.values()}
    page = coder.get("/sessions", params={"flag": "no_prior_session"})
    assert set(listed(page.text)) == first_visits
    page = coder.get("/sessions", params={"flagged": "1"})
    flagged = {s for s in data.session_ids if stored_evidence(engine, s)["flags"]}
    assert set(listed(page.text)) == flagged
    page = coder.get("/sessions", params=[("flag", "no_prior_session"), ("flag", "critical_alarm")])
    assert listed(page.text) == []
    assert "No session matches these filters." in page.text


def test_bad_filter_values_are_reported_not_fatal(coder: TestClient, data: DemoData) -> None:
    page = coder.get(
        "/sessions",
        params={"date_from": "yesterday", "procedure": "99999", "profile": "nope", "cursor": "!!"},
    )
    assert page.status_code == 200
    assert "not a date" in page.text and "unknown code" in page.text
    assert "the page link was not valid" in page.text
    assert len(listed(page.text)) == len(data.session_ids)


@pytest.mark.parametrize("sort", ["newest", "oldest", "pump"])
def test_next_and_previous_pages_walk_the_whole_list(
    coder: TestClient, data: DemoData, sort: str
) -> None:
    full = listed(coder.get("/sessions", params={"sort": sort, "limit": 200}).text)
    assert len(full) == len(data.session_ids)
    seen: list[str] = []
    pages: list[str] = []
    url: str | None = f"/sessions?sort={sort}&limit=25"
    while url:
        page = coder.get(url).text
        pages.append(url)
        rows = listed(page)
        assert rows
        seen += rows
        found = re.search(r'rel="next" href="([^"]+)"', page)
        url = html.unescape(found.group(1)) if found else None
    assert seen == full
    # Back from the last page to the first, one Previous at a time.
    back: list[str] = []
    page = coder.get(pages[-1]).text
    back = listed(page) + back
    while (found := re.search(r'rel="prev" href="([^"]+)"', page)) is not None:
        page = coder.get(html.unescape(found.group(1))).text
        back = listed(page) + back
    assert back == full


# ---------------------------------------------------------------------------
# Evidence page


def test_the_evidence_page_marks_changed_cells_and_shows_every_code(
    coder: TestClient, data: DemoData, engine: Engine
) -> None:
    session_id = session_with(
        engine, data, lambda ev: any(c["when"] == "in_session" for c in ev["changes"])
    )
    document = stored_evidence(engine, session_id)
    page = coder.get(f"/sessions/{session_id}")
    assert page.status_code == 200
    text = page.text
    changes = document["changes"]
    marked = re.findall(r'<td class="num chg chg-(changed|reverted) cat-(\w+)', text)
    assert len(marked) == len(changes)
    assert sorted(cat for _mark, cat in marked) == sorted(c["category"] for c in changes)
    for change in changes:
        assert (
            f'<tr class="change when-{change["when"]}" data-parameter="{change["parameter"]}">'
            in text
        )
    for profile, code in document["codes"].items():
        assert f'data-profile="{profile}"' in text
        assert f'data-code="{code["procedure"]}"' in text
        assert html.escape(code["counterfactual"], quote=False) in text
    # The checklist split, the raw file's hash, the versions.
    assert "Proven by the log" in text and "The note must state" in text
    assert re.search(r'href="/raw/[0-9a-f]{64}"', text)
    assert "evidence-rules/" in text


def test_reason_time_and_operator_of_each_change(
    coder: TestClient, data: DemoData, engine: Engine
) -> None:
    session_id = session_with(
        engine, data, lambda ev: any(c["reason"] == "efficacy" for c in ev["changes"])
    )
    page = coder.get(f"/sessions/{session_id}").text
    with engine.connect() as connection:
        document = json.loads(
            connection.execute(
                select(sessions.c.document).where(sessions.c.session_id == session_id)
            ).scalar_one()
        )
    row = re.search(r'data-parameter="drug1_daily_dose">(.*?)</tr>', page, re.S)
    assert row is not None
    cells = row.group(1)
    assert "efficacy" in cells
    assert document["operator"]["id"] in cells
    logged = [
        e
        for e in document["events"]
        if e["type"] == "change" and e["parameter"] == "drug1_daily_dose"
    ]
    # The time shown is the last logged change, on the programmer's local clock.
    from web.present import local_time

    local = local_time(logged[-1]["time_utc"], document["utc_offset_min"])
    assert local is not None and local.strftime("%Y-%m-%d %H:%M:%S") in cells


def test_viewing_a_session_is_audited(coder: TestClient, data: DemoData, engine: Engine) -> None:
    session_id = data.session_ids[2]
    coder.get(f"/sessions/{session_id}")
    views = audit_entries(engine, audit.VIEW_SESSION)
    assert [(e.actor, e.target) for e in views] == [("cora", session_id)]


def test_unknown_session_is_404(coder: TestClient) -> None:
    response = coder.get("/sessions/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert "No stored session" in response.text


def test_patient_text_is_escaped(coder: TestClient, data: DemoData, engine: Engine) -> None:
    session_id = data.session_ids[0]
    with engine.begin() as connection:
        connection.execute(
            update(sessions)
            .where(sessions.c.session_id == session_id)
            .values(patient_name="<script>alert(1)</script>")
        )
    page = coder.get(f"/sessions/{session_id}").text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert" not in coder.get("/sessions").text


# ---------------------------------------------------------------------------
# Packet, PDF, raw files


def test_the_printable_packet_is_audited(coder: TestClient, data: DemoData, engine: Engine) -> None:
    session_id = data.session_ids[-1]
    page = coder.get(f"/sessions/{session_id}/packet")
    assert page.status_code == 200
    assert 'href="/static/pumptrail.css"' in page.text and "data-print" in page.text
    assert "Generated" in page.text and "by cora" in page.text
    assert re.search(r'<td class="mono hash">[0-9a-f]{64}</td>', page.text)
    exports = audit_entries(engine, audit.EXPORT_PACKET)
    assert [(e.actor, e.target, e.detail) for e in exports] == [
        (
            "cora",
            session_id,
            {
                "format": "html",
                "route": "/sessions/{session_id}/packet",
                "client": "testclient",
                "session_ids": [session_id],
            },
        )
    ]


def test_the_pdf_packet_is_signed_carries_its_evidence_and_is_audited(
    coder: TestClient, data: DemoData, engine: Engine, app: FastAPI
) -> None:
    session_id = data.session_ids[-1]
    response = coder.get(f"/sessions/{session_id}/packet.pdf")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-")
    assert response.content.rstrip().endswith(b"%%EOF")
    entry = audit_entries(engine, audit.EXPORT_PACKET)[-1]
    packet_id = entry.detail["packet_id"]
    assert response.headers["content-disposition"] == (
        f'attachment; filename="evidence-{session_id}-{packet_id}.pdf"'
    )
    assert entry.detail == {
        "format": "pdf",
        "route": "/sessions/{session_id}/packet.pdf",
        "client": "testclient",
        "session_ids": [session_id],
        "packet_id": packet_id,
        "sha256": hashlib.sha256(response.content).hexdigest(),
    }
    check = verify_packet(response.content)
    assert check.ok
    assert check.signer_fingerprint == app.state.pumptrail.identity.fingerprint
    evidence = json.loads(check.attachments["evidence.json"])
    assert evidence == coder.get(f"/api/sessions/{session_id}").json()
    assert json.loads(check.attachments["session.json"])["session_id"] == session_id
    # A second export is a new packet with its own ID.
    coder.get(f"/sessions/{session_id}/packet.pdf")
    assert audit_entries(engine, audit.EXPORT_PACKET)[-1].detail["packet_id"] != packet_id


def test_raw_files_download_byte_for_byte(
    coder: TestClient, data: DemoData, engine: Engine
) -> None:
    session_id = data.session_ids[0]
    page = coder.get(f"/sessions/{session_id}").text
    digest = re.search(r'href="/raw/([0-9a-f]{64})"', page).group(1)  # type: ignore[union-attr]
    response = coder.get(f"/raw/{digest}")
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == digest
    assert response.content == RawStore(data.raw_store).get(digest)
    assert "attachment" in response.headers["content-disposition"]
    assert [(e.actor, e.target) for e in audit_entries(engine, "export_raw")] == [("cora", digest)]
    assert audit_entries(engine, "export_raw")[0].detail["session_ids"] == [session_id]
    assert coder.get("/raw/" + "0" * 64).status_code == 404
    assert coder.get("/raw/not-a-hash").status_code == 404


# ---------------------------------------------------------------------------
# Timeline, refills due, imports


def test_the_pump_timeline_charts_dose_and_reservoir(coder: TestClient, data: DemoData) -> None:
    serial, ids = next(iter(data.pumps.items()))
    page = coder.get(f"/pumps/{serial}")
    assert page.status_code == 200
    svgs = re.findall(r"<svg class=\"chart\".*?</svg>", page.text, re.S)
    assert len(svgs) == 2
    assert "Daily dose" in svgs[0] and "Reservoir volume" in svgs[1]
    # Every session is a dot linked to its evidence.
    for session_id in ids:
        assert f'href="/sessions/{session_id}"' in svgs[1]
    rows = re.findall(rf'<td><a href="/sessions/({UUID_RE})">', page.text)
    assert rows == list(reversed(ids))
    assert coder.get("/pumps/NO-SUCH-PUMP").status_code == 404


def test_refills_due_lists_overdue_pumps_first(coder: TestClient, data: DemoData) -> None:
    page = coder.get("/due")
    assert page.status_code == 200
    # The synthetic visits are in 2025-2026: every pump's refill date is past by now
    # or near; each pump appears once, overdue ones marked.
    for serial in data.pumps:
        assert page.text.count(f'href="/pumps/{serial}"') <= 1
    days = [int(d) for d in re.findall(r'<td class="num">(-?\d+)</td>', page.text)]
    assert days == sorted(days)


def test_import_status_shows_quarantine_reasons_and_admins_requeue(
    client_for: Callable[[str], TestClient], data: DemoData, engine: Engine
) -> None:
    quarantine = data.root / "quarantine"
    quarantine.mkdir()
    (quarantine / "broken.psl").write_bytes(b"PSL\x00garbage")
    (quarantine / "broken.psl.error.json").write_text(
        json.dumps(
            {
                "sha256": "ab" * 32,
                "code": "bad_header_crc",
                "message": "header CRC does not match",
                "offset": 86,
                "quarantined_at_utc": "2026-03-04T10:15:02Z",
            }
        )
    )
    coder = client_for("cora")
    page = coder.get("/imports").text
    assert "broken.psl" in page and "bad_header_crc" in page
    assert "offset 0x56: bad_header_crc" in page
    # A record's free text may quote the file: the page shows its safe fields only.
    assert "header CRC does not match" not in page
    assert "Re-queue" not in page
    assert coder.post("/imports/requeue", data={"name": "broken.psl"}).status_code == 403
    admin = client_for("adam")
    page = admin.get("/imports").text
    assert "Re-queue" in page
    response = admin.post(
        "/imports/requeue", data={"name": "broken.psl", "csrf_token": csrf_of(page)}
    )
    assert response.status_code == 200 and "moved back to the inbox" in response.text
    assert (data.root / "inbox" / "broken.psl").read_bytes() == b"PSL\x00garbage"
    assert not (quarantine / "broken.psl").exists()
    assert not (quarantine / "broken.psl.error.json").exists()
    requeues = audit_entries(engine, audit.REQUEUE)
    assert [(e.actor, e.target, e.detail) for e in requeues] == [
        ("adam", "ab" * 32, {"code": "bad_header_crc"})
    ]
    page = admin.get("/imports").text
    assert "broken.psl" in page  # now waiting in the inbox
    bad = admin.post(
        "/imports/requeue", data={"name": "../etc/passwd", "csrf_token": csrf_of(page)}
    )
    assert bad.status_code == 404


def test_import_status_lists_recent_files(coder: TestClient, data: DemoData) -> None:
    page = coder.get("/imports").text
    assert f"{len(data.session_ids)} sessions stored" in page
    assert page.count("psl-csv") >= 1
    for session_id in data.session_ids[-3:]:
        assert f'href="/sessions/{session_id}"' in page


# ---------------------------------------------------------------------------
# Audit log, replay, users


def test_the_audit_log_page_lists_and_filters(auditor: TestClient, data: DemoData) -> None:
    session_id = data.session_ids[1]
    auditor.get(f"/sessions/{session_id}")
    page = auditor.get("/audit").text
    assert "view_session" in page and "audrey" in page and session_id in page
    only_logins = auditor.get("/audit", params={"action": "login"}).text
    assert "view_session</span>" not in only_logins and "login</span>" in only_logins


def test_an_auditor_replays_a_session(auditor: TestClient, data: DemoData, engine: Engine) -> None:
    session_id = data.session_ids[4]
    page = auditor.get(f"/sessions/{session_id}/replay")
    assert page.status_code == 200
    assert "reproduced exactly" in page.text
    runs = audit_entries(engine, audit.REPLAY_VERIFY)
    assert [(e.actor, e.target) for e in runs] == [("audrey", "run")]
    assert runs[0].detail["differences"] == 0
    assert "reproduced exactly" not in auditor.get("/replay").text
    assert "replay_verify" in auditor.get("/replay").text


def test_replay_reports_a_changed_evidence_document(
    auditor: TestClient, data: DemoData, engine: Engine
) -> None:
    session_id = data.session_ids[4]
    with engine.begin() as connection:
        pk = connection.execute(
            select(sessions.c.id).where(sessions.c.session_id == session_id)
        ).scalar_one()
        connection.execute(
            update(evidence).where(evidence.c.session_pk == pk).values(procedure="00000")
        )
    page = auditor.get(f"/sessions/{session_id}/replay").text
    assert "differences found" in page and "differs" in page
    assert session_id in page


def test_admins_add_and_change_users(admin: TestClient, engine: Engine) -> None:
    page = admin.get("/admin/users").text
    response = admin.post(
        "/admin/users",
        data={
            "username": "newbie",
            "role": "coder",
            "password": "long-enough-pass",
            "csrf_token": csrf_of(page),
        },
    )
    assert response.status_code == 200 and "User added." in response.text
    response = admin.post(
        "/admin/users/newbie",
        data={"op": "role", "role": "auditor", "csrf_token": csrf_of(response.text)},
    )
    assert "User changed" in response.text
    response = admin.post(
        "/admin/users/newbie", data={"op": "disable", "csrf_token": csrf_of(response.text)}
    )
    with engine.connect() as connection:
        row = connection.execute(
            select(users.c.role, users.c.disabled).where(users.c.username == "newbie")
        ).one()
    assert tuple(row) == ("auditor", True)
    assert [(e.actor, e.target, e.detail) for e in audit_entries(engine, audit.USER_ADD)] == [
        ("adam", "newbie", {"role": "coder"})
    ]
    assert [e.detail for e in audit_entries(engine, audit.USER_CHANGE)] == [
        {"op": "role", "role": "auditor"},
        {"op": "disable"},
    ]
    refused = admin.post(
        "/admin/users",
        data={
            "username": "x",
            "role": "coder",
            "password": "short",
            "csrf_token": csrf_of(response.text),
        },
    )
    assert refused.status_code == 400 and "too short" in refused.text


def test_the_last_admin_stays_an_admin(admin: TestClient) -> None:
    page = admin.get("/admin/users").text
    response = admin.post(
        "/admin/users/adam", data={"op": "role", "role": "coder", "csrf_token": csrf_of(page)}
    )
    assert response.status_code == 400
    assert "last enabled admin" in response.text
    response = admin.post("/admin/users/adam", data={"op": "disable", "csrf_token": csrf_of(page)})
    assert response.status_code == 400


def test_pump_serials_match_exactly(coder: TestClient, engine: Engine) -> None:
    with engine.connect() as connection:
        serial = connection.execute(select(pumps.c.serial).limit(1)).scalar_one()
    assert coder.get(f"/pumps/{serial.lower()}").status_code == 404


def quarantine_file_with_record(data: DemoData, name: str, payload: bytes, **record: object) -> str:
    quarantine = data.root / "quarantine"
    quarantine.mkdir(exist_ok=True)
    (quarantine / name).write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    (quarantine / f"{name}.error.json").write_text(
        json.dumps({"sha256": digest, "code": "unknown_format", "offset": 0, **record})
    )
    return digest


def test_admins_dismiss_a_quarantined_file_kept_in_the_raw_store_and_audited(
    client_for: Callable[[str], TestClient], data: DemoData, engine: Engine
) -> None:
    payload = b"Fictive, Jamie: shopping list"
    digest = quarantine_file_with_record(data, "notes.txt", payload)
    coder = client_for("cora")
    assert "Dismiss" not in coder.get("/imports").text
    assert coder.post("/imports/dismiss", data={"name": "notes.txt"}).status_code == 403
    admin = client_for("adam")
    page = admin.get("/imports").text
    assert "Dismiss" in page and "notes.txt" in page
    response = admin.post(
        "/imports/dismiss", data={"name": "notes.txt", "csrf_token": csrf_of(page)}
    )
    assert response.status_code == 200 and "stay in the raw store" in response.text
    assert "notes.txt" not in response.text  # out of the list
    assert not (data.root / "quarantine" / "notes.txt").exists()
    assert not (data.root / "quarantine" / "notes.txt.error.json").exists()
    assert RawStore(data.raw_store).get(digest) == payload
    dismissed = audit_entries(engine, audit.DISMISS)
    assert [(e.actor, e.target, e.detail) for e in dismissed] == [
        ("adam", digest, {"code": "unknown_format"})
    ]
    bad = admin.post("/imports/dismiss", data={"name": "notes.txt", "csrf_token": csrf_of(page)})
    assert bad.status_code == 404


def test_requeueing_the_bytes_this_parser_refused_warns_of_the_same_outcome(
    client_for: Callable[[str], TestClient], data: DemoData
) -> None:
    from parsers.registry import PARSER_VERSION

    quarantine_file_with_record(data, "same.txt", b"junk", parser_version=PARSER_VERSION)
    quarantine_file_with_record(data, "older.txt", b"junk 2", parser_version="old-parser/0")
    admin = client_for("adam")
    page = admin.get("/imports").text
    same = admin.post("/imports/requeue", data={"name": "same.txt", "csrf_token": csrf_of(page)})
    assert "the same outcome will follow" in same.text
    older = admin.post("/imports/requeue", data={"name": "older.txt", "csrf_token": csrf_of(page)})
    assert "moved back to the inbox" in older.text
    assert "the same outcome will follow" not in older.text


def test_files_needing_attention_are_listed_by_hash_from_the_status_file(
    client_for: Callable[[str], TestClient], data: DemoData
) -> None:
    from ingest.status import STATUS_FILE, write_status

    coder = client_for("cora")
    assert "Needing attention" not in coder.get("/imports").text
    write_status(
        data.root / STATUS_FILE,
        {
            "needing_attention": [
                {
                    "key": "a57a12f060a2",
                    "reason": "unreadable",
                    "error": "EACCES",
                    "attempts": 15,
                    "since_utc": "2026-03-04T10:15:02Z",
                }
            ]
        },
    )
    page = coder.get("/imports").text
    assert "Needing attention" in page
    assert "a57a12f060a2" in page and "unreadable" in page and "EACCES" in page
    assert "2026-03-04 10:15:02" in page
