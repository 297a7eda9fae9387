"""Service health: the status file the service writes, and what `pumptrail status` reports.

The service (`ingest.service`) writes `<data_dir>/service-status.json` after every
poll: atomically (temporary file, rename), 0600 whatever the umask. It holds the
last poll time, the files seen in the inbox, the files being retried and those
needing attention (named by SHA-256 prefix or a hash of their name, never by
name: docs/operations.md, "Service health"), whether the database is in an
outage, and `database_check`, the result of the last database health check
(`None` until a check fills it: `Service.database_check`).

`health` joins that file with what can be read directly: the files in the inbox
now, the quarantine count, and the last audit checkpoint (the last line of
`<data_dir>/audit-checkpoints.jsonl`, its `head_id` and `at`). Something needs
attention when a file does, when the service has not polled for a while (or
never), or when the database check failed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.durable import PRIVATE_FILE_MODE, make_private_dir

STATUS_FILE = "service-status.json"
CHECKPOINTS_FILE = "audit-checkpoints.jsonl"
STATUS_VERSION = 1
# A status file older than this many poll intervals (and at least STALE_MIN_SECONDS)
# means the service is not polling.
STALE_POLLS = 10
STALE_MIN_SECONDS = 60.0
# Bytes read from the end of the checkpoint file to find its last line.
_TAIL_BYTES = 64 * 1024


def status_path(data_dir: Path) -> Path:
    return Path(data_dir) / STATUS_FILE


def write_status(path: Path, status: Mapping[str, Any]) -> None:
    """Replace the status file atomically with `status` (0600; not fsync'ed: it is rewritten
    every poll and a lost one only looks older)."""
    make_private_dir(path.parent)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = (json.dumps({"version": STATUS_VERSION, **status}, indent=2) + "\n").encode()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), PRIVATE_FILE_MODE)
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def read_status(path: Path) -> dict[str, Any] | None:
    """The status file's content, or None when it is missing or unreadable."""
    try:
        parsed = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return parsed if isinstance(parsed, dict) else None


def last_checkpoint(data_dir: Path) -> dict[str, Any] | None:
    """`head_id` and `at` of the last line of `<data_dir>/audit-checkpoints.jsonl`, or None."""
    path = Path(data_dir) / CHECKPOINTS_FILE
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - _TAIL_BYTES))
            tail = handle.read()
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            return {"head_id": parsed.get("head_id"), "at": parsed.get("at")}
    return None


def _parse_utc(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def health(
    *,
    data_dir: Path,
    inbox_files: int,
    quarantined: int,
    poll_seconds: float,
    now: float,
) -> dict[str, Any]:
    """The service's health as `pumptrail status` prints it (`--json`: this mapping)."""
    path = status_path(data_dir)
    status = read_status(path)
    last_poll = None if status is None else _parse_utc(status.get("last_poll_utc"))
    stale_after = max(STALE_MIN_SECONDS, STALE_POLLS * poll_seconds)
    attention_files = [] if status is None else list(status.get("needing_attention") or [])
    database_check = None if status is None else status.get("database_check")
    problems: list[str] = []
    if status is None and os.path.lexists(path):
        problems.append(f"cannot read {path} (run as the service's user)")
    elif last_poll is None:
        problems.append("the service has not polled the inbox (not running?)")
    elif now - last_poll > stale_after:
        problems.append(f"the service's last poll was {round(now - last_poll)} s ago")
    if attention_files:
        problems.append(f"{len(attention_files)} file(s) in the inbox need attention")
    if isinstance(database_check, Mapping) and database_check.get("ok") is False:
        problems.append("the last database check failed")
    return {
        "needs_attention": bool(problems),
        "problems": problems,
        "last_poll_utc": None if status is None else status.get("last_poll_utc"),
        "last_poll_age_s": None if last_poll is None else round(now - last_poll, 1),
        "files_waiting": inbox_files,
        "files_retrying": 0 if status is None else status.get("files_retrying", 0),
        "files_needing_attention": attention_files,
        "quarantined": quarantined,
        "database_outage": False if status is None else bool(status.get("database_outage")),
        "database_check": database_check,
        "last_audit_checkpoint": last_checkpoint(data_dir),
    }
