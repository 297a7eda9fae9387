"""The parallel import stores exactly what the serial import stores (ingest.parallel).

One corpus, imported twice into two empty databases of one kind: file by file by
`Importer.import_many` (the serial import), and by `ParallelImporter` with worker
processes. Everything stored is compared: every session row, setting and event
row, raw-file row, evidence document (prior session, procedure, flags, codes),
pump, the raw store's files, and every audit entry's content in order; and every
file's result. Keys the database hands out and clock readings (`id`,
`imported_at`, `derived_at`, `received_at`, audit `at` and hashes) are compared
through what they point at, or not at all.

The corpus is built to reach every branch of the group writer: the files of one
pump in order, in reverse and interleaved with other pumps (late arrivals that
re-derive later sessions), so that one pump's files land in different workers and
in different groups; identical bytes twice in one group and across groups (refused ones too); the
CSV export of a stored session (agreeing, linked); garbage and cut-short files,
one of them twice; a file too large to read; and two exports of one session
that disagree, which sends its group to the serial path.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from db.migrate import open_database
from db.models import events, evidence, evidence_flags, pumps, raw_files, sessions, setting_values
from db.users import evidence_codes
from fixtures.scenario import Scenario
from ingest import parallel
from ingest.parallel import ParallelImporter, prepare
from ingest.pipeline import Importer, ImportResult
from ingest.rawstore import RawStore
from parsers.errors import DecodeError
from parsers.params import MAX_FILE_BYTES
from parsers.registry import decode_bytes
from tests.ingest.exports import binary, csv, history, rules, with_other_note, write

GROUP = 8


def corpus(tmp_path: Path, *, conflicting: bool = True) -> list[Path]:
    """Files in the order they are offered (see the module docstring)."""
    pumps_ = [history(seed, visits=6, serial=f"ITP40-7000{seed}") for seed in range(1, 6)]
    files: list[tuple[str, bytes]] = []
    in_order, reverse, a, b, c = pumps_
    files += [(f"in-order-{i}.psl", binary(s)) for i, s in enumerate(in_order)]
    files += [(f"reverse-{i}.psl", binary(s)) for i, s in reversed(list(enumerate(reverse)))]
    for i in range(6):  # three pumps interleaved, one of them out of order
        files.append((f"a-{i}.psl", binary(a[i])))
        files.append((f"b-{i}.csv", csv(b[(i * 5) % 6])))
        files.append((f"c-{i}.psl", binary(c[i])))
    files.insert(3, ("in-order-1-again.psl", binary(in_order[1])))  # same group
    files.append(("reverse-2-again.psl", binary(reverse[2])))  # another group
    files.append(("a-3.csv", csv(a[3])))  # the other export, agreeing
    garbage = b"NOT AN EXPORT\n" * 20
    files.insert(10, ("garbage.txt", garbage))
    files.insert(12, ("garbage-same-group.txt", garbage))
    files.append(("garbage-again.txt", garbage))
    files.append(("cut.psl", binary(a[5])[:-40]))
    if conflicting:
        files.append(("c-2-edited.csv", csv(with_other_note(c[2]))))
    folder = tmp_path / "in"
    paths = [write(folder, f"{index:03d}-{name}", data) for index, (name, data) in enumerate(files)]
    too_large = folder / "999-too-large.psl"
    with too_large.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    return [*paths, too_large]


def result_facts(result: ImportResult) -> tuple[Any, ...]:
    return (
        result.name,
        result.outcome,
        result.detail,
        result.sha256,
        result.session_id,
        result.source_format,
        json.dumps(result.error, sort_keys=True),
        result.conflicting_exports,
        result.rederived,
    )


def _rows(connection: Any, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in connection.execute(text(sql))]


def snapshot(engine: Engine, store: Path) -> dict[str, Any]:
    """Everything stored, with database keys replaced by what they point at."""
    skip = {"id", "imported_at", "pump_id"}
    session_columns = [c.name for c in sessions.columns if c.name not in skip]
    with engine.connect() as connection:
        sid = dict(connection.execute(select(sessions.c.id, sessions.c.session_id)).all())
        serial = dict(connection.execute(select(pumps.c.id, pumps.c.serial)).all())
        state: dict[str, Any] = {
            "pumps": sorted(connection.execute(select(pumps.c.serial, pumps.c.model)).all()),
            "sessions": sorted(
                (serial[row.pump_id], *(getattr(row, c) for c in session_columns))
                for row in connection.execute(select(sessions))
            ),
            "settings": sorted(
                (sid[r.session_pk], r.phase, r.param, r.value)
                for r in connection.execute(select(setting_values))
            ),
            "events": sorted(
                (
                    sid[r.session_pk],
                    *(
                        getattr(r, c.name)
                        for c in events.columns
                        if c.name not in ("id", "session_pk")
                    ),
                )
                for r in connection.execute(select(events))
            ),
            "raw_files": sorted(
                (
                    r.sha256,
                    r.size,
                    r.name,
                    r.source_format,
                    r.status,
                    r.error_code,
                    r.error,
                    sid.get(r.session_pk),
                    r.parser_version,
                )
                for r in connection.execute(select(raw_files))
            ),
            "evidence": sorted(
                (
                    sid[r.session_pk],
                    sid.get(r.prior_session_pk),
                    r.procedure,
                    r.flags,
                    r.document,
                    r.rules_version,
                    r.parser_version,
                )
                for r in connection.execute(select(evidence))
            ),
            "flags": sorted(
                (sid[r.session_pk], r.flag) for r in connection.execute(select(evidence_flags))
            ),
            "codes": sorted(
                (sid[r.session_pk], r.profile, r.procedure)
                for r in connection.execute(select(evidence_codes))
            ),
            "audit": _rows(
                connection, "SELECT actor, action, target, detail FROM audit_log ORDER BY id"
            ),
        }
    state["raw_store"] = sorted(p.name for p in store.rglob("*") if p.is_file())
    return state


def import_serial(url: str, store: Path, paths: Sequence[Path]) -> list[ImportResult]:
    engine = open_database(url)
    try:
        importer = Importer(engine, RawStore(store, durable=False), rules())
        return list(importer.import_paths(paths, group=GROUP))
    finally:
        engine.dispose()


def import_parallel(
    url: str, store: Path, paths: Sequence[Path], jobs: int
) -> tuple[list[ImportResult], ParallelImporter]:
    engine = open_database(url)
    try:
        importer = Importer(engine, RawStore(store, durable=False), rules())
        parallel_import = ParallelImporter(importer, jobs, group=GROUP)
        return list(parallel_import.import_paths(paths)), parallel_import
    finally:
        engine.dispose()


@pytest.mark.parametrize("jobs", [2, 1])
def test_parallel_import_stores_what_the_serial_import_stores(
    db_url: str, other_db_url: str, tmp_path: Path, jobs: int
) -> None:
    paths = corpus(tmp_path)
    serial = import_serial(db_url, tmp_path / "raw-serial", paths)
    results, used = import_parallel(other_db_url, tmp_path / "raw-parallel", paths, jobs)

    assert [result_facts(r) for r in results] == [result_facts(r) for r in serial]
    outcomes = {r.outcome for r in serial}
    assert outcomes == {"imported", "duplicate", "refused"}
    assert any(r.rederived for r in serial), "the corpus must hold late arrivals"
    assert any(r.conflicting_exports for r in serial)
    expected = snapshot(open_database(db_url), tmp_path / "raw-serial")
    found = snapshot(open_database(other_db_url), tmp_path / "raw-parallel")
    for key in expected:
        assert found[key] == expected[key], key
    # The planner wrote most groups; the one with the disagreeing export went serial.
    assert used.groups_planned >= len(paths) // GROUP - 1
    assert used.groups_serial == 1


def test_every_group_planned_when_nothing_needs_the_serial_path(
    db_url: str, other_db_url: str, tmp_path: Path
) -> None:
    paths = corpus(tmp_path, conflicting=False)
    serial = import_serial(db_url, tmp_path / "raw-serial", paths)
    results, used = import_parallel(other_db_url, tmp_path / "raw-parallel", paths, 2)
    assert [result_facts(r) for r in results] == [result_facts(r) for r in serial]
    assert used.groups_serial == 0
    assert snapshot(open_database(other_db_url), tmp_path / "raw-parallel") == snapshot(
        open_database(db_url), tmp_path / "raw-serial"
    )


def test_importing_again_gives_duplicates_as_the_serial_import_does(
    db_url: str, other_db_url: str, tmp_path: Path
) -> None:
    paths = corpus(tmp_path, conflicting=False)
    import_serial(db_url, tmp_path / "raw-serial", paths)
    import_parallel(other_db_url, tmp_path / "raw-parallel", paths, 2)
    again_serial = import_serial(db_url, tmp_path / "raw-serial", paths)
    again, _used = import_parallel(other_db_url, tmp_path / "raw-parallel", paths, 2)
    assert [result_facts(r) for r in again] == [result_facts(r) for r in again_serial]
    assert {r.outcome for r in again} == {"duplicate", "refused"}


def test_a_dead_worker_loses_nothing(
    db_url: str, other_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed mid-import: the rest is prepared in the writer, results unchanged."""
    paths = corpus(tmp_path, conflicting=False)
    serial = import_serial(db_url, tmp_path / "raw-serial", paths)
    monkeypatch.setattr(parallel, "_prepare_chunk", _die_on_second_chunk)
    results, used = import_parallel(other_db_url, tmp_path / "raw-parallel", paths, 2)
    assert used._pool_broken
    assert [result_facts(r) for r in results] == [result_facts(r) for r in serial]
    assert snapshot(open_database(other_db_url), tmp_path / "raw-parallel") == snapshot(
        open_database(db_url), tmp_path / "raw-serial"
    )


def _die_on_second_chunk(chunk: list[tuple[bytes, str]]) -> list[parallel.Prepared]:
    import os

    if any(name.endswith("-c-1.psl") for _data, name in chunk):
        os._exit(9)
    return [prepare(data, name, parallel._STATE) for data, name in chunk]  # type: ignore[arg-type]


def test_prepared_refusal_survives_the_trip_from_a_worker(tmp_path: Path) -> None:
    import pickle

    state = parallel._WorkerState(parallel.dialect_for("sqlite", "pysqlite"))
    answer = pickle.loads(pickle.dumps(prepare(b"garbage" * 10, "g.txt", state)))
    with pytest.raises(DecodeError) as raised:
        decode_bytes(b"garbage" * 10, source="g.txt")
    assert answer.refusal is not None
    assert str(answer.refusal) == str(raised.value)
    assert answer.refusal.as_dict() == raised.value.as_dict()


def _scenario_files(scenarios: Sequence[Scenario]) -> list[bytes]:
    return [binary(s) for s in scenarios]


def test_random_orders_of_one_pump_spread_over_groups(
    db_url: str, other_db_url: str, tmp_path: Path
) -> None:
    """Chain semantics: any order of a pump's files, any split over groups and workers."""
    rng = random.Random(20261205)
    files = _scenario_files(history(11, visits=12, serial="ITP40-80011"))
    files += _scenario_files(history(12, visits=12, serial="ITP40-80012"))
    rng.shuffle(files)
    folder = tmp_path / "shuffled"
    paths = [write(folder, f"{i:03d}.psl", data) for i, data in enumerate(files)]
    serial = import_serial(db_url, tmp_path / "raw-serial", paths)
    results, used = import_parallel(other_db_url, tmp_path / "raw-parallel", paths, 2)
    assert used.groups_serial == 0
    assert sum(r.rederived for r in serial) > 0
    assert [result_facts(r) for r in results] == [result_facts(r) for r in serial]
    assert snapshot(open_database(other_db_url), tmp_path / "raw-parallel") == snapshot(
        open_database(db_url), tmp_path / "raw-serial"
    )
