"""`pumptrail keys init` and `pumptrail keys show`: the clinic's signing identity.

The identity (one PEM file: an ECDSA P-256 key and a self-signed certificate naming
the clinic) signs audit checkpoints and evidence packets (docs/auditing.md). It
lives outside the database: `<data_dir>/keys/clinic-signing.pem` (folder 0700,
file 0600), or the file the `signing_key` setting names (a systemd
`LoadCredential=` path, which is never created here).

`keys init` creates it when absent and prints its fingerprint; run again, it
changes nothing. `keys show` prints the certificate (PEM) and its SHA-256
fingerprint: what a clinic hands to its auditors, and what `audit verify
--certificate` and `packet verify --certificate` check against.

Exit status 0; 2 when the identity exists but cannot be used (unreadable, not
PEM, a certificate of another key) or the configured file is missing.
"""

from __future__ import annotations

import argparse
from typing import Any

from pumptrail.commands import set_handler
from pumptrail.commands.db import add_database_arguments, anchor_config, resolve

SETTINGS = ("data_dir", "signing_key", "clinic_name")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("keys", help="the clinic signing identity: create, show")
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    init = actions.add_parser("init", help="create the signing key and certificate (idempotent)")
    add_database_arguments(init, SETTINGS)
    set_handler(init, run_init)
    show = actions.add_parser("show", help="print the certificate and its SHA-256 fingerprint")
    add_database_arguments(show, SETTINGS)
    set_handler(show, run_show)


def run_init(args: argparse.Namespace) -> int:
    from db.signing import ensure_identity

    config = anchor_config(resolve(args))
    identity, created = ensure_identity(config.data_dir, config.signing_key, config.clinic_name)
    state = "created" if created else "already there, unchanged"
    print(f"signing identity {identity.path}: {state}")
    print(f"subject: {identity.subject}")
    print(f"certificate SHA-256: {identity.fingerprint}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from db.signing import load_identity

    config = anchor_config(resolve(args))
    path = config.signing_key if config.signing_key is not None else None
    if path is None:
        from db.signing import default_identity_path

        path = default_identity_path(config.data_dir)
    identity = load_identity(path)
    certificate = identity.certificate
    print(f"signing identity: {identity.path}")
    print(f"subject: {identity.subject}")
    print(
        f"valid: {certificate.not_valid_before_utc:%Y-%m-%d} to "
        f"{certificate.not_valid_after_utc:%Y-%m-%d}"
    )
    print(f"certificate SHA-256: {identity.fingerprint}")
    print(identity.certificate_pem(), end="")
    return 0
