"""The serial receiver wired into `pumptrail run`: a dock on a pty pair, a missing port.

The programmer is lrzsz's `sx -k` on one end of a socat pty pair
(tests/ingest/serial_line.py); skipped without socat or lrzsz, a failure under CI.
"""

from __future__ import annotations

import random
from pathlib import Path

from fixtures.binary_writer import encode_binary
from fixtures.csv_writer import encode_csv
from fixtures.scenarios import realistic_scenario
from tests.ingest.serial_line import pty_pair, start_sender
from tests.service.support import (
    Drop,
    RunningService,
    drop,
    files_under,
    sqlite_rows,
    wait_for,
)


def test_exports_sent_from_the_dock_are_imported_and_archived(tmp_path: Path) -> None:
    rng = random.Random(8)
    scenarios = [realistic_scenario(rng), realistic_scenario(rng)]
    exports = [tmp_path / "visit.psl", tmp_path / "visit.csv"]
    exports[0].write_bytes(encode_binary(scenarios[0]))
    exports[1].write_bytes(encode_csv(scenarios[1]))
    with pty_pair(tmp_path, "dock") as pair:
        service = RunningService(tmp_path / "data", tmp_path / "service.log", serial_port=pair.a)
        try:
            service.wait_started()
            for export in exports:
                sender = start_sender(export, pair.b)
                try:
                    assert sender.wait(timeout=60) == 0, sender.stderr_text()
                finally:
                    sender.close()
            archive = tmp_path / "data" / "archive"
            assert wait_for(lambda: len(files_under(archive)) == 2, timeout=30), service.log_text()
        finally:
            assert service.terminate() == 0
    names = sorted(p.name for p in files_under(tmp_path / "data" / "archive"))
    assert [n.startswith("serial-") for n in names] == [True, True]
    assert sorted(n.rsplit(".", 1)[1] for n in names) == ["csv", "psl"]
    stored = sqlite_rows(tmp_path / "data" / "pumptrail.db", "SELECT session_id FROM sessions")
    assert sorted(r[0] for r in stored) == sorted(s.header.session_id for s in scenarios)
    assert len(service.events("received")) == 2
    assert len(service.events("file_archived")) == 2
    assert not service.events("serial_unavailable")


def test_a_missing_serial_port_is_logged_and_the_inbox_is_still_imported(
    tmp_path: Path,
) -> None:
    scenario = realistic_scenario(random.Random(9))
    service = RunningService(
        tmp_path, tmp_path / "service.log", serial_port=tmp_path / "no-such-dock"
    )
    try:
        service.wait_started()
        drop(tmp_path / "inbox", Drop("a.psl", encode_binary(scenario), None))
        assert wait_for(lambda: len(files_under(tmp_path / "archive")) == 1, timeout=30)
        assert wait_for(lambda: bool(service.events("serial_unavailable")), timeout=30)
    finally:
        assert service.terminate() == 0
    (line,) = service.events("serial_unavailable")  # logged once, not once per attempt
    assert "no such device" in line
    assert "retry_in_s=30" in line
