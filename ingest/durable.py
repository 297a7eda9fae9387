"""Durable file-system steps shared by the raw store, the inbox watcher and the serial receiver.

A new name in a folder survives a power loss only once the folder itself is
fsync'ed; every place that publishes a file (temporary name, fsync, link or
rename) ends with `fsync_dir`.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (new, renamed or removed names) to disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
