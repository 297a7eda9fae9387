"""Gathers one stored session's FHIR inputs and builds its bundle (docs/fhir.md).

Shared by `GET /api/sessions/{id}/fhir` and `pumptrail export fhir`. The mapping
itself is `evidence.fhir`; this module reads what it needs:

- the normalized session (docs/session-json.md §2) and the evidence with
  `applicable` (§3, `web.signoff.session_facts`);
- the coder's decision: the current signed-off version, or the proposal from the
  applicable code when nobody signed off (`web.signoff.proposal`), and the charge
  lines of a signed-off one (docs/coding-rules.md §9.6);
- the rendering provider's name, by NPI (`db.payers`);
- the newest exported signed packet: the SHA-256 and packet ID of the session's
  newest `export_packet` audit entry that carries one (a PDF download). No packet
  is made for the bundle: a packet is signed with its time and a random packet ID,
  so one made here would have a SHA-256 that no copy anywhere matches. Without an
  exported packet the DocumentReference names the URL that makes one, and no hash;
- the raw export files' SHA-256 (`web.queries.raw_files_of`) and the clinic's
  signing identity (certificate SHA-256 fingerprint and subject).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from db import audit
from db.models import sessions
from db.payers import list_providers
from db.signing import SigningIdentity
from evidence.devices import DeviceMakers, manufacturer_of
from evidence.edits import Edits
from evidence.fhir import (
    FhirInputs,
    PacketInfo,
    Performer,
    RawFileInfo,
    SignerInfo,
    SignOffInfo,
    fhir_bundle,
)
from evidence.rules import Rules
from web.queries import raw_files_of
from web.signoff import MAX_SESSION_ID_LEN, lines_of, proposal, session_facts


def newest_packet(
    connection: Connection, session_id: str
) -> tuple[str, str | None, datetime] | None:
    """(SHA-256, packet ID, time) of the session's newest exported PDF packet, or None."""
    table = audit.audit_log
    rows = connection.execute(
        select(table.c.detail, table.c.at)
        .where(table.c.action == audit.EXPORT_PACKET, table.c.target == session_id)
        .order_by(table.c.id.desc())
    )
    for detail_text, at in rows:
        try:
            detail = json.loads(detail_text)
        except ValueError:
            continue
        sha256 = detail.get("sha256") if isinstance(detail, dict) else None
        if isinstance(sha256, str) and sha256:
            packet_id = detail.get("packet_id")
            return sha256, packet_id if isinstance(packet_id, str) else None, at
    return None


def session_bundle(
    connection: Connection,
    session_id: str,
    *,
    rules: Rules,
    edits: Edits,
    supervising_physician: str,
    identity: SigningIdentity | None,
    generated_at: datetime,
    device_makers: DeviceMakers = (),
) -> dict[str, Any] | None:
    """The session's FHIR R4 bundle; None when no stored session with evidence has this ID."""
    if len(session_id) > MAX_SESSION_ID_LEN:
        return None
    row = connection.execute(
        select(sessions.c.id, sessions.c.document).where(sessions.c.session_id == session_id)
    ).first()
    if row is None:
        return None
    facts = session_facts(connection, session_id, rules.default_profile)
    if facts is None:
        return None
    session_pk, document = row
    found = proposal(connection, facts, rules, edits, supervising_physician)
    current = found.current
    decision = found.decision
    npi = decision.rendering_npi
    names = {p.npi: p.name for p in list_providers(connection)}
    packet = newest_packet(connection, session_id)
    raw = [
        RawFileInfo(f.sha256, f.source_format, f.received_at)
        for f in raw_files_of(connection, int(session_pk))
    ]
    session = json.loads(document)
    model = str((session.get("pump") or {}).get("model", ""))
    inputs = FhirInputs(
        session=session,
        manufacturer=manufacturer_of(model, device_makers),
        evidence=facts.evidence,
        decision=decision,
        signed=None
        if current is None
        else SignOffInfo(current.version, current.author, current.created_at),
        charges=() if current is None else lines_of(current, facts.patient_id),
        performer=Performer(npi, names.get(npi)) if npi else None,
        packet=PacketInfo(
            url=f"/sessions/{session_id}/packet.pdf",
            sha256=None if packet is None else packet[0],
            packet_id=None if packet is None else packet[1],
            exported_at=None if packet is None else packet[2],
        ),
        raw_files=raw,
        signer=None if identity is None else SignerInfo(identity.fingerprint, identity.subject),
        generated_at=generated_at,
    )
    return fhir_bundle(inputs)
