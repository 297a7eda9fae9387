"""Durable file-system steps shared by the raw store, the inbox watcher and the serial receiver.

A file is published by writing it under a temporary name, fsync'ing it, then giving
it its final name with `link_to_free_name`, which never replaces an existing file.
A new name survives a power loss only once its folder is fsync'ed: every publish
ends with `fsync_dir`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

# link() failing this way means the file system has no hard links.
NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP})
# Modes of what the service writes, whatever the umask: folders and files only
# the service's own user may read (names and contents may carry patient data).
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def make_private_dir(folder: Path) -> None:
    """Create `folder` and any missing parent 0700 (a folder that exists is left as it is)."""
    missing: list[Path] = []
    current = Path(folder)
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # created by another process meanwhile
        os.chmod(path, PRIVATE_DIR_MODE)  # mkdir's mode is subject to the umask


def make_private(path: Path) -> None:
    """Make a file 0600; a file another user owns is left as it is (its folder is 0700)."""
    try:
        if stat.S_ISREG(os.lstat(path).st_mode):
            os.chmod(path, PRIVATE_FILE_MODE)
    except PermissionError:
        pass


def link_to_free_name(temp: Path, candidates: Iterable[Path]) -> Path:
    """Give `temp` the first candidate name no file has yet, never replacing a file.

    A hard link is atomic and fails on a taken name. Without hard links, `temp` is
    renamed to a candidate checked to be free. The caller removes `temp` if it still
    exists (after a link it has two names).
    """
    for target in candidates:
        try:
            os.link(temp, target)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in NO_HARD_LINKS:
                raise
            if os.path.lexists(target):
                continue
            os.rename(temp, target)
        return target
    raise FileExistsError(f"no free name for {temp.name}")


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (new, renamed or removed names) to disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _libc_syncfs() -> Callable[[int], int] | None:
    """Linux's syncfs(2) from the C library, or None where there is none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function = ctypes.CDLL(name, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_SYNCFS = _libc_syncfs()


def sync_filesystem(path: Path) -> bool:
    """Flush everything written to the file system holding `path` (Linux syncfs(2)).

    One call instead of an fsync per file and folder: a group of new files costs one
    journal commit. False where syncfs is not available (the caller fsyncs instead);
    OSError when the file system reports a write-back error.
    """
    if _SYNCFS is None:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _SYNCFS(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs: {os.strerror(code)}", str(path))
    finally:
        os.close(fd)
    return True
