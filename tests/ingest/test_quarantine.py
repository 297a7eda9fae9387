"""Quarantine records: write, list, re-queue (`ingest.quarantine`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest import quarantine
from parsers.registry import PARSER_VERSION

DIGEST = "ab" * 32
ERROR = {"code": "bad_crc", "message": "record 3: CRC mismatch", "offset": 96, "line": None}


def refused(folder: Path, name: str = "visit.psl", data: bytes = b"PSL broken") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def test_a_refused_file_moves_beside_its_error_record(tmp_path: Path) -> None:
    source = refused(tmp_path / "inbox")
    mtime_ns = source.stat().st_mtime_ns
    now = datetime(2026, 3, 4, 10, 15, 2, tzinfo=UTC).timestamp()
    folder = tmp_path / "quarantine"
    target = quarantine.quarantine_file(
        source, folder, DIGEST, ERROR, name="sub/visit.psl", now=now, durable=False
    )
    assert target == folder / "visit.psl"
    assert not source.exists() and target.read_bytes() == b"PSL broken"
    record = json.loads((folder / "visit.psl.error.json").read_text())
    assert record == {
        "file": "sub/visit.psl",
        "sha256": DIGEST,
        "size": 10,
        "mtime_ns": mtime_ns,
        **ERROR,
        "quarantined_at_utc": "2026-03-04T10:15:02Z",
        "parser_version": PARSER_VERSION,
    }
    assert sorted(p.name for p in folder.iterdir()) == ["visit.psl", "visit.psl.error.json"]


def test_a_name_already_taken_gets_the_hash_then_a_counter(tmp_path: Path) -> None:
    folder = tmp_path / "quarantine"
    names = []
    for data in (b"one", b"two", b"three"):
        source = refused(tmp_path / "inbox", data=data)
        names.append(
            quarantine.quarantine_file(source, folder, DIGEST, ERROR, name="visit.psl", now=0).name
        )
    assert names == ["visit.psl", f"visit.{DIGEST[:12]}.psl", f"visit.{DIGEST[:12]}.2.psl"]
    assert (folder / f"visit.{DIGEST[:12]}.2.psl").read_bytes() == b"three"
    assert (folder / f"visit.{DIGEST[:12]}.2.psl.error.json").exists()


def test_an_interrupted_move_is_finished_not_duplicated(tmp_path: Path) -> None:
    source = refused(tmp_path / "inbox")
    folder = tmp_path / "archive"
    folder.mkdir()
    (folder / "visit.psl").hardlink_to(source)  # the link happened, the unlink did not
    assert quarantine.move_into(source, folder, DIGEST, durable=False) == folder / "visit.psl"
    assert not source.exists()
    assert [p.name for p in folder.iterdir()] == ["visit.psl"]


def test_the_list_reads_each_record_and_skips_records_and_dot_files(tmp_path: Path) -> None:
    folder = tmp_path / "quarantine"
    for name in ("b.csv", "a.psl"):
        quarantine.quarantine_file(
            refused(tmp_path / "inbox", name), folder, DIGEST, ERROR, name=name, now=0
        )
    (folder / "orphan.bin").write_bytes(b"x")
    (folder / ".hidden").write_bytes(b"x")
    (folder / "bad.txt").write_bytes(b"x")
    (folder / "bad.txt.error.json").write_text("[not a record")
    listed = quarantine.quarantined_files(folder, 10)
    assert [f.name for f in listed] == ["a.psl", "b.csv", "bad.txt", "orphan.bin"]
    first = listed[0]
    assert (first.sha256, first.code, first.offset, first.line) == (DIGEST, "bad_crc", 96, None)
    assert first.quarantined_at_utc == "1970-01-01T00:00:00Z"
    assert (listed[3].code, listed[3].sha256, listed[3].quarantined_at_utc) == (
        "unknown",
        "",
        None,
    )
    assert listed[3].message == "no error record beside the file"
    assert [f.name for f in quarantine.quarantined_files(folder, 2)] == ["a.psl", "b.csv"]
    assert quarantine.quarantined_files(tmp_path / "none", 10) == []


@pytest.mark.parametrize(
    "name", ["", "../inbox/x", "a/b", "a\\b", ".hidden", "a.psl.error.json", "missing.psl"]
)
def test_only_a_plain_quarantined_name_is_found(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "quarantine"
    quarantine.quarantine_file(
        refused(tmp_path / "inbox", "a.psl"), folder, DIGEST, ERROR, name="a", now=0
    )
    (folder / ".hidden").write_bytes(b"x")
    assert quarantine.quarantined_file(folder, name) is None
    assert quarantine.quarantined_file(folder, "a.psl") is not None


def test_requeue_moves_the_file_back_under_a_free_name_and_drops_its_record(
    tmp_path: Path,
) -> None:
    folder, inbox = tmp_path / "quarantine", tmp_path / "inbox"
    quarantine.quarantine_file(refused(inbox, "a.psl"), folder, DIGEST, ERROR, name="a", now=0)
    (inbox / "a.psl").write_bytes(b"a newer a.psl")
    (inbox / "a.requeued-1.psl").write_bytes(b"taken too")
    item = quarantine.quarantined_file(folder, "a.psl")
    assert item is not None
    steps: list[str] = []

    @contextmanager
    def during() -> Iterator[None]:
        steps.append("begin")
        yield
        steps.append(f"end: quarantined {item.path.exists()}, record {item.error_file.exists()}")

    target = quarantine.requeue(item, inbox, during=during)
    assert target == inbox / "a.requeued-2.psl"
    assert target.read_bytes() == b"PSL broken"
    assert steps == ["begin", "end: quarantined False, record True"]
    assert list(folder.iterdir()) == []


def test_a_requeue_that_fails_inside_during_leaves_the_file_quarantined(tmp_path: Path) -> None:
    folder, inbox = tmp_path / "quarantine", tmp_path / "inbox"
    quarantine.quarantine_file(refused(inbox, "a.psl"), folder, DIGEST, ERROR, name="a", now=0)
    item = quarantine.quarantined_file(folder, "a.psl")
    assert item is not None

    @contextmanager
    def refusing() -> Iterator[None]:
        raise RuntimeError("the audit entry could not be written")
        yield  # pragma: no cover

    with pytest.raises(RuntimeError):
        quarantine.requeue(item, inbox, during=refusing)
    assert item.path.exists() and item.error_file.exists()
    assert list(inbox.iterdir()) == []
