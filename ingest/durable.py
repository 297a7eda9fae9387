"""Durable file-system steps shared by the raw store, the inbox watcher and the serial receiver.

A file is published by writing it under a temporary name, fsync'ing it, then giving
it its final name with `link_to_free_name`, which never replaces an existing file.
A new name survives a power loss only once its folder is fsync'ed: every publish
ends with `fsync_dir`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path

# link() failing this way means the file system has no hard links.
NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP})


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
