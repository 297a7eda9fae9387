"""The raw store: content addressing, permissions, no overwrite, hash checked on read."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import stat
import sys
from pathlib import Path

import pytest

from ingest import durable, rawstore
from ingest.durable import sync_filesystem
from ingest.rawstore import RawStore, RawStoreError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_put_addresses_by_sha256(tmp_path: Path) -> None:
    store = RawStore(tmp_path / "raw")
    data = b"\x89PSL\r\n\x1a\n some export bytes"
    digest, path = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert path == tmp_path / "raw" / digest[:2] / digest
    assert path.read_bytes() == data
    assert store.contains(digest)
    assert store.get(digest) == data


def test_files_in_the_earlier_two_level_layout_are_found_and_never_written_again(
    tmp_path: Path,
) -> None:
    """A store written before November 2026 keeps `<root>/ab/cd/<sha256>`."""
    data = b"bytes stored by an earlier pumptrail"
    digest = hashlib.sha256(data).hexdigest()
    legacy = tmp_path / "raw" / digest[:2] / digest[2:4] / digest
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(data)
    legacy.chmod(0o400)
    store = RawStore(tmp_path / "raw")
    assert store.path_for(digest) == legacy
    assert store.contains(digest)
    assert store.get(digest) == data
    assert store.put(data) == (digest, legacy)
    assert not (tmp_path / "raw" / digest[:2] / digest).exists()
    # A damaged legacy file is noticed like any other.
    legacy.chmod(0o600)
    legacy.write_bytes(b"edited")
    with pytest.raises(RawStoreError, match="damaged"):
        store.get(digest)


def test_files_are_read_only_and_folders_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        store = RawStore(tmp_path / "raw")
        digest, path = store.put(b"patient data")
    finally:
        os.umask(old_umask)
    assert mode(path) == 0o400
    assert mode(path.parent) == 0o700
    assert mode(path.parent.parent) == 0o700
    assert mode(tmp_path / "raw") == 0o700
    # Only the stored file is left: the temporary file is gone.
    assert os.listdir(path.parent) == [digest]


def test_stored_file_is_never_rewritten(tmp_path: Path) -> None:
    store = RawStore(tmp_path / "raw")
    digest, path = store.put(b"same bytes")
    before = path.stat()
    again_digest, again_path = store.put(b"same bytes")
    after = path.stat()
    assert (again_digest, again_path) == (digest, path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_damaged_file_is_detected_on_read(tmp_path: Path) -> None:
    store = RawStore(tmp_path / "raw")
    digest, path = store.put(b"original")
    os.chmod(path, 0o600)
    path.write_bytes(b"tampered")
    with pytest.raises(RawStoreError, match=f"raw file {digest[:12]} is damaged"):
        store.get(digest)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    store = RawStore(tmp_path / "raw")
    digest = hashlib.sha256(b"never stored").hexdigest()
    assert not store.contains(digest)
    with pytest.raises(RawStoreError, match="is missing"):
        store.get(digest)


@pytest.mark.parametrize("bad", ["", "ABC", "g" * 64, "A" * 64, "../" + "a" * 61])
def test_only_sha256_digests_address_files(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="not a lower-case SHA-256"):
        RawStore(tmp_path).path_for(bad)


def test_durable_and_fast_modes_store_the_same(tmp_path: Path) -> None:
    durable = RawStore(tmp_path / "a", durable=True)
    fast = RawStore(tmp_path / "b", durable=False)
    data = os.urandom(5000)
    d1, p1 = durable.put(data)
    d2, p2 = fast.put(data)
    assert d1 == d2
    assert p1.read_bytes() == p2.read_bytes() == data
    assert mode(p1) == mode(p2) == 0o400


def test_deferred_puts_are_flushed_by_one_syncfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsynced_paths: list[str]
) -> None:
    store = RawStore(tmp_path / "raw", durable=True)
    flushed = fsynced_paths
    synced: list[Path] = []
    real_sync_filesystem = sync_filesystem

    def recording_sync_filesystem(path: Path) -> bool:
        synced.append(path)
        return real_sync_filesystem(path)

    monkeypatch.setattr(rawstore, "sync_filesystem", recording_sync_filesystem)
    for index in range(3):
        store.put(bytes([index]) * 100, defer_sync=True)
    assert store.sync() >= 3
    assert synced == [tmp_path / "raw"]
    assert flushed == [], "syncfs flushed them: no fsync per file"
    assert store.sync() == 0 and synced == [tmp_path / "raw"]


def test_sync_filesystem_is_used_on_linux_and_declined_elsewhere(tmp_path: Path) -> None:
    # syncfs(2) is Linux's: elsewhere the raw store falls back to an fsync per path.
    assert sync_filesystem(tmp_path) is (sys.platform == "linux")


def test_a_syncfs_error_is_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(_fd: int) -> int:
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(durable, "_SYNCFS", failing)
    with pytest.raises(OSError, match="Input/output error") as info:
        sync_filesystem(tmp_path)
    assert info.value.errno == errno.EIO


def test_without_syncfs_deferred_puts_are_fsynced_files_before_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsynced_paths: list[str]
) -> None:
    monkeypatch.setattr(rawstore, "sync_filesystem", lambda _path: False)
    store = RawStore(tmp_path / "raw", durable=True)
    flushed = fsynced_paths
    blobs = [os.urandom(300) for _ in range(3)]
    paths = [store.put(data, defer_sync=True)[1] for data in blobs]
    assert flushed == [], "a deferred put flushes nothing"
    assert [p.read_bytes() for p in paths] == blobs
    assert store.sync() == len(flushed)
    files = [str(p) for p in paths]
    assert set(files) <= set(flushed)
    for path in paths:
        assert str(path.parent) in flushed
        assert flushed.index(str(path)) < flushed.index(str(path.parent))
    assert flushed.index(str(tmp_path / "raw")) > max(flushed.index(f) for f in files)
    flushed.clear()
    assert store.sync() == 0 and flushed == [], "nothing left to flush"


def test_an_immediate_put_flushes_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsynced_paths: list[str]
) -> None:
    store = RawStore(tmp_path / "raw", durable=True)
    flushed = fsynced_paths
    _, path = store.put(b"bytes")
    assert str(path.parent) in flushed
    assert store.sync() == 0


def test_a_fast_store_never_flushes(tmp_path: Path, fsynced_paths: list[str]) -> None:
    store = RawStore(tmp_path / "raw", durable=False)
    flushed = fsynced_paths
    store.put(b"bytes", defer_sync=True)
    store.put(b"more")
    assert store.sync() == 0 and flushed == []
