"""The raw store: every imported file's bytes, kept once, by SHA-256 (Tidepool-style).

Whatever arrives is kept before it is parsed, refused files included, so any import
can be re-processed by a later parser. Two stores behind one interface
(`RawStorage`): a folder of files (`RawStore`, SQLite's default) and the
`raw_blobs` table of the database itself (`DatabaseRawStore`, PostgreSQL's
default, so that every workstation sharing the database reads every file).
`open_raw_store` chooses between them, once, from the database and the
`raw_store_mode` setting (docs/operations.md, "Raw exports on PostgreSQL").

In the folder store a file lives at `<root>/ab/<sha256>` (its
first two hex digits as the folder: 256 folders, so a new file seldom needs a new
folder); files in the two-level layout `<root>/ab/cd/<sha256>` are found there
too and never rewritten. Writing is atomic and durable:
a temporary file in the target folder, written and fsync'ed, made read-only, then
hard-linked to its final name (a link never replaces an existing name, so nothing
is ever overwritten) and the folder fsync'ed. A bulk import defers those fsyncs
(`put(..., defer_sync=True)`) and flushes a whole group with one `sync()` before
any database row names the group's files. Files are 0400, folders 0700: the
bytes hold patient identifiers. Nothing here deletes a stored file. Reading checks
the hash, so a damaged file is noticed, not trusted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from db import raw_blobs
from db.engine import write_transaction
from db.models import utc_now
from ingest.durable import fsync_dir, link_to_free_name, sync_filesystem
from parsers.errors import PumptrailError

log = logging.getLogger(__name__)

FILE_MODE = 0o400
DIR_MODE = 0o700
# Hash folders remembered as existing (there are 256 of them).
KNOWN_DIRS = 256
_HEX = frozenset("0123456789abcdef")


# The `raw_store_mode` setting: auto (PostgreSQL: the database, SQLite: the folder),
# files (the `raw_store` folder) or database (the `raw_blobs` table).
AUTO: Final = "auto"
FILES: Final = "files"
DATABASE: Final = "database"
RAW_STORE_MODES: Final = (AUTO, FILES, DATABASE)


class RawStoreError(PumptrailError):
    """Raised by `get` of either raw store when a stored file is missing or its bytes no
    longer hash to its name."""


class RawStoreModeError(PumptrailError, ValueError):
    """Raised by `open_raw_store` when the `raw_store_mode` setting is not one of
    `RAW_STORE_MODES`."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_digest(digest: str) -> None:
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise ValueError(f"not a lower-case SHA-256 hex digest: {digest!r}")


class RawStorage(Protocol):
    """What the importer, the replayer, the web view and the CLI need of a raw store."""

    def put(
        self, data: bytes, *, defer_sync: bool = False, connection: Connection | None = None
    ) -> tuple[str, Path | None]:
        """Keep `data` (idempotent by SHA-256); its digest and file (None: not a file).

        `connection`: the caller's open write transaction, which the database store
        writes in, so the bytes commit with the rows naming them. `defer_sync`: the
        bytes are made durable by the next `sync()`, not now.
        """

    def sync(self) -> int:
        """Make every deferred `put` durable; returns how many files it covered."""

    def contains(self, digest: str) -> bool:
        """Whether bytes are stored under this digest (damaged ones included)."""

    def get(self, digest: str) -> bytes:
        """The stored bytes, checked against their hash (RawStoreError if not)."""

    def read_unchecked(self, digest: str) -> bytes | None:
        """The bytes stored under this digest, unchecked; None when absent."""

    def iterate(self) -> Iterator[str]:
        """Every stored digest, in sorted order."""

    @property
    def where(self) -> str:
        """Where the bytes live, for messages (no patient data)."""


class RawStore:
    """A content-addressed folder of raw export files."""

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = Path(root)
        # durable=False skips the fsyncs (tests and benchmarks of other parts only).
        self.durable = durable
        self._known_dirs: set[Path] = set()
        # Files and folders written with defer_sync=True and not flushed yet.
        self._unsynced: dict[Path, None] = {}

    def path_for(self, digest: str) -> Path:
        """Where the file with this SHA-256 is, or is written when it is not stored yet."""
        stored = self._stored_path(digest)
        return self._new_path(digest) if stored is None else stored

    def _new_path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def _stored_path(self, digest: str) -> Path | None:
        _check_digest(digest)
        path = self._new_path(digest)
        if path.is_file():
            return path
        # The two-level layout of stores written before November 2026.
        legacy = self.root / digest[:2] / digest[2:4] / digest
        return legacy if legacy.is_file() else None

    def _make_dirs(self, folder: Path, *, sync: bool) -> None:
        """Create the root and the hash folder 0700 (umask does not apply)."""
        if folder in self._known_dirs:
            return
        created: list[Path] = []
        # Most new files need one new folder: try the deepest first, go up only when needed.
        missing = [folder]
        while missing:
            path = missing[-1]
            try:
                path.mkdir(mode=DIR_MODE, parents=path is self.root)
            except FileExistsError:
                pass
            except FileNotFoundError:
                missing.append(path.parent)
                continue
            else:
                os.chmod(path, DIR_MODE)
                created.append(path)
            missing.pop()
        for path in created:
            if sync:
                fsync_dir(path.parent)
            elif self.durable:
                self._unsynced[path.parent] = None
        if len(self._known_dirs) >= KNOWN_DIRS:
            self._known_dirs.clear()
        self._known_dirs.add(folder)

    @property
    def where(self) -> str:
        return str(self.root)

    def contains(self, digest: str) -> bool:
        return self._stored_path(digest) is not None

    def put(
        self, data: bytes, *, defer_sync: bool = False, connection: Connection | None = None
    ) -> tuple[str, Path]:
        """Keep `data`; returns its SHA-256 and where it lives. Already stored: not rewritten.

        `defer_sync`: the file and its folder are flushed by the next `sync()`, not now.
        `connection` is not used: a file is durable before the caller's commit.
        """
        digest = sha256_hex(data)
        stored = self._stored_path(digest)
        if stored is not None:
            return digest, stored
        final = self._new_path(digest)
        folder = final.parent
        sync_now = self.durable and not defer_sync
        self._make_dirs(folder, sync=sync_now)
        # Unique per process and thread: two threads may keep the same bytes at once.
        temp = folder / f".tmp-{digest[:16]}-{os.getpid()}-{threading.get_ident():x}-{id(data):x}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                if sync_now:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(temp, FILE_MODE)
            self._publish(temp, final)
        finally:
            if temp.exists():
                temp.unlink()
        if sync_now:
            fsync_dir(folder)
        elif self.durable:
            self._unsynced[final] = None
            self._unsynced[folder] = None
        log.debug("raw store: kept %s (%d bytes)", digest[:12], len(data))
        return digest, final

    def sync(self) -> int:
        """Flush every file and folder `put(..., defer_sync=True)` wrote; returns how many.

        One syncfs of the store's file system where there is one; else an fsync of
        each, files first, then folders (a name on disk must never point at
        unwritten bytes).
        """
        pending = list(self._unsynced)
        if not pending:
            return 0
        if sync_filesystem(self.root):
            self._unsynced.clear()
            return len(pending)
        files = [path for path in pending if not path.is_dir()]
        folders = [path for path in pending if path.is_dir()]
        for path in files:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for folder in folders:
            fsync_dir(folder)
        for path in pending:
            del self._unsynced[path]
        return len(pending)

    @staticmethod
    def _publish(temp: Path, final: Path) -> None:
        """Give the temporary file its final name without ever replacing a stored file."""
        try:
            link_to_free_name(temp, [final])
        except FileExistsError:
            return  # stored meanwhile by another process: same name, same bytes

    def get(self, digest: str) -> bytes:
        """The stored bytes, checked against their hash."""
        path = self.path_for(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise RawStoreError(f"raw file {digest[:12]} is missing from {self.root}") from exc
        return checked(digest, data)

    def read_unchecked(self, digest: str) -> bytes | None:
        path = self._stored_path(digest)
        if path is None:
            return None
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def iterate(self) -> Iterator[str]:
        """Every stored digest in sorted order, both layouts; temporary files skipped."""
        if not self.root.is_dir():
            return
        found: set[str] = set()
        for _dirpath, _dirnames, filenames in os.walk(self.root):
            for filename in filenames:
                if len(filename) == 64 and set(filename) <= _HEX:
                    found.add(filename)
        yield from sorted(found)


def checked(digest: str, data: bytes) -> bytes:
    """`data` when it hashes to `digest`; RawStoreError (damaged) when not."""
    found = sha256_hex(data)
    if found != digest:
        raise RawStoreError(
            f"raw file {digest[:12]} is damaged: its content hashes to {found[:12]}"
        )
    return data


class DatabaseRawStore:
    """Raw exports as rows of the database's `raw_blobs` table (`db.raw_blobs`).

    A `put` given the caller's write transaction inserts the row in it: the bytes
    commit with the rows that name them, or not at all. Without one, the row is
    committed at once, or, with `defer_sync`, by the next `sync()`, in one
    transaction for the whole group, before any import of the group begins.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Deferred puts not written yet, by digest.
        self._pending: dict[str, bytes] = {}

    @property
    def where(self) -> str:
        return "the database (table raw_blobs)"

    def put(
        self, data: bytes, *, defer_sync: bool = False, connection: Connection | None = None
    ) -> tuple[str, None]:
        digest = sha256_hex(data)
        if connection is not None:
            raw_blobs.insert_blob(connection, digest, data, utc_now())
        elif defer_sync:
            self._pending[digest] = data
        else:
            with write_transaction(self.engine) as own:
                raw_blobs.insert_blob(own, digest, data, utc_now())
        return digest, None

    def sync(self) -> int:
        pending, self._pending = self._pending, {}
        if not pending:
            return 0
        with write_transaction(self.engine) as connection:
            raw_blobs.insert_blobs(connection, pending, utc_now())
        return len(pending)

    def contains(self, digest: str) -> bool:
        _check_digest(digest)
        with self.engine.connect() as connection:
            return raw_blobs.blob_exists(connection, digest)

    def read_unchecked(self, digest: str) -> bytes | None:
        _check_digest(digest)
        with self.engine.connect() as connection:
            return raw_blobs.blob_data(connection, digest)

    def get(self, digest: str) -> bytes:
        data = self.read_unchecked(digest)
        if data is None:
            raise RawStoreError(f"raw file {digest[:12]} is missing from {self.where}")
        return checked(digest, data)

    def iterate(self) -> Iterator[str]:
        with self.engine.connect() as connection:
            yield from raw_blobs.blob_digests(connection)


def raw_store_kind(engine: Engine | Connection, mode: str = AUTO) -> str:
    """`files` or `database`: the store a database with this `raw_store_mode` uses.

    `auto`: the database on PostgreSQL (shared by every workstation), the folder on
    SQLite (one workstation, and the database file stays small).
    """
    if mode not in RAW_STORE_MODES:
        raise RawStoreModeError(
            f"setting raw_store_mode: expected one of {', '.join(RAW_STORE_MODES)}, found {mode!r}"
        )
    if mode != AUTO:
        return mode
    return DATABASE if engine.dialect.name == "postgresql" else FILES


def open_raw_store(
    engine: Engine, root: Path, mode: str = AUTO, *, durable: bool = True
) -> RawStorage:
    """The raw store every part of pumptrail uses for this database and these settings.

    `root` is the `raw_store` folder (used by the folder store only); `durable` as
    for `RawStore` (the database store's writes are transactions, always durable).
    """
    if raw_store_kind(engine, mode) == DATABASE:
        return DatabaseRawStore(engine)
    return RawStore(root, durable=durable)


@dataclass
class CopyReport:
    """What `copy_raw_store` did, by SHA-256."""

    copied: list[str] = field(default_factory=list)
    already_stored: list[str] = field(default_factory=list)
    # Files whose bytes do not hash to their name (or cannot be read): not copied.
    damaged: list[str] = field(default_factory=list)

    @property
    def files(self) -> int:
        return len(self.copied) + len(self.already_stored) + len(self.damaged)


def copy_raw_store(
    source: RawStorage,
    target: RawStorage,
    *,
    report: Callable[[str, str], None] | None = None,
) -> CopyReport:
    """Copy every file of `source` that `target` lacks, each checked against its hash.

    Idempotent: files already in `target` are counted, not written again, so an
    interrupted copy is finished by running it again. Each copied file is durable
    in `target` before the next is read. `report(outcome, digest)` sees each file:
    `copied`, `already_stored` or `damaged`.
    """
    result = CopyReport()
    for digest in source.iterate():
        try:
            data = source.read_unchecked(digest)
        except OSError:
            data = b""  # unreadable: reported as damaged, never copied
        if data is None:
            continue  # gone since it was listed
        if sha256_hex(data) != digest:
            outcome, bucket = "damaged", result.damaged
        elif target.contains(digest):
            outcome, bucket = "already_stored", result.already_stored
        else:
            target.put(data)
            outcome, bucket = "copied", result.copied
        bucket.append(digest)
        if report is not None:
            report(outcome, digest)
    return result
