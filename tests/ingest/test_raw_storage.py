"""The database raw store (raw_blobs) and the choice between it and the folder store."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, select, update

from db.engine import write_transaction
from db.migrate import open_database
from db.raw_blobs import blob_count, raw_blobs
from ingest.pipeline import Importer
from ingest.rawstore import (
    DatabaseRawStore,
    RawStore,
    RawStoreError,
    RawStoreModeError,
    open_raw_store,
    raw_store_kind,
)
from pumptrail import settings
from tests.ingest.exports import binary, history, rules


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_database(db_url)
    yield engine
    engine.dispose()


def count(engine: Engine) -> int:
    with engine.connect() as connection:
        return blob_count(connection)


def test_database_store_round_trip(engine: Engine) -> None:
    store = DatabaseRawStore(engine)
    first, second = b"\x89PSL\r\n\x1a\n first export", b"PSL Session Export\nsecond"
    digest, where = store.put(first)
    assert digest == hashlib.sha256(first).hexdigest()
    assert where is None
    assert store.contains(digest)
    assert store.get(digest) == first
    # Idempotent by SHA-256: the same bytes again add no row.
    assert store.put(first)[0] == digest
    other = store.put(second)[0]
    assert count(engine) == 2
    assert list(store.iterate()) == sorted([digest, other])
    absent = hashlib.sha256(b"never stored").hexdigest()
    assert not store.contains(absent)
    assert store.read_unchecked(absent) is None
    with pytest.raises(RawStoreError, match="missing from the database"):
        store.get(absent)


def test_database_store_checks_the_hash_on_read(engine: Engine) -> None:
    store = DatabaseRawStore(engine)
    data = b"\x89PSL\r\n\x1a\n bytes that will be edited"
    digest, _ = store.put(data)
    with engine.begin() as connection:
        connection.execute(
            update(raw_blobs).where(raw_blobs.c.sha256 == digest).values(data=data + b"\x00")
        )
    with pytest.raises(RawStoreError, match="damaged"):
        store.get(digest)
    assert store.contains(digest)
    assert store.read_unchecked(digest) == data + b"\x00"


def test_put_in_the_callers_transaction_rolls_back_with_it(engine: Engine) -> None:
    store = DatabaseRawStore(engine)
    data = b"bytes of an import that fails"
    with pytest.raises(RuntimeError), write_transaction(engine) as connection:
        digest, _ = store.put(data, connection=connection)
        raise RuntimeError("the import failed after keeping the bytes")
    assert not store.contains(digest)
    with write_transaction(engine) as connection:
        store.put(data, connection=connection)
    assert store.get(digest) == data


def test_deferred_puts_are_written_by_sync(engine: Engine) -> None:
    store = DatabaseRawStore(engine)
    digests = [store.put(bytes([n]) * 10, defer_sync=True)[0] for n in range(3)]
    assert not any(store.contains(d) for d in digests)
    assert store.sync() == 3
    assert all(store.contains(d) for d in digests)
    assert store.sync() == 0


def test_the_importer_keeps_bytes_in_the_database_store(engine: Engine) -> None:
    store = DatabaseRawStore(engine)
    importer = Importer(engine, store, rules())
    scenario = history(41, visits=1)[0]
    imported = importer.import_bytes(binary(scenario), "one.psl")
    refused = importer.import_bytes(b"PSL\x00 not an export", "bad.psl")
    grouped = list(importer.import_many([(binary(history(42, visits=1)[0]), "two.psl")]))
    assert (imported.outcome, refused.outcome, grouped[0].outcome) == (
        "imported",
        "refused",
        "imported",
    )
    for result in (imported, refused, grouped[0]):
        assert result.sha256 is not None
        assert store.contains(result.sha256)
    assert count(engine) == 3


def test_the_store_is_chosen_from_the_database_and_the_mode(engine: Engine, tmp_path: Path) -> None:
    postgres = engine.dialect.name == "postgresql"
    auto = open_raw_store(engine, tmp_path / "raw")
    assert isinstance(auto, DatabaseRawStore if postgres else RawStore)
    assert isinstance(open_raw_store(engine, tmp_path / "raw", "files"), RawStore)
    assert isinstance(open_raw_store(engine, tmp_path / "raw", "database"), DatabaseRawStore)
    assert raw_store_kind(engine) == ("database" if postgres else "files")
    with pytest.raises(RawStoreModeError, match="raw_store_mode"):
        open_raw_store(engine, tmp_path / "raw", "cloud")


def test_raw_store_mode_setting_is_checked() -> None:
    assert settings.load(environ={}).raw_store_mode == "auto"
    loaded = settings.load(environ={"PUMPTRAIL_RAW_STORE_MODE": "files"})
    assert loaded.raw_store_mode == "files"
    with pytest.raises(settings.SettingsError, match="raw_store_mode: expected one of"):
        settings.load(environ={"PUMPTRAIL_RAW_STORE_MODE": "cloud"})


def test_deleted_blob_is_missing(engine: Engine) -> None:
    store = DatabaseRawStore(engine)
    digest, _ = store.put(b"soon gone")
    with engine.begin() as connection:
        connection.execute(delete(raw_blobs).where(raw_blobs.c.sha256 == digest))
        assert connection.execute(select(raw_blobs.c.sha256)).first() is None
    with pytest.raises(RawStoreError, match="missing"):
        store.get(digest)


def test_folder_store_iterates_both_layouts(tmp_path: Path) -> None:
    store = RawStore(tmp_path / "raw", durable=False)
    assert list(store.iterate()) == []
    new, _ = store.put(b"new layout")
    old_data = b"two-level layout"
    old = hashlib.sha256(old_data).hexdigest()
    legacy = tmp_path / "raw" / old[:2] / old[2:4] / old
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(old_data)
    (tmp_path / "raw" / new[:2] / ".tmp-leftover").write_bytes(b"x")
    assert list(store.iterate()) == sorted([new, old])
    assert store.read_unchecked(old) == old_data
