"""`pumptrail provider add|list`: programmer operator IDs mapped to people with an NPI.

`provider add OPERATOR --npi NPI --name NAME --role physician|qhp|nurse|technician`
maps the operator ID a programmer logs to a person; the NPI's check digit is
validated (docs/coding-rules.md §9.3: Luhn over `80840` + the first nine digits).
The setting `supervising_physician` names (by operator ID) the clinic's default
supervising physician for staff-performed visits.

Every add is recorded in the audit log (`provider_add`). Exit status 0; 1 when the
provider cannot be added (a bad NPI, an unknown role, an operator mapped already);
2 when the settings or database cannot be used.
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
# The roles of `evidence.payers.PROVIDER_ROLES`, here so that building the parser
# imports no room (tests/pumptrail/test_payer_cli.py checks that the two agree).
ROLES = ("physician", "qhp", "nurse", "technician")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("provider", help="operator IDs mapped to people with an NPI")
    actions = parser.add_subparsers(dest="provider_action", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="map an operator ID to a person with an NPI")
    add.add_argument("operator", metavar="OPERATOR")
    add.add_argument("--npi", required=True, help="ten digits, the last a check digit")
    add.add_argument("--name", required=True, help="the person's name")
    add.add_argument("--role", required=True, choices=ROLES)
    add_database_arguments(add, SETTINGS)
    set_handler(add, run_add)

    show = actions.add_parser("list", help="list the mapped operators")
    add_database_arguments(show, SETTINGS)
    set_handler(show, run_list)


def run_add(args: argparse.Namespace) -> int:
    from db import audit
    from db.engine import write_transaction
    from db.payers import add_provider
    from evidence.payers import CoverageError

    engine = open_from_settings(resolve(args))
    try:
        with write_transaction(engine) as connection:
            provider = add_provider(
                connection, args.operator, npi=args.npi, name=args.name, role=args.role
            )
            audit.append(
                connection,
                actor=audit.cli_actor(),
                action=audit.PROVIDER_ADD,
                target=f"operator:{provider.operator_id}",
                detail={"npi": provider.npi, "role": provider.role},
            )
    except CoverageError as exc:
        raise CommandError(str(exc), exit_status=EXIT_PROBLEM) from exc
    finally:
        engine.dispose()
    print(f"operator {provider.operator_id}: {provider.name}, {provider.role}, NPI {provider.npi}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from db.payers import list_providers

    resolved = resolve(args)
    engine = open_existing(resolved)
    try:
        with checking(resolved), engine.connect() as connection:
            found = list_providers(connection)
    finally:
        engine.dispose()
    if not found:
        print(f"no providers in {checked(resolved)}: add one with `pumptrail provider add`")
        return 0
    width = max(len(p.operator_id) for p in found)
    for p in found:
        print(f"{p.operator_id:<{width}}  {p.npi}  {p.role:<10}  {p.name}")
    return 0
