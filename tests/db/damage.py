"""Damage a SQLite database the way a failing disk does: one page overwritten.

The page overwritten is the root page of an index of `raw_files` (its number is
`sqlite_schema.rootpage`): the table's rows stay readable, but every lookup of a
file by SHA-256 (each import does one) reads the damaged page.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

# The unique index on raw_files.sha256 (SQLite names the index of a UNIQUE column itself).
SHA256_INDEX = "sqlite_autoindex_raw_files_1"


def overwrite_index_page(path: Path, index: str = SHA256_INDEX) -> int:
    """Overwrite the root page of `index` with garbage; returns the page number.

    The WAL is checkpointed into the file first, so the page overwritten is the one
    SQLite reads. Close every connection to the database before calling this.
    """
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (page_size,) = connection.execute("PRAGMA page_size").fetchone()
        row = connection.execute(
            "SELECT rootpage FROM sqlite_schema WHERE type = 'index' AND name = ?", (index,)
        ).fetchone()
    finally:
        connection.close()
    if row is None:
        raise LookupError(f"no index {index} in {path}")
    page = int(row[0])
    with path.open("r+b") as handle:
        handle.seek((page - 1) * page_size)
        handle.write(b"\xa5" * page_size)
    return page
