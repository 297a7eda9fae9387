"""The error a `pumptrail` command raises to stop with a one-line message.

`pumptrail.cli.main` is the one place that turns errors into output: it prints
`pumptrail CMD: message` on standard error and exits with the status of
`pumptrail.cli.EXIT_STATUS` (docs/operations.md, "Exit codes").
"""

from __future__ import annotations

from parsers.errors import PumptrailError

# Exit statuses shared by every command (docs/operations.md, "Exit codes").
EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_UNUSABLE = 2


class CommandError(PumptrailError):
    """Raised by a command when it cannot go on: the message is the one line printed
    after `pumptrail CMD:`, `exit_status` the process's exit status (2, the settings,
    database, rules or command line cannot be used, unless the command says 1)."""

    def __init__(self, message: str, *, exit_status: int = EXIT_UNUSABLE) -> None:
        super().__init__(message)
        self.exit_status = exit_status
