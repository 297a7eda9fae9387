"""`pumptrail audit verify` and `pumptrail audit show`: the hash-chained audit log (db/audit.py).

`audit verify [--head ID:HASH]` first runs the database's integrity check
(`db.health`), then walks the chain from the first entry. Intact, it prints how
many entries there are and the head (`ID:HASH`), which an auditor writes down and
passes as `--head` next time: entries deleted from the end are then noticed too.
Broken, it names the first broken entry and what is wrong there, and exits 1.
Either line ends with the database and data folder it checked.

`audit show [--action A] [--actor U] [--since DATE] [--target T] [--limit N]
[--json]` lists entries, oldest first (with `--limit`, the newest N). Entries
hold no patient identifiers, so nothing is masked.

Every commit that appends audit entries also writes a signed checkpoint of the
chain's head outside the database (`db.checkpoints`). `audit verify` checks each
checkpoint's signature against the clinic's certificate and that its head is still
in the chain unchanged, so a deleted tail or a re-hashed chain is caught without a
noted `--head`; `--checkpoints FILE` checks against a copy kept elsewhere (the
journal's `pumptrail-audit` lines), `--certificate FILE` against the certificate
the clinic published. A non-empty log without any readable checkpoint is not
verified. `audit checkpoint` signs the current head by hand (a log that predates
checkpoints).

Both refuse a database that does not exist (nothing is created) or holds no
pumptrail tables (docs/auditing.md).

Exit status (docs/auditing.md): 0 intact; 1 the chain or a checkpoint is broken,
or no checkpoint covers a non-empty log; 2 cannot check: `--head`, `--limit`, the
settings or the certificate cannot be used, the database is missing or damaged,
or the check failed.
"""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pumptrail.commands import set_handler
from pumptrail.commands.db import (
    add_database_arguments,
    anchor_config,
    checked,
    checking,
    open_existing,
    record_cli_view,
    resolve,
)
from pumptrail.errors import CommandError

if TYPE_CHECKING:
    from db.audit import AuditEntry

SETTINGS = ("db", "data_dir")
VERIFY_SETTINGS = ("db", "data_dir", "signing_key")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("audit", help="audit log: verify the hash chain, show entries")
    actions = parser.add_subparsers(dest="audit_action", metavar="ACTION", required=True)

    verify = actions.add_parser("verify", help="walk the hash chain; name the first broken entry")
    verify.add_argument(
        "--head",
        metavar="ID:HASH",
        help="the head printed by an earlier verify: it must still be there, unchanged",
    )
    verify.add_argument(
        "--checkpoints",
        type=Path,
        metavar="FILE",
        help="signed checkpoints to check against (default: <data_dir>/audit-checkpoints.jsonl; "
        "pass the copy your log collector kept)",
    )
    verify.add_argument(
        "--certificate",
        type=Path,
        metavar="FILE",
        help="the clinic's certificate (PEM, from `pumptrail keys show`); default: the "
        "installation's own signing identity",
    )
    add_database_arguments(verify, VERIFY_SETTINGS)
    set_handler(verify, run_verify)

    checkpoint = actions.add_parser(
        "checkpoint", help="sign and record a checkpoint of the chain's head now"
    )
    add_database_arguments(checkpoint, VERIFY_SETTINGS)
    set_handler(checkpoint, run_checkpoint)

    show = actions.add_parser("show", help="list audit entries, oldest first")
    show.add_argument("--action", metavar="A", help="only this action (import, login, ...)")
    show.add_argument("--actor", metavar="U", help="only this actor (user, system, cli:USER)")
    show.add_argument(
        "--since",
        metavar="DATE",
        type=date.fromisoformat,
        help="only entries on or after DATE (YYYY-MM-DD, UTC)",
    )
    show.add_argument("--target", metavar="T", help="only this target (session ID, SHA-256, user)")
    show.add_argument(
        "--limit",
        metavar="N",
        type=int,
        default=100,
        help="at most the newest N entries (default 100; 0: all)",
    )
    show.add_argument("--json", action="store_true", help="one JSON object per line instead")
    add_database_arguments(show, SETTINGS)
    set_handler(show, run_show)


def run_verify(args: argparse.Namespace) -> int:
    from db import audit
    from db.checkpoints import checkpoint_path, read_lines, verify_checkpoints
    from db.signing import load_certificate

    try:
        head = None if args.head is None else audit.parse_head(args.head)
    except ValueError as exc:
        raise CommandError(f"--head: {exc}") from exc
    resolved = resolve(args)
    where = checked(resolved)
    config = anchor_config(resolved)
    certificate_file = args.certificate or config.signing_key
    if certificate_file is None:
        from db.signing import default_identity_path

        certificate_file = default_identity_path(config.data_dir)
    checkpoints = args.checkpoints or checkpoint_path(config.data_dir)
    failure, summary, unreadable = None, None, None
    with checking(resolved, what="the audit log"):
        engine = open_existing(resolved, check=True)
        try:
            with engine.connect() as connection:
                broken = audit.verify(connection, head=head)
                current = audit.current_head(connection)
                if broken is None and current is not None:
                    certificate = load_certificate(certificate_file)
                    try:
                        failure, summary = verify_checkpoints(
                            connection, read_lines(checkpoints), certificate
                        )
                    except OSError as exc:
                        unreadable = exc.strerror
        finally:
            engine.dispose()
    if broken is not None:
        print(
            f"audit log broken at entry {broken.entry_id}: {broken.problem}: {broken.message} "
            f"({where})"
        )
        return 1
    if current is None:
        print(f"audit log intact: no entries yet ({where})")
        return 0
    if unreadable is not None:
        print(
            f"audit log NOT verified: checkpoints {checkpoints}: cannot read: {unreadable} "
            f"(without them a deleted tail or a rewritten chain cannot be told from an "
            f"intact log) ({where})"
        )
        return 1
    if failure is not None:
        print(f"audit log broken at {failure} ({where})")
        return 1
    print(f"audit log intact: {current.count} entries; head {current} ({where})")
    if summary is not None:
        newest = summary.newest_head_id
        uncovered = current.entry_id - (newest or 0)
        print(
            f"checkpoints: {summary.checkpoints} signed checkpoints verified in {checkpoints} "
            f"(signer {certificate_file}); the newest covers entry {newest} ({summary.newest_at})"
            + (f"; {uncovered} newer entries not yet checkpointed" if uncovered > 0 else "")
        )
        if summary.checkpoints == 0:
            print("audit log NOT verified: no checkpoint covers any entry")
            return 1
    return 0


def run_checkpoint(args: argparse.Namespace) -> int:
    from db import audit
    from db.checkpoints import ChainHead, anchor_engine

    resolved = resolve(args)
    with checking(resolved, what="the audit log"):
        engine = open_existing(resolved)
    try:
        writer = anchor_engine(engine, anchor_config(resolved))
        with engine.connect() as connection:
            head = audit.current_head(connection)
        if head is None:
            print("audit log empty: nothing to checkpoint")
            return 0
        writer.write(ChainHead(head.entry_id, head.entry_hash, head.count))
    finally:
        engine.dispose()
    print(f"checkpoint written to {writer.path}: entry {head.entry_id} ({head.entry_hash})")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from db import audit

    if args.limit < 0:
        raise CommandError("--limit must not be negative")
    resolved = resolve(args)
    engine = open_existing(resolved)
    filters = audit.AuditFilter(
        action=args.action,
        actor=args.actor,
        target=args.target,
        since=None if args.since is None else datetime.combine(args.since, time()),
        limit=args.limit or None,
    )
    try:
        with checking(resolved), engine.connect() as connection:
            entries = audit.show(connection, filters)
        if entries:
            with checking(resolved):
                record_cli_view(
                    engine,
                    resolved,
                    audit.VIEW_AUDIT,
                    command="pumptrail audit show",
                    filters={
                        "action": args.action,
                        "actor": args.actor,
                        "target": args.target,
                        "since": None if args.since is None else args.since.isoformat(),
                        "limit": args.limit,
                    },
                    ids_key="entry_ids",
                    ids=[str(entry.id) for entry in entries],
                )
    finally:
        engine.dispose()
    for entry in entries:
        print(entry_json(entry) if args.json else entry_line(entry))
    if not entries and not args.json:
        print(f"no audit entries ({checked(resolved)})")
    return 0


def entry_line(entry: AuditEntry) -> str:
    """`ID  AT  ACTOR  ACTION  TARGET  DETAIL` on one line."""
    from db import audit

    detail = json.dumps(entry.detail, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return (
        f"{entry.id:>6}  {audit.at_text(entry.at)}  {entry.actor}  {entry.action}  "
        f"{entry.target or '-'}  {detail}"
    )


def entry_json(entry: AuditEntry) -> str:
    from db import audit

    return json.dumps(
        {
            "id": entry.id,
            "at": audit.at_text(entry.at),
            "actor": entry.actor,
            "action": entry.action,
            "target": entry.target,
            "detail": entry.detail,
            "prev_hash": entry.prev_hash,
            "entry_hash": entry.entry_hash,
        },
        ensure_ascii=False,
    )
