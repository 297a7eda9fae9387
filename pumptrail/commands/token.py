"""`pumptrail token create|list|revoke`: API tokens of other systems (docs/web.md "The JSON API").

`token create USER [--name LABEL]` makes a bearer token that acts for USER (with
USER's role at the time of each request) on the JSON API. The token is printed
once, alone on the last line of standard output; only its SHA-256 is stored, so
a lost token cannot be shown again: revoke it and create another.
`token list [--user USER]` shows each token's ID, account, label, when it was
created, last used (to the minute) and revoked, never the token.
`token revoke ID` refuses the token from then on; revoking a revoked token
changes nothing. Create and revoke are recorded in the audit log
(`token_create`, `token_revoke`) with the actor `cli:<os user>`, the account as
target and the token's ID in the detail. Exit status 0; 1 when the account does
not exist or is disabled, the label is unusable, or there is no token with that
ID; 2 when the database or settings cannot be used.
"""

from __future__ import annotations

import argparse
from typing import Any

from pumptrail.commands import set_handler
from pumptrail.commands.db import (
    add_database_arguments,
    checked,
    checking,
    open_existing,
    open_from_settings,
    resolve,
)
from pumptrail.errors import EXIT_PROBLEM, CommandError

SETTINGS = ("db", "data_dir")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "token", help="API tokens of other systems: create, list, revoke"
    )
    actions = parser.add_subparsers(dest="token_action", metavar="ACTION", required=True)

    create = actions.add_parser(
        "create", help="create a token for an account (printed once, on the last line)"
    )
    create.add_argument("user", metavar="USER", help="the account the token acts for")
    create.add_argument(
        "--name", dest="label", default="", metavar="LABEL", help="what the token is for"
    )
    add_database_arguments(create, SETTINGS)
    set_handler(create, run_create)

    show = actions.add_parser("list", help="list the tokens (never the tokens themselves)")
    show.add_argument("--user", metavar="USER", help="only this account's tokens")
    add_database_arguments(show, SETTINGS)
    set_handler(show, run_list)

    revoke = actions.add_parser("revoke", help="revoke a token by its ID")
    revoke.add_argument("token_id", metavar="ID", type=int, help="the ID `token list` shows")
    add_database_arguments(revoke, SETTINGS)
    set_handler(revoke, run_revoke)


def run_create(args: argparse.Namespace) -> int:
    from db import audit
    from db.engine import write_transaction
    from web.tokens import TokenError, create_token

    engine = open_from_settings(resolve(args))
    try:
        with write_transaction(engine) as connection:
            created, token = create_token(connection, args.user, args.label)
            audit.append(
                connection,
                actor=audit.cli_actor(),
                action=audit.TOKEN_CREATE,
                target=created.username,
                detail={"token_id": created.id, "label": created.label},
            )
    except TokenError as exc:
        raise CommandError(str(exc), exit_status=EXIT_PROBLEM) from exc
    finally:
        engine.dispose()
    label = f" ({created.label})" if created.label else ""
    print(f"token {created.id} for {created.username}{label}: shown once, store it now")
    print(token)
    return 0


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def run_list(args: argparse.Namespace) -> int:
    from web.tokens import TokenError, list_tokens

    resolved = resolve(args)
    engine = open_existing(resolved)
    try:
        with checking(resolved), engine.connect() as connection:
            tokens = list_tokens(connection, args.user)
    except TokenError as exc:
        raise CommandError(str(exc), exit_status=EXIT_PROBLEM) from exc
    finally:
        engine.dispose()
    if not tokens:
        print(
            f"no API tokens in {checked(resolved)}: create one with `pumptrail token create USER`"
        )
        return 0
    rows = [
        (
            str(t.id),
            t.username,
            t.label or "-",
            _when(t.created_at),
            _when(t.last_used_at),
            _when(t.revoked_at),
        )
        for t in tokens
    ]
    header = ("ID", "USER", "LABEL", "CREATED (UTC)", "LAST USED", "REVOKED")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    from db import audit
    from db.engine import write_transaction
    from web.tokens import TokenError, revoke_token

    engine = open_from_settings(resolve(args))
    try:
        with write_transaction(engine) as connection:
            token, revoked_now = revoke_token(connection, args.token_id)
            if revoked_now:
                audit.append(
                    connection,
                    actor=audit.cli_actor(),
                    action=audit.TOKEN_REVOKE,
                    target=token.username,
                    detail={"token_id": token.id, "label": token.label},
                )
    except TokenError as exc:
        raise CommandError(str(exc), exit_status=EXIT_PROBLEM) from exc
    finally:
        engine.dispose()
    when = _when(token.revoked_at)
    state = "revoked" if revoked_now else "already revoked"
    print(f"token {token.id} of {token.username}: {state} ({when} UTC)")
    return 0
