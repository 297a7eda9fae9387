"""Synthetic export files for import tests, built by the fixture writers from scenarios."""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from db.migrate import open_database
from evidence import Rules, load_rules
from fixtures.binary_writer import encode_binary
from fixtures.csv_writer import encode_csv
from fixtures.scenario import Scenario
from fixtures.scenarios import pump_history
from ingest.pipeline import Importer
from ingest.rawstore import RawStore
from parsers.records import NoteRec


@functools.cache
def rules() -> Rules:
    return load_rules()


def history(seed: int, *, visits: int = 6, serial: str | None = None) -> list[Scenario]:
    """Consecutive visits of one pump (refills at visits 2, 4, ... and the last)."""
    return list(pump_history(random.Random(seed), visits=visits, serial=serial))


def binary(scenario: Scenario) -> bytes:
    return encode_binary(scenario)


def csv(scenario: Scenario) -> bytes:
    return encode_csv(scenario)


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_binaries(folder: Path, scenarios: Sequence[Scenario], prefix: str = "v") -> list[Path]:
    return [
        write(folder, f"{prefix}{index:02d}.psl", binary(scenario))
        for index, scenario in enumerate(scenarios)
    ]


def with_other_note(scenario: Scenario, text: str = "Edited after export.") -> Scenario:
    """The same session (same header, same session ID) with one note's text changed."""
    records = list(scenario.records)
    for index, record in enumerate(records):
        if isinstance(record, NoteRec):
            records[index] = record._replace(text=text)
            return replace(scenario, records=tuple(records))
    raise ValueError("scenario has no NOTE record")


def start_of(scenario: Scenario) -> datetime:
    return scenario.header.session_start_local


@contextmanager
def importer(url: str, store_root: Path, *, durable: bool = False) -> Iterator[Importer]:
    engine: Engine = open_database(url)
    try:
        yield Importer(engine, RawStore(store_root, durable=durable), rules())
    finally:
        engine.dispose()
