"""The service on a damaged database (docs/operations.md, "Database health").

Damage found at start (quick_check), by the daily integrity check, or by an import
stops the service with status 3: the export stays in the inbox, nothing is
quarantined, and the log says what to do without quoting any stored value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import ingest.service
from db.codec import StoredDocumentError
from ingest.pipeline import GROUP_FILES
from ingest.service import EXIT_DAMAGED, Service, ServiceConfig
from tests.db.damage import overwrite_index_page
from tests.ingest.exports import binary, history, importer, rules


@pytest.fixture
def config(tmp_path: Path) -> ServiceConfig:
    data = tmp_path / "data"
    with importer(f"sqlite:///{data / 'pumptrail.db'}", data / "raw") as imp:
        for index, scenario in enumerate(history(31, visits=2)):
            assert imp.import_bytes(binary(scenario), name=f"v{index}.psl").outcome == "imported"
    return ServiceConfig(
        db_url=f"sqlite:///{data / 'pumptrail.db'}",
        inbox=data / "inbox",
        archive=data / "archive",
        quarantine=data / "quarantine",
        raw_store=data / "raw",
        poll_seconds=0.05,
        settle_seconds=0.0,
    )


@pytest.fixture
def service(config: ServiceConfig) -> Iterator[Service]:
    made = Service(config, rules())
    yield made
    if made._engine is not None:
        made._engine.dispose()


def database_file(config: ServiceConfig) -> Path:
    return Path(config.db_url.removeprefix("sqlite:///"))


def drop_export(config: ServiceConfig) -> Path:
    config.inbox.mkdir(parents=True, exist_ok=True)
    path = config.inbox / "new-visit.psl"
    path.write_bytes(binary(history(32, visits=1)[0]))
    return path


def quarantined(config: ServiceConfig) -> list[Path]:
    return sorted(config.quarantine.rglob("*")) if config.quarantine.exists() else []


def damaged_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "database_damaged" in r.getMessage()]


def test_damage_found_at_start_stops_the_service_with_status_3(
    config: ServiceConfig, service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    overwrite_index_page(database_file(config))
    waiting = drop_export(config)
    caplog.set_level(logging.INFO, logger="ingest.service")
    assert service.run(install_signals=False) == EXIT_DAMAGED == 3
    assert waiting.exists()
    assert quarantined(config) == []
    (line,) = damaged_lines(caplog)
    assert "quick_check found it damaged" in line
    assert "restore the database from the newest backup" in line
    assert service.health is not None and not service.health.ok
    assert service.health.check == "quick_check"


def test_damage_found_by_an_import_leaves_the_file_and_stops(
    config: ServiceConfig, service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    service.prepare()
    assert service.health is not None and service.health.ok
    assert service._engine is not None
    service._engine.dispose()  # no open connection holds the old pages
    overwrite_index_page(database_file(config))
    waiting = drop_export(config)
    caplog.set_level(logging.INFO, logger="ingest")
    service.poll_job()  # sees the file
    service.poll_job()  # imports it: the lookup by SHA-256 reads the damaged page
    assert service.exit_status == EXIT_DAMAGED
    assert service.stop_event.is_set()
    assert waiting.exists()
    assert quarantined(config) == []
    assert service.watcher.counts["quarantined"] == 0
    (line,) = damaged_lines(caplog)
    assert "database disk image is malformed" in line
    assert service.health is not None and not service.health.ok
    assert service.health.check == "in_use"
    service.poll_job()  # stopped: nothing more is tried
    assert waiting.exists()


def test_damage_found_by_a_backfill_leaves_every_file_and_stops(
    config: ServiceConfig, caplog: pytest.LogCaptureFixture
) -> None:
    service = Service(replace(config, import_jobs=2), rules())
    service.prepare()
    assert service._engine is not None
    service._engine.dispose()
    overwrite_index_page(database_file(config))
    backlog: list[Path] = []
    for seed in range(40, 47):
        for index, scenario in enumerate(history(seed, visits=10)):
            backlog.append(config.inbox / f"p{seed}-v{index:02d}.psl")
            backlog[-1].write_bytes(binary(scenario))
    assert len(backlog) > GROUP_FILES
    caplog.set_level(logging.INFO, logger="ingest")
    service.poll_job()  # sees the files
    service.poll_job()  # a backfill: the group's lookup by SHA-256 reads the damaged page
    assert any("backfill_started" in r.getMessage() for r in caplog.records)
    assert service.exit_status == EXIT_DAMAGED
    assert all(path.exists() for path in backlog)
    assert quarantined(config) == []
    assert not config.archive.exists() or not any(config.archive.rglob("*.psl"))
    (line,) = damaged_lines(caplog)
    assert "database disk image is malformed" in line
    if service._engine is not None:
        service._engine.dispose()


def test_the_daily_integrity_check_stops_a_damaged_service(
    config: ServiceConfig, service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    service.prepare()
    caplog.set_level(logging.INFO, logger="ingest.service")
    service.health_job()
    assert service.exit_status == 0
    assert service.health is not None and service.health.check == "integrity_check"
    assert service.health.ok
    assert service._engine is not None
    service._engine.dispose()
    overwrite_index_page(database_file(config))
    service.health_job()
    assert service.exit_status == EXIT_DAMAGED
    assert service.health is not None and not service.health.ok
    assert len(damaged_lines(caplog)) == 1


def test_a_damaged_document_never_reaches_the_log(
    service: Service, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def damaged_row(*_args: object, **_kwargs: object) -> None:
        raise StoredDocumentError(
            'stored document: patient_name: expected text, found {"name": "Jane Roe"}'
        )

    monkeypatch.setattr(ingest.service, "due_report", damaged_row)
    caplog.set_level(logging.DEBUG)
    service.due_job()
    messages = [f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    assert any("refills_due_failed" in m and "StoredDocumentError" in m for m in messages)
    assert not any("Jane Roe" in m for m in messages)
    assert service.exit_status == 0  # not damage: the job is retried later
