"""`pumptrail audit verify` and `pumptrail audit show`: the hash-chained audit log (db/audit.py).

`audit verify [--head ID:HASH]` walks the chain from the first entry. Intact, it
prints how many entries there are and the head (`ID:HASH`), which an auditor
writes down and passes as `--head` next time: entries deleted from the end are
then noticed too. Broken, it names the first broken entry and what is wrong there,
and exits 1.

`audit show [--action A] [--actor U] [--since DATE] [--target T] [--limit N]
[--json]` lists entries, oldest first (with `--limit`, the newest N). Entries
hold no patient identifiers, so nothing is masked.

Exit status 0; 1 when the chain is broken; 2 when `--head`, `--limit`, the
settings or the database cannot be used.
"""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any

from pumptrail.commands import set_handler
from pumptrail.commands.db import add_database_arguments, open_from_settings, resolve
from pumptrail.errors import CommandError

if TYPE_CHECKING:
    from db.audit import AuditEntry

SETTINGS = ("db", "data_dir")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("audit", help="audit log: verify the hash chain, show entries")
    actions = parser.add_subparsers(dest="audit_action", metavar="ACTION", required=True)

    verify = actions.add_parser("verify", help="walk the hash chain; name the first broken entry")
    verify.add_argument(
        "--head",
        metavar="ID:HASH",
        help="the head printed by an earlier verify: it must still be there, unchanged",
    )
    add_database_arguments(verify, SETTINGS)
    set_handler(verify, run_verify)

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

    try:
        head = None if args.head is None else audit.parse_head(args.head)
    except ValueError as exc:
        raise CommandError(f"--head: {exc}") from exc
    engine = open_from_settings(resolve(args))
    try:
        with engine.connect() as connection:
            broken = audit.verify(connection, head=head)
            current = audit.current_head(connection)
    finally:
        engine.dispose()
    if broken is not None:
        print(f"audit log broken at entry {broken.entry_id}: {broken.problem}: {broken.message}")
        return 1
    if current is None:
        print("audit log intact: no entries yet")
    else:
        print(f"audit log intact: {current.count} entries; head {current}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from db import audit

    if args.limit < 0:
        raise CommandError("--limit must not be negative")
    engine = open_from_settings(resolve(args))
    filters = audit.AuditFilter(
        action=args.action,
        actor=args.actor,
        target=args.target,
        since=None if args.since is None else datetime.combine(args.since, time()),
        limit=args.limit or None,
    )
    try:
        with engine.connect() as connection:
            entries = audit.show(connection, filters)
    finally:
        engine.dispose()
    for entry in entries:
        print(entry_json(entry) if args.json else entry_line(entry))
    if not entries and not args.json:
        print("no audit entries")
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
