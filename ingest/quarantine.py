"""Quarantine records: the one owner of refused files and their `<name>.error.json`.

A file the import pipeline refuses (docs/formats.md: not an export, or an
export that breaks its format) is moved out of the inbox into the quarantine
folder, beside a JSON error record named `<name>.error.json` (error code,
message, offset or line, record, time UTC, parser version). Three jobs:

- write (`quarantine_file`, used by the inbox watcher `ingest.watch`): the
  record is written atomically (temporary file, fsync, rename, fsync of the
  folder), then the file is moved beside it;
- list (`quarantined_files`, `quarantined_file`, used by the web imports page):
  each file with what its record says;
- re-queue (`requeue`, the web imports page's admin action): the file goes back
  into the inbox under a free name and its record is removed.

A move never overwrites: it is a hard link to the destination followed by
removing the source name (the folder fsync'ed in between); on another file
system, or one without hard links, a copy, fsync'ed, then linked into place. A
crash between link and unlink leaves one file under two names, which the next
move recognises (same inode) and finishes. A name already taken gets the
SHA-256 prefix: `<stem>.<sha256[:12]><suffix>` (then `.2`, `.3`, ...). The
archive of imported files (`ingest.watch`) moves files the same way
(`move_into`).
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.durable import NO_HARD_LINKS, fsync_dir, link_to_free_name
from ingest.pipeline import ImportResult
from parsers.registry import PARSER_VERSION

ERROR_SUFFIX = ".error.json"
# Hex digits of the SHA-256 put into a clashing name.
HASH_IN_NAME = 12


# ---------------------------------------------------------------------------
# Names in a destination folder


def candidate_names(filename: str, digest: str | None) -> Iterable[str]:
    """The names a file may take in a folder, in order of preference."""
    yield filename
    path = Path(filename)
    stem, suffix = (path.stem, path.suffix) if path.stem else (filename, "")
    tag = digest[:HASH_IN_NAME] if digest else datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    yield f"{stem}.{tag}{suffix}"
    counter = 2
    while True:
        yield f"{stem}.{tag}.{counter}{suffix}"
        counter += 1


def free_name(folder: Path, filename: str, digest: str | None) -> Path:
    """The first name not taken in `folder` (error files count as taken names' companions)."""
    for candidate in candidate_names(filename, digest):
        target = folder / candidate
        if not os.path.lexists(target):
            return target
    raise RuntimeError("unreachable: the name generator is endless")  # pragma: no cover


def same_file_in(folder: Path, path: Path, digest: str | None) -> Path | None:
    """A name in `folder` that is already a hard link to `path` (an interrupted move)."""
    try:
        source = os.stat(path)
    except OSError:
        return None
    if source.st_nlink < 2:
        return None
    for candidate in candidate_names(path.name, digest):
        target = folder / candidate
        try:
            found = os.stat(target)
        except FileNotFoundError:
            return None
        if (found.st_dev, found.st_ino) == (source.st_dev, source.st_ino):
            return target
    return None  # pragma: no cover - the name generator is endless


# ---------------------------------------------------------------------------
# Moving without overwriting


def move_into(
    path: Path,
    folder: Path,
    digest: str | None,
    *,
    destination: Path | None = None,
    durable: bool = True,
) -> Path:
    """Link `path` into `folder` under a free name, then unlink it (never overwrites)."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = same_file_in(folder, path, digest)
    if existing is not None:
        # A crash came between the link and the unlink: finish the move.
        _unlink(path)
        return existing
    target = destination or free_name(folder, path.name, digest)
    while True:
        try:
            os.link(path, target)
            break
        except FileExistsError:
            target = free_name(folder, path.name, digest)
        except OSError as exc:
            if exc.errno != errno.EXDEV and exc.errno not in NO_HARD_LINKS:
                raise
            target = _copy_in(path, folder, target, digest, durable=durable)
            break
    if durable:
        fsync_dir(folder)
    _unlink(path)
    return target


def _copy_in(path: Path, folder: Path, target: Path, digest: str | None, *, durable: bool) -> Path:
    """Another filesystem, or no hard links: copy, fsync, then publish without overwriting."""
    temp = folder / f".{target.name}.{os.getpid()}.part"
    shutil.copyfile(path, temp)
    if durable:
        with temp.open("rb") as handle:
            os.fsync(handle.fileno())
    try:
        others = iter(lambda: free_name(folder, path.name, digest), None)
        return link_to_free_name(temp, itertools.chain([target], others))
    finally:
        if temp.exists():
            temp.unlink()


def _unlink(path: Path) -> None:
    """Remove the source name; not fsync'ed: should a power cut undo it, the file is
    back in the inbox as a second name of the moved one, and the next poll
    recognises it (a duplicate, the same inode) and removes it again."""
    path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------
# Writing a record


def error_record(result: ImportResult) -> dict[str, Any]:
    """The error part of `<name>.error.json` for a refused or failed import."""
    error: Mapping[str, Any] = result.error or {}
    position = error.get("position")
    kind = position.get("kind") if isinstance(position, Mapping) else None
    value = position.get("value") if isinstance(position, Mapping) else None
    if result.outcome == "failed":
        code = "internal_error"
    elif error.get("code"):
        code = str(error["code"])
    else:
        code = "unreadable"
    return {
        "code": code,
        "message": str(error.get("message") or result.detail),
        "text": str(error.get("text") or result.detail),
        "position": position if isinstance(position, Mapping) else None,
        "offset": value if kind == "offset" else None,
        "line": value if kind == "line" else None,
        "record_index": error.get("record_index"),
        "record_type": error.get("record_type"),
    }


def write_json(target: Path, record: Mapping[str, Any], *, durable: bool = True) -> None:
    """Write a JSON record atomically (temporary file, fsync, rename) and durably."""
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    data = (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    with temp.open("wb") as handle:
        handle.write(data)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(temp, target)
    if durable:
        fsync_dir(target.parent)


def quarantine_file(
    path: Path,
    folder: Path,
    digest: str | None,
    error: Mapping[str, Any],
    *,
    name: str,
    now: float,
    durable: bool = True,
) -> Path:
    """Write `<name>.error.json` into `folder`, then move the file beside it.

    `name`: the file's name relative to the inbox (recorded as `file`); `now`:
    the quarantine time (seconds since the epoch). Returns where the file went.
    """
    folder.mkdir(parents=True, exist_ok=True)
    existing = same_file_in(folder, path, digest)
    destination = existing or free_name(folder, path.name, digest)
    record = {
        "file": name,
        "sha256": digest,
        "size": _size(path),
        **error,
        "quarantined_at_utc": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "parser_version": PARSER_VERSION,
    }
    write_json(destination.with_name(destination.name + ERROR_SUFFIX), record, durable=durable)
    return move_into(path, folder, digest, destination=destination, durable=durable)


def _size(path: Path) -> int | None:
    try:
        status = os.lstat(path)
    except OSError:
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) else None


# ---------------------------------------------------------------------------
# Listing


@dataclass(frozen=True, slots=True)
class QuarantinedFile:
    """One file in the quarantine and its error record (empty when it has none or unreadable)."""

    path: Path
    record: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def error_file(self) -> Path:
        return self.path.with_name(self.path.name + ERROR_SUFFIX)

    @property
    def sha256(self) -> str:
        return str(self.record.get("sha256") or "")

    @property
    def code(self) -> str:
        return str(self.record.get("code") or "unknown")

    @property
    def message(self) -> str:
        return str(self.record.get("message") or "no error record beside the file")

    @property
    def offset(self) -> int | None:
        value = self.record.get("offset")
        return value if isinstance(value, int) else None

    @property
    def line(self) -> int | None:
        value = self.record.get("line")
        return value if isinstance(value, int) else None

    @property
    def quarantined_at_utc(self) -> str | None:
        """`YYYY-MM-DDTHH:MM:SSZ` as recorded, or None."""
        value = self.record.get("quarantined_at_utc")
        return str(value) if value else None


def _read_record(path: Path) -> Mapping[str, Any]:
    try:
        parsed = json.loads(path.with_name(path.name + ERROR_SUFFIX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return parsed if isinstance(parsed, Mapping) else {}


def _is_record_name(name: str) -> bool:
    return name.startswith(".") or name.endswith(ERROR_SUFFIX)


def quarantined_files(folder: Path, limit: int) -> list[QuarantinedFile]:
    """The quarantined files in name order, at most `limit`, each with its error record."""
    if not folder.is_dir():
        return []
    files = []
    for path in sorted(folder.iterdir()):
        if _is_record_name(path.name) or not path.is_file():
            continue
        files.append(QuarantinedFile(path, _read_record(path)))
        if len(files) >= limit:
            break
    return files


def quarantined_file(folder: Path, name: str) -> QuarantinedFile | None:
    """The quarantined file called `name` (a plain name, never a path), or None."""
    if not name or "/" in name or "\\" in name or _is_record_name(name):
        return None
    path = folder / name
    if not path.is_file():
        return None
    return QuarantinedFile(path, _read_record(path))


# ---------------------------------------------------------------------------
# Re-queueing


def requeue_target(inbox: Path, name: str) -> Path:
    """A free name in the inbox: `name`, else `<stem>.requeued-N.<rest>`."""
    target = inbox / name
    stem, dot, suffix = name.partition(".")
    counter = 1
    while target.exists():
        target = inbox / f"{stem}.requeued-{counter}{dot}{suffix}"
        counter += 1
    return target


def requeue(
    item: QuarantinedFile,
    inbox: Path,
    *,
    during: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> Path:
    """Move a quarantined file back into the inbox, then remove its error record.

    The move happens inside `during()` (the web app's audited write transaction:
    a move that fails records nothing); the record is removed after it. Returns
    the file's name in the inbox.
    """
    inbox.mkdir(parents=True, exist_ok=True)
    target = requeue_target(inbox, item.name)
    with during():
        if _same_device(item.path, inbox):
            os.link(item.path, target)
        else:
            _copy(item.path, target)
        item.path.unlink()
    item.error_file.unlink(missing_ok=True)
    return target


def _same_device(path: Path, folder: Path) -> bool:
    try:
        return path.stat().st_dev == folder.stat().st_dev
    except OSError:
        return False


def _copy(source: Path, target: Path) -> None:
    with source.open("rb") as reader, target.open("xb") as writer:
        while chunk := reader.read(1 << 20):
            writer.write(chunk)
