"""`pumptrail packet verify FILE.pdf`: check an evidence packet that has left the clinic.

Prints the session ID, the packet's SHA-256, the signer's certificate fingerprint
and subject, the signing time, whether the file is intact (the PAdES signature
holds over every byte, and no update was appended after it), and, with a
database (`--db`, or the default one when it exists), whether the evidence
embedded in the packet equals the evidence stored for that session now.
`--certificate FILE` also requires the signer to be that certificate (the one
the clinic published with `pumptrail keys show`).

Exit status 0 only when every check holds; 1 when one fails (changed bytes, a
foreign signer, evidence that differs); 2 when the file is not a signed packet
or cannot be read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pumptrail.commands import set_handler
from pumptrail.commands.db import add_database_arguments, open_from_settings, resolve
from pumptrail.errors import CommandError

SETTINGS = ("db", "data_dir")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("packet", help="evidence packets: verify a signed PDF")
    actions = parser.add_subparsers(dest="packet_action", metavar="ACTION", required=True)
    verify = actions.add_parser("verify", help="check a packet's signature and its evidence")
    verify.add_argument("file", type=Path, metavar="FILE.pdf")
    verify.add_argument(
        "--certificate",
        type=Path,
        metavar="FILE",
        help="the clinic's certificate (PEM): the packet must be signed by it",
    )
    verify.add_argument(
        "--no-db",
        action="store_true",
        help="do not compare with a database (a copy checked away from the clinic)",
    )
    add_database_arguments(verify, SETTINGS)
    set_handler(verify, run_verify)


def run_verify(args: argparse.Namespace) -> int:
    from db.signing import fingerprint_of, load_certificate
    from web.packet_signing import EVIDENCE_FILE, SESSION_FILE, verify_packet

    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise CommandError(f"{args.file}: cannot read: {exc.strerror}") from exc
    check = verify_packet(data)
    failures = list(check.problems)
    session_id = _session_id(check.attachments.get(SESSION_FILE))
    print(f"packet: {args.file}")
    print(f"sha256: {check.sha256}")
    print(f"session: {session_id or 'unknown (no session.json embedded)'}")
    print(f"signer: {check.signer_subject or 'unknown'}")
    print(f"signer certificate SHA-256: {check.signer_fingerprint or 'unknown'}")
    print(f"signed at: {check.signing_time.isoformat() if check.signing_time else 'unknown'}")
    print(f"intact: {'yes' if check.intact and check.covers_whole_file else 'NO'}")
    if not check.intact:
        failures.append("the signature does not match the file's bytes (changed after signing)")
    if args.certificate is not None:
        expected = fingerprint_of(load_certificate(args.certificate))
        same = expected == check.signer_fingerprint
        print(f"signer is {args.certificate}: {'yes' if same else 'NO'}")
        if not same:
            failures.append(f"signed by {check.signer_fingerprint}, not by {expected}")
    for name in (EVIDENCE_FILE, SESSION_FILE):
        if name not in check.attachments:
            failures.append(f"{name} is not embedded")
    if not args.no_db and session_id is not None and EVIDENCE_FILE in check.attachments:
        failures.extend(_compare_with_database(args, session_id, check.attachments[EVIDENCE_FILE]))
    for failure in failures:
        print(f"FAILED: {failure}")
    print("packet verified" if not failures else "packet NOT verified")
    return 0 if not failures else 1


def _session_id(document: bytes | None) -> str | None:
    if document is None:
        return None
    try:
        value = json.loads(document).get("session_id")
    except (ValueError, AttributeError):
        return None
    return str(value) if value else None


def _compare_with_database(args: argparse.Namespace, session_id: str, embedded: bytes) -> list[str]:
    from db.queries import evidence_document_text
    from evidence.payers import without_applicable

    resolved = resolve(args)
    engine = open_from_settings(resolved)
    try:
        with engine.connect() as connection:
            stored = evidence_document_text(connection, session_id)
    finally:
        engine.dispose()
    if stored is None:
        print(f"database {resolved.db}: no stored evidence for this session")
        return [f"session {session_id} has no stored evidence in this database"]
    carried = json.loads(embedded)
    # `applicable` and `no_payer_on_file` are looked up from coverage when a packet is
    # made, not stored: the stored evidence is compared without them.
    same = json.loads(stored) == (
        without_applicable(carried) if isinstance(carried, dict) else carried
    )
    print(f"embedded evidence equals the stored evidence: {'yes' if same else 'NO'}")
    if isinstance(carried, dict) and "applicable" in carried:
        found = carried["applicable"]
        print(
            f"applicable when the packet was made: {found.get('procedure')} under "
            f"{found.get('profile')} (payer {found.get('payer') or 'none on file'})"
        )
    return [] if same else ["the embedded evidence differs from the stored evidence"]
