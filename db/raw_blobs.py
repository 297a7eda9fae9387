"""The table of migration 0004: raw export bytes kept in the database, by SHA-256.

`raw_blobs` is the raw store of a shared database (docs/operations.md, "Raw
exports on PostgreSQL"): every workstation importing into one PostgreSQL database
keeps the bytes here, so a replay on any of them reads every file
(`ingest.rawstore.DatabaseRawStore`). One row per distinct content: `sha256` is
the lower-case hex digest of `data`, `size` its length. Rows are only inserted,
never rewritten: a second insert of the same digest changes nothing
(`insert_blob`), so concurrent importers of one file both succeed.

The model sits on `db.models.Base` metadata, so the model-versus-migration
comparison sees it once this module is imported.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime

from sqlalchemy import DateTime, Integer, LargeBinary, String, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from db.models import SHA256_LEN, Base, table_of


class RawBlobRow(Base):
    """One raw export's bytes, named by their SHA-256."""

    __tablename__ = "raw_blobs"

    sha256: Mapped[str] = mapped_column(String(SHA256_LEN), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    # BYTEA on PostgreSQL, BLOB on SQLite.
    data: Mapped[bytes] = mapped_column(LargeBinary)
    stored_at: Mapped[datetime] = mapped_column(DateTime)


raw_blobs = table_of(RawBlobRow)

# Built once: every import asks (db.queries explains why).
_EXISTS = select(raw_blobs.c.sha256).where(raw_blobs.c.sha256 == bindparam("sha256"))
_DATA = select(raw_blobs.c.data).where(raw_blobs.c.sha256 == bindparam("sha256"))


def blob_exists(connection: Connection, sha256: str) -> bool:
    """Whether bytes with this digest are stored."""
    return connection.execute(_EXISTS, {"sha256": sha256}).first() is not None


def blob_data(connection: Connection, sha256: str) -> bytes | None:
    """The stored bytes under this digest, as stored (unchecked); None when absent."""
    value = connection.execute(_DATA, {"sha256": sha256}).scalar()
    return None if value is None else bytes(value)


def insert_blob(connection: Connection, sha256: str, data: bytes, stored_at: datetime) -> bool:
    """Store `data` under `sha256` in the caller's transaction; False when already stored.

    The caller has checked that `sha256` is the digest of `data`. A row another
    transaction inserts meanwhile is left as it is (ON CONFLICT DO NOTHING: on
    PostgreSQL the insert waits for that transaction, then does nothing).
    """
    if blob_exists(connection, sha256):
        return False
    values = {"sha256": sha256, "size": len(data), "data": data, "stored_at": stored_at}
    return connection.execute(_insert_new(connection), values).rowcount == 1


def _insert_new(connection: Connection) -> postgresql.Insert | sqlite.Insert:
    """INSERT of blobs, a digest stored meanwhile by another transaction left as it is."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(raw_blobs).on_conflict_do_nothing(
            index_elements=[raw_blobs.c.sha256]
        )
    return sqlite.insert(raw_blobs).on_conflict_do_nothing()


def insert_blobs(connection: Connection, blobs: Mapping[str, bytes], stored_at: datetime) -> int:
    """`insert_blob` for many files at once (a bulk import's group): how many were new.

    One query for the digests already stored and one INSERT for the others, with
    the same ON CONFLICT DO NOTHING for rows another transaction inserts meanwhile.
    """
    if not blobs:
        return 0
    digests = sorted(blobs)
    stored = set(
        connection.execute(select(raw_blobs.c.sha256).where(raw_blobs.c.sha256.in_(digests)))
        .scalars()
        .all()
    )
    rows = [
        {
            "sha256": digest,
            "size": len(blobs[digest]),
            "data": blobs[digest],
            "stored_at": stored_at,
        }
        for digest in digests
        if digest not in stored
    ]
    if not rows:
        return 0
    connection.execute(_insert_new(connection), rows)
    return len(rows)


def blob_digests(connection: Connection) -> Iterator[str]:
    """Every stored digest in sorted order, fetched in batches."""
    result = connection.execution_options(yield_per=2000).execute(
        select(raw_blobs.c.sha256).order_by(raw_blobs.c.sha256)
    )
    for row in result:
        yield str(row[0])


def blob_count(connection: Connection) -> int:
    """How many raw exports the table holds."""
    return int(connection.execute(select(func.count()).select_from(raw_blobs)).scalar() or 0)
