"""Quarantine records: the one owner of refused files and their `<name>.error.json`.

A file the import pipeline refuses (docs/formats.md: not an export, or an
export that breaks its format) is moved out of the inbox into the quarantine
folder, beside a JSON error record named `<name>.error.json` (error code,
offset or line, record index and type, the kinds of the expected and found
values, time UTC, parser version). The record holds nothing copied from the file:
a found value may be a patient's name (`error_record`, `safe_message`). Files and
records are 0600 and the folder 0700 whatever the umask. Jobs:

- write (`quarantine_file`, used by the inbox watcher `ingest.watch`): the
  record is written atomically (temporary file, fsync, rename, fsync of the
  folder), then the file is moved beside it;
- list (`quarantined_files`, `quarantined_file`, used by the web imports page):
  each file with what its record says;
- re-queue (`requeue`, the web imports page's admin action, and the watcher
  when a quarantined file changed after it was quarantined, `changed_files`):
  the file goes back into the inbox under a free name and its record is removed;
- dismiss (`dismiss`, the web imports page's admin action): the file and its
  record leave the quarantine; its bytes stay in the raw store;
- symbolic links (`quarantine_link`): a link found in the inbox is moved here
  as a link, never followed, beside a record saying so.

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
import hashlib
import itertools
import json
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.durable import (
    NO_HARD_LINKS,
    PRIVATE_FILE_MODE,
    fsync_dir,
    link_to_free_name,
    make_private,
    make_private_dir,
)
from ingest.pipeline import ImportResult
from parsers.errors import DecodeError
from parsers.registry import PARSER_VERSION

ERROR_SUFFIX = ".error.json"
# Hex digits of the SHA-256 put into a clashing name.
HASH_IN_NAME = 12
# Error codes of a file that may be cut short because its writer has not finished
# (docs/formats.md §9.1): the watcher waits before quarantining such a file.
TRUNCATION_CODES = frozenset({"truncated_header", "truncated_record", "missing_end"})
# A CSV row with too few fields is a truncation only on the file's last line.
SHORT_ROW_CODE = "field_count"
SYMLINK_CODE = "symlink"


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
    """Link `path` into `folder` under a free name, then unlink it (never overwrites).

    The file ends up 0600 (unless another user owns it: the folder is 0700).
    """
    make_private_dir(folder)
    existing = same_file_in(folder, path, digest)
    if existing is not None:
        # A crash came between the link and the unlink: finish the move.
        make_private(existing)
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
    make_private(target)
    if durable:
        fsync_dir(folder)
    _unlink(path)
    return target


def _copy_in(path: Path, folder: Path, target: Path, digest: str | None, *, durable: bool) -> Path:
    """Another filesystem, or no hard links: copy, fsync, then publish without overwriting."""
    temp = folder / f".{target.name}.{os.getpid()}.part"
    _copy(path, temp, exclusive=False)
    source = os.stat(path)
    # The copy keeps the mtime: a quarantined file is "changed" only when its writer went on.
    os.utime(temp, ns=(source.st_atime_ns, source.st_mtime_ns))
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


def value_kind(value: object) -> str | None:
    """What kind of value an error expected or found, never the value itself."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, bytes | bytearray):
        return "bytes"
    if isinstance(value, str):
        if value.startswith("0x"):
            return "hex"
        if value[:1] in "'\"" and value:
            return "quoted text"
        return "text"
    return type(value).__name__


def error_record(result: ImportResult) -> dict[str, Any]:
    """The error part of `<name>.error.json` for a refused or failed import.

    Code, position (offset or line), record index and type, and the kinds of the
    expected and found values; no message text of the decoder, which quotes the
    file (docs/formats.md §9.1 says what each code means).
    """
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
    failure = result.exception
    decode_error = failure if isinstance(failure, DecodeError) else None
    record: dict[str, Any] = {
        "code": code,
        "position": {"kind": kind, "value": value}
        if kind in ("offset", "line") and isinstance(value, int)
        else None,
        "offset": value if kind == "offset" else None,
        "line": value if kind == "line" else None,
        "record_index": _int_or_none(error.get("record_index")),
        "record_type": _text_or_none(error.get("record_type")),
        "expected_kind": None if decode_error is None else value_kind(decode_error.expected),
        "found_kind": None if decode_error is None else value_kind(decode_error.found),
    }
    if code == "internal_error" and failure is not None:
        # The exception's class, not its text (which may quote the file).
        record["exception"] = type(failure).__name__
    record["message"] = safe_message(record)
    return record


def safe_message(record: Mapping[str, Any]) -> str:
    """One line describing a record's error from its safe fields only.

    ``offset 0x1A4: record 3 (PARAM_CHANGE): record_crc (expected hex, found hex)``
    """
    parts: list[str] = []
    offset, line = record.get("offset"), record.get("line")
    if isinstance(offset, int):
        parts.append(f"offset 0x{offset:X}")
    elif isinstance(line, int):
        parts.append(f"line {line}")
    index = record.get("record_index")
    if isinstance(index, int):
        label = f"record {index}"
        record_type = record.get("record_type")
        if isinstance(record_type, str) and record_type:
            label += f" ({record_type})"
        parts.append(label)
    text = str(record.get("code") or "unknown")
    exception = record.get("exception")
    if isinstance(exception, str) and exception.isidentifier():
        text += f" ({exception})"
    expected, found = record.get("expected_kind"), record.get("found_kind")
    if expected or found:
        text += f" (expected {expected or 'nothing'}, found {found or 'nothing'})"
    parts.append(text)
    return ": ".join(parts)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text_or_none(value: object) -> str | None:
    return str(value) if isinstance(value, str) and value else None


def write_json(target: Path, record: Mapping[str, Any], *, durable: bool = True) -> None:
    """Write a JSON record atomically (temporary file, fsync, rename) and durably."""
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    data = (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), PRIVATE_FILE_MODE)  # the umask may have removed bits
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
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
    make_private_dir(folder)
    existing = same_file_in(folder, path, digest)
    destination = existing or free_name(folder, path.name, digest)
    size, mtime_ns = _size_and_mtime(path)
    record = {
        "file": name,
        "sha256": digest,
        "size": size,
        "mtime_ns": mtime_ns,
        **error,
        "quarantined_at_utc": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "parser_version": PARSER_VERSION,
    }
    write_json(destination.with_name(destination.name + ERROR_SUFFIX), record, durable=durable)
    return move_into(path, folder, digest, destination=destination, durable=durable)


def _size_and_mtime(path: Path) -> tuple[int | None, int | None]:
    try:
        status = os.lstat(path)
    except OSError:
        return None, None
    if not stat.S_ISREG(status.st_mode):
        return None, None
    return status.st_size, status.st_mtime_ns


def quarantine_link(path: Path, folder: Path, *, name: str, now: float) -> Path:
    """Move a symbolic link found in the inbox into `folder` as a link, never followed.

    Its record says why (`symlink`); where the link points is not recorded (a
    path may carry a patient's name). Returns the link's name in the quarantine.
    """
    make_private_dir(folder)
    destination = free_name(folder, path.name, None)
    record = {
        "file": name,
        "sha256": None,
        "size": None,
        "mtime_ns": None,
        "code": SYMLINK_CODE,
        "position": None,
        "offset": None,
        "line": None,
        "record_index": None,
        "record_type": None,
        "expected_kind": None,
        "found_kind": None,
        "message": "a symbolic link: the service imports regular files only",
        "quarantined_at_utc": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "parser_version": PARSER_VERSION,
    }
    write_json(destination.with_name(destination.name + ERROR_SUFFIX), record, durable=False)
    try:
        # rename() moves the link itself; the name was checked free just above.
        os.rename(path, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        os.symlink(os.readlink(path), destination)
        path.unlink()
    return destination


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
        """The error from the record's safe fields (`safe_message`), never its free text."""
        if not self.record:
            return "no error record beside the file"
        if self.code == SYMLINK_CODE:
            return "a symbolic link: the service imports regular files only"
        return safe_message(self.record)

    @property
    def is_link(self) -> bool:
        return self.path.is_symlink()

    def changed(self) -> bool:
        """Whether the file's size or mtime differ from its record's (its writer went on)."""
        size, mtime_ns = self.record.get("size"), self.record.get("mtime_ns")
        if not isinstance(size, int) or not isinstance(mtime_ns, int):
            return False
        now_size, now_mtime = _size_and_mtime(self.path)
        if now_size is None or (now_size, now_mtime) == (size, mtime_ns):
            return False
        if now_size == size and self.sha256:
            # Only the mtime moved (a copy, a touch): changed only if the bytes did.
            return file_sha256(self.path) != self.sha256
        return True

    def same_outcome_expected(self) -> bool:
        """Whether re-queueing would decode the same bytes with the same parser version."""
        if self.is_link or not self.sha256 or self.code in ("internal_error", "unreadable"):
            return False
        if self.record.get("parser_version") != PARSER_VERSION:
            return False
        return file_sha256(self.path) == self.sha256

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
        if _is_record_name(path.name) or not _is_listed(path):
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
    if not _is_listed(path):
        return None
    return QuarantinedFile(path, _read_record(path))


def _is_listed(path: Path) -> bool:
    """A regular file or a symbolic link (never followed)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


def changed_files(folder: Path) -> list[QuarantinedFile]:
    """Quarantined files whose size or mtime changed since they were quarantined."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if _is_record_name(path.name) or path.is_symlink() or not path.is_file():
            continue
        item = QuarantinedFile(path, _read_record(path))
        if item.changed():
            found.append(item)
    return found


def file_sha256(path: Path) -> str | None:
    """SHA-256 of a file read in chunks without following a link, or None if unreadable."""
    hasher = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            while chunk := handle.read(1 << 20):
                hasher.update(chunk)
    except OSError:
        return None
    return hasher.hexdigest()


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
    make_private_dir(inbox)
    target = requeue_target(inbox, item.name)
    with during():
        if _same_device(item.path, inbox):
            os.link(item.path, target, follow_symlinks=False)
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


def _copy(source: Path, target: Path, *, exclusive: bool = True) -> None:
    """Copy a file's bytes into a new 0600 file (`exclusive`: never over an existing one)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_EXCL if exclusive else os.O_TRUNC)
    with source.open("rb") as reader:
        fd = os.open(target, flags, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "wb") as writer:
            os.fchmod(writer.fileno(), PRIVATE_FILE_MODE)
            while chunk := reader.read(1 << 20):
                writer.write(chunk)


# ---------------------------------------------------------------------------
# Dismissing


def dismiss(
    item: QuarantinedFile,
    keep: Callable[[bytes], object],
    *,
    during: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> None:
    """Remove a quarantined file and its record; its bytes are kept first by `keep`.

    `keep` stores the bytes (the raw store, `ingest.rawstore`) before anything is
    removed; a link has no bytes of its own and is just removed. The removal
    happens inside `during()` (the web app's audited write transaction).
    """
    if not item.is_link:
        fd = os.open(item.path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            keep(handle.read())
    with during():
        item.path.unlink()
    item.error_file.unlink(missing_ok=True)
