"""`pumptrail user add|list|set-role|disable|enable|password`: web view accounts.

`user add NAME --role coder|auditor|admin` asks for the password twice on the
terminal, or reads one line from standard input with `--password-stdin` (for
scripts; nothing is echoed). Without a terminal on standard input and without
`--password-stdin` it says so and exits 2 instead of waiting for a password
nobody can type. Passwords are hashed with argon2id (`web.users`).
Every add and change is recorded in the audit log (`user_add`, `user_change`)
with the actor `cli:<os user>`, and a change ends the account's open browser
sessions. Exit status 0, 1 when the account cannot be added or changed (the
reason on standard error), 2 when the database or settings cannot be used or no
password can be read.
"""

from __future__ import annotations

import argparse
import getpass
import sys
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
# The roles of `web.users.ROLES`, here so that building the parser does not import
# the web view (tests/pumptrail/test_cli.py checks that the two agree).
ROLES = ("coder", "auditor", "admin")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("user", help="web view accounts: add, list, change")
    actions = parser.add_subparsers(dest="user_action", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="add an account")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", required=True, choices=ROLES, help="coder, auditor or admin")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    add_database_arguments(add, SETTINGS)
    set_handler(add, run_add)

    show = actions.add_parser("list", help="list the accounts")
    add_database_arguments(show, SETTINGS)
    set_handler(show, run_list)

    role = actions.add_parser("set-role", help="change an account's role")
    role.add_argument("name", metavar="NAME")
    role.add_argument("role", choices=ROLES)
    add_database_arguments(role, SETTINGS)
    set_handler(role, run_set_role)

    for verb, disabled in (("disable", True), ("enable", False)):
        sub = actions.add_parser(verb, help=f"{verb} an account (ends its sessions)")
        sub.add_argument("name", metavar="NAME")
        add_database_arguments(sub, SETTINGS)
        set_handler(sub, run_disable, disabled=disabled)

    password = actions.add_parser("password", help="set an account's password")
    password.add_argument("name", metavar="NAME")
    password.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    add_database_arguments(password, SETTINGS)
    set_handler(password, run_password)


def read_password(from_stdin: bool) -> str:
    """One line of standard input, or asked twice on the terminal."""
    if from_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    if not _is_terminal(sys.stdin):
        raise CommandError(
            "standard input is not a terminal to ask for the password on: "
            "pass --password-stdin and send the password as one line on standard input"
        )
    first = getpass.getpass("Password: ")
    second = getpass.getpass("Password again: ")
    if first != second:
        raise CommandError("the two passwords differ", exit_status=EXIT_PROBLEM)
    return first


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def _change(args: argparse.Namespace, action: str, change: Any, detail: dict[str, object]) -> int:
    from db import audit
    from db.engine import write_transaction
    from web.users import AccountError

    engine = open_from_settings(resolve(args))
    try:
        with write_transaction(engine) as connection:
            user = change(connection)
            audit.append(
                connection,
                actor=audit.cli_actor(),
                action=audit.USER_ADD if action == "add" else audit.USER_CHANGE,
                target=user.username,
                detail=detail,
            )
    except AccountError as exc:
        raise CommandError(str(exc), exit_status=EXIT_PROBLEM) from exc
    finally:
        engine.dispose()
    print(f"user {user.username}: role {user.role}, {'disabled' if user.disabled else 'active'}")
    return 0


def run_add(args: argparse.Namespace) -> int:
    from web.users import add_user

    password = read_password(args.password_stdin)
    return _change(
        args,
        "add",
        lambda connection: add_user(connection, args.name, args.role, password),
        {"role": args.role},
    )


def run_set_role(args: argparse.Namespace) -> int:
    from web.users import set_role

    return _change(
        args,
        "set-role",
        lambda connection: set_role(connection, args.name, args.role),
        {"op": "role", "role": args.role},
    )


def run_disable(args: argparse.Namespace) -> int:
    from web.users import set_disabled

    verb = "disable" if args.disabled else "enable"
    return _change(
        args,
        verb,
        lambda connection: set_disabled(connection, args.name, args.disabled),
        {"op": verb},
    )


def run_password(args: argparse.Namespace) -> int:
    from web.users import set_password

    password = read_password(args.password_stdin)
    return _change(
        args,
        "password",
        lambda connection: set_password(connection, args.name, password),
        {"op": "password"},
    )


def run_list(args: argparse.Namespace) -> int:
    from web.users import list_users

    resolved = resolve(args)
    engine = open_existing(resolved)
    try:
        with checking(resolved), engine.connect() as connection:
            users = list_users(connection)
    finally:
        engine.dispose()
    if not users:
        print(
            f"no users in {checked(resolved)}: add one with `pumptrail user add NAME --role admin`"
        )
        return 0
    width = max(len(u.username) for u in users)
    for u in users:
        last = u.last_login_at.strftime("%Y-%m-%d %H:%M") if u.last_login_at else "never"
        state = "disabled" if u.disabled else "active"
        print(f"{u.username:<{width}}  {u.role:<7}  {state:<8}  last login {last} UTC")
    return 0
