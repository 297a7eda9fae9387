"""The `pumptrail` command: one group, one module per subcommand (datasette-style).

Each module in `pumptrail.commands` exposes `register(subparsers)`, which adds its
parser and names its handler (`pumptrail.commands.set_handler`): a function taking
the parsed arguments and returning the exit status. Building the parser imports
no room beyond the settings: a handler imports what it needs when it runs.

`main` is the one place where errors become output and exit statuses
(docs/operations.md, "Exit codes"): a `PumptrailError` is printed as
`pumptrail CMD: message` on standard error and exits with the status
`exit_status_of` gives it; a closed standard output (`pumptrail ... | head`)
ends the command quietly with status 141; Ctrl-C with 130.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from parsers.errors import PumptrailError
from pumptrail import __version__
from pumptrail.errors import EXIT_PROBLEM, EXIT_UNUSABLE

# Subcommand modules, in the order `pumptrail --help` lists them.
COMMANDS: tuple[str, ...] = (
    "decode",
    "import_",
    "evidence",
    "db",
    "run",
    "status",
    "receive",
    "due",
    "serve",
    "user",
    "payer",
    "provider",
    "token",
    "replay",
    "raw",
    "audit",
    "decisions",
    "charges",
    "export",
    "keys",
    "packet",
    "settings",
    "demo",
)

# 128 + SIGPIPE: what a shell reports for a program killed by a closed pipe.
EXIT_BROKEN_PIPE = 141
# 128 + SIGINT.
EXIT_INTERRUPTED = 130

# Exit status of the errors a command lets through, by the class's module and name
# (the first class of the error's MRO listed here wins), so that this table needs no
# import of the rooms. `CommandError` carries its own status (`exit_status`); any
# other PumptrailError exits EXIT_PROBLEM.
EXIT_STATUS: Mapping[str, int] = {
    "pumptrail.settings.SettingsError": EXIT_UNUSABLE,
    "ingest.service.ServiceError": EXIT_UNUSABLE,
    "db.migrate.SchemaError": EXIT_UNUSABLE,
    "db.engine.DatabaseUrlError": EXIT_UNUSABLE,
    "evidence.rules.RulesError": EXIT_UNUSABLE,
    "web.auth.SecretError": EXIT_UNUSABLE,
    "ingest.replay.fixtures.CaseError": EXIT_UNUSABLE,
    "ingest.rawstore.RawStoreModeError": EXIT_UNUSABLE,
    "ingest.serial_receiver.SerialPortError": EXIT_UNUSABLE,
    "parsers.errors.DecodeError": EXIT_UNUSABLE,
    "ingest.serial_receiver.TransferFailed": EXIT_PROBLEM,
    "web.users.AccountError": EXIT_PROBLEM,
    "evidence.payers.CoverageError": EXIT_PROBLEM,
    "web.tokens.TokenError": EXIT_PROBLEM,
    "db.signing.SigningKeyError": EXIT_UNUSABLE,
    "db.grants.GrantError": EXIT_UNUSABLE,
    "web.packet_signing.PacketVerifyError": EXIT_UNUSABLE,
}

EPILOG = """\
exit status:
  0    done, nothing wrong found
  1    the command's work found a problem: a refused file, a difference on replay,
       a broken audit chain, an account that cannot be changed, a failed transfer,
       a service needing attention (status)
  2    the command line, settings, rules, folders or database cannot be used; a
       command that reads or checks: the database is missing, damaged, or the
       check failed ("cannot check", never "all clear")
  3    run: the database is damaged; the service stopped (restore from a backup)
  130  interrupted (Ctrl-C)
  141  standard output was closed early (e.g. `pumptrail audit show | head`)
Each command's help and docs/operations.md ("Exit codes") say which apply.
"""


def exit_status_of(error: PumptrailError) -> int:
    """The exit status for an error that reached `main` (docs/operations.md, "Exit codes")."""
    status = getattr(error, "exit_status", None)
    if isinstance(status, int):
        return status
    for cls in type(error).__mro__:
        found = EXIT_STATUS.get(f"{cls.__module__}.{cls.__qualname__}")
        if found is not None:
            return found
    return EXIT_PROBLEM


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="pumptrail",
        description="Evidence from implanted drug-pump programmer session logs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pumptrail {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"pumptrail.commands.{name}")
        module.register(subparsers)
    return parser


def dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command; a PumptrailError becomes one line and its exit status."""
    try:
        status: int = args.handler(args)
    except PumptrailError as exc:
        prog = getattr(args, "prog", None) or f"pumptrail {args.command}"
        print(f"{prog}: {exc}", file=sys.stderr)
        return exit_status_of(exc)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = dispatch(args)
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return status


def _silence_stdout() -> None:
    """Point standard output at /dev/null: the reader is gone (Python docs, "Note on SIGPIPE").

    Without this, the interpreter's final flush of the buffered output fails again
    and prints "Exception ignored ... BrokenPipeError" at exit.
    """
    try:
        fileno = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file descriptor (a test's capture): nothing is flushed at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fileno)
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
