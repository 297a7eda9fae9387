"""`pumptrail import`: per-file lines, the summary, exit status, settings."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from db.migrate import open_database
from ingest.rawstore import open_raw_store
from pumptrail.cli import main
from tests.ingest.exports import binary, csv, history, write, write_binaries


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_import_folder_all_good_exits_0(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenarios = history(21, visits=3)
    paths = write_binaries(tmp_path / "in", scenarios)
    status, out, _ = run(
        ["import", str(tmp_path / "in"), "--db", db_url, "--raw-store", str(tmp_path / "raw")],
        capsys,
    )
    assert status == 0
    lines = out.splitlines()
    assert lines == [
        *(
            f"imported  {path}: session {s.header.session_id} (psl-binary)"
            for path, s in zip(paths, scenarios, strict=True)
        ),
        "3 files: 3 imported, 0 duplicate, 0 refused",
    ]


def test_duplicates_and_refused_are_reported_and_exit_1(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = history(22, visits=1)[0]
    folder = tmp_path / "in"
    psl = write(folder, "a.psl", binary(scenario))
    csv_path = write(folder, "b.csv", csv(scenario))
    junk = write(folder, "c.txt", b"hello")
    argv = ["import", str(folder), str(psl), "--db", db_url, "--raw-store", str(tmp_path / "raw")]
    status, out, _ = run(argv, capsys)
    assert status == 1
    sid = scenario.header.session_id
    assert out.splitlines() == [
        f"imported  {psl}: session {sid} (psl-binary)",
        f"duplicate {csv_path}: session {sid} already stored (from a psl-binary export)",
        f"refused   {junk}: offset 0x0: not a pump session export (psl-binary: no PSL "
        "signature; psl-csv: first line is not 'PSL Session Export' and no BOM or sep= hint)",
        f"duplicate {psl}: identical to {psl} (session {sid})",
        "4 files: 1 imported, 2 duplicate, 1 refused",
    ]


def test_quiet_prints_only_refused_and_summary(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    write_binaries(folder, history(23, visits=2))
    junk = write(folder, "zz.psl", b"\x89PSL\r\n\x1a\n")
    status, out, _ = run(["import", "-q", str(folder), "--db", db_url], capsys)
    assert status == 1
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"refused   {junk}: offset 0x")
    assert lines[1] == "3 files: 2 imported, 0 duplicate, 1 refused"


def test_default_locations_under_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PUMPTRAIL_DB", raising=False)
    monkeypatch.delenv("PUMPTRAIL_RAW_STORE", raising=False)
    data = tmp_path / "data"
    path = write(tmp_path, "one.psl", binary(history(24, visits=1)[0]))
    status, _, _ = run(["import", str(path), "--data-dir", str(data)], capsys)
    assert status == 0
    assert (data / "pumptrail.db").is_file()
    stored = [p for p in (data / "raw").rglob("*") if p.is_file()]
    assert len(stored) == 1
    assert stored[0].read_bytes() == path.read_bytes()
    assert stat.S_IMODE(stored[0].stat().st_mode) == 0o400


def test_database_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "env" / "p.db"
    monkeypatch.setenv("PUMPTRAIL_DB", f"sqlite:///{db}")
    monkeypatch.setenv("PUMPTRAIL_DATA_DIR", str(tmp_path / "data"))
    path = write(tmp_path, "one.psl", binary(history(25, visits=1)[0]))
    status, _, _ = run(["import", str(path)], capsys)
    assert status == 0
    assert db.is_file()
    assert not (tmp_path / "data" / "pumptrail.db").exists()


def test_unusable_database_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "one.psl", binary(history(26, visits=1)[0]))
    status, out, err = run(["import", str(path), "--db", "mysql://u@h/x"], capsys)
    assert status == 2
    assert out == ""
    assert err.startswith("pumptrail import: unsupported database 'mysql'")


def test_two_exports_with_one_name_from_two_folders_are_both_imported(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = history(24, visits=2)
    a = write(tmp_path / "from-a", "export.psl", binary(first))
    b = write(tmp_path / "from-b", "export.psl", binary(second))
    raw = tmp_path / "raw"
    argv = ["import", str(a.parent), str(b.parent), "--db", db_url, "--raw-store", str(raw)]
    status, out, _ = run(argv, capsys)
    assert status == 0
    assert out.splitlines() == [
        f"imported  {a}: session {first.header.session_id} (psl-binary)",
        f"imported  {b}: session {second.header.session_id} (psl-binary)",
        "2 files: 2 imported, 0 duplicate, 0 refused",
    ]
    # Both raw files are kept: two files in the raw store (on PostgreSQL, the database).
    engine = open_database(db_url)
    try:
        assert len(list(open_raw_store(engine, raw).iterate())) == 2
    finally:
        engine.dispose()
    if engine.dialect.name == "sqlite":
        assert len([p for p in raw.rglob("*") if p.is_file()]) == 2


def test_jobs_prints_and_stores_what_one_job_does(
    db_url: str, other_db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--jobs 2` over more than one group (workers started) against `--jobs 1`."""
    from tests.ingest.test_parallel_import import corpus, snapshot

    paths = corpus(tmp_path)
    folder = paths[0].parent
    paths += write_binaries(folder / "more", history(31, visits=30, serial="ITP40-90031"))
    outputs = []
    for url, raw, jobs in ((db_url, "raw-1", "1"), (other_db_url, "raw-2", "2")):
        argv = ["import", str(folder), "--db", url, "--raw-store", str(tmp_path / raw)]
        status, out, _ = run([*argv, "--jobs", jobs], capsys)
        assert status == 1  # the corpus holds refused files
        outputs.append(out)
    assert outputs[1] == outputs[0]
    assert len(outputs[0].splitlines()) == len(paths) + 1 > 64
    assert snapshot(open_database(other_db_url), tmp_path / "raw-2") == snapshot(
        open_database(db_url), tmp_path / "raw-1"
    )


@pytest.mark.parametrize("value", ["0", "-1", "two", "65"])
def test_jobs_out_of_range_is_a_usage_error(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["import", str(tmp_path), "--jobs", value])
    assert raised.value.code == 2
    assert "--jobs" in capsys.readouterr().err
