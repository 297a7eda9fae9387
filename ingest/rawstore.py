"""The raw store: every imported file's bytes, kept once, by SHA-256 (Tidepool-style).

Whatever arrives is kept before it is parsed, refused files included, so any import
can be re-processed by a later parser. A file lives at `<root>/ab/<sha256>` (its
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
from pathlib import Path

from ingest.durable import fsync_dir, link_to_free_name, sync_filesystem
from parsers.errors import PumptrailError

log = logging.getLogger(__name__)

FILE_MODE = 0o400
DIR_MODE = 0o700
# Hash folders remembered as existing (there are 256 of them).
KNOWN_DIRS = 256
_HEX = frozenset("0123456789abcdef")


class RawStoreError(PumptrailError):
    """Raised by `RawStore.get` when a stored file is missing or its bytes no longer
    hash to its name."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_digest(digest: str) -> None:
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise ValueError(f"not a lower-case SHA-256 hex digest: {digest!r}")


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

    def contains(self, digest: str) -> bool:
        return self._stored_path(digest) is not None

    def put(self, data: bytes, *, defer_sync: bool = False) -> tuple[str, Path]:
        """Keep `data`; returns its SHA-256 and where it lives. Already stored: not rewritten.

        `defer_sync`: the file and its folder are flushed by the next `sync()`, not now.
        """
        digest = sha256_hex(data)
        stored = self._stored_path(digest)
        if stored is not None:
            return digest, stored
        final = self._new_path(digest)
        folder = final.parent
        sync_now = self.durable and not defer_sync
        self._make_dirs(folder, sync=sync_now)
        temp = folder / f".tmp-{digest[:16]}-{os.getpid()}-{id(data):x}"
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
        found = sha256_hex(data)
        if found != digest:
            raise RawStoreError(
                f"raw file {digest[:12]} is damaged: its content hashes to {found[:12]}"
            )
        return data
