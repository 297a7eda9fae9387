"""Progress of long commands (`pumptrail import`, `pumptrail replay`) on a terminal.

A bar on standard error (files or pumps done, rate, time left; tqdm) when standard
error is a terminal; nothing at all in a pipe, a file, or under systemd (which sets
`INVOCATION_ID` and, with its output going to the journal, `JOURNAL_STREAM`).
tqdm is imported only when a bar is shown.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from types import TracebackType
from typing import Any, TextIO

# Environment variables systemd sets for the processes of a unit.
SYSTEMD_VARIABLES = ("INVOCATION_ID", "JOURNAL_STREAM")


def wanted(stream: TextIO | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether a bar goes to `stream` (standard error): a terminal, not under systemd."""
    stream = sys.stderr if stream is None else stream
    environ = os.environ if environ is None else environ
    if any(environ.get(name) for name in SYSTEMD_VARIABLES):
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False


class Progress:
    """A progress bar of `total` items (None: not known yet), or nothing when no bar
    is wanted.

    `write` prints a line on standard output above the bar (the bar is cleared and
    drawn again below it), or simply prints it when there is no bar.
    """

    def __init__(self, total: int | None, *, unit: str, show: bool | None = None) -> None:
        self._bar: Any = None
        if show if show is not None else wanted():
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit=f" {unit}", file=sys.stderr, leave=False)

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def advance(self, count: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def moved_to(self, done: int, total: int) -> None:
        """`done` of `total` items finished (a callback of `ingest.replay.Replayer.run`)."""
        if self._bar is not None:
            known = self._bar.total == total
            self._bar.total = total
            self._bar.update(done - self._bar.n)
            if not known:
                self._bar.refresh()  # the first sight of the total is drawn at once

    def write(self, line: str) -> None:
        if self._bar is None:
            print(line, flush=True)
        else:
            self._bar.write(line, file=sys.stdout)
            sys.stdout.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.close()
