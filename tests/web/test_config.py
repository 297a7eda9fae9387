"""`WebConfig.for_database` and the one argument `create_app` takes."""

from __future__ import annotations

import inspect
from pathlib import Path

import platformdirs
import pytest

from web.app import create_app
from web.context import WebConfig


def test_a_sqlite_database_puts_every_folder_beside_its_file(tmp_path: Path) -> None:
    config = WebConfig.for_database(f"sqlite:///{tmp_path / 'pt.db'}")
    assert config.db_url == f"sqlite:///{tmp_path / 'pt.db'}"
    assert config.data_dir == tmp_path
    assert config.raw_store == tmp_path / "raw"
    assert config.inbox == tmp_path / "inbox"
    assert config.quarantine == tmp_path / "quarantine"
    assert (config.due_within_days, config.sync_codes_seconds) == (14, 60.0)


def test_a_server_database_uses_the_user_data_folder() -> None:
    config = WebConfig.for_database("postgresql+psycopg://u@db.example/pt")
    folder = Path(platformdirs.user_data_dir("pumptrail", appauthor=False))
    assert config.data_dir == folder
    assert config.inbox == folder / "inbox"


def test_fields_override_the_defaults(tmp_path: Path) -> None:
    config = WebConfig.for_database(
        "sqlite:///ignored.db",
        data_dir=str(tmp_path),
        inbox=str(tmp_path / "drop"),
        idle_minutes=5,
        sync_codes_seconds=None,
        version="9",
    )
    assert config.data_dir == tmp_path
    assert config.inbox == tmp_path / "drop"
    assert config.raw_store == tmp_path / "raw"
    assert (config.idle_minutes, config.sync_codes_seconds, config.version) == (5, None, "9")
    with pytest.raises(TypeError):
        WebConfig.for_database("sqlite:///x.db", no_such_field=1)


def test_create_app_takes_a_config_and_nothing_else(tmp_path: Path) -> None:
    parameters = inspect.signature(create_app).parameters
    assert list(parameters) == ["config", "rules", "secret", "engine", "edits", "device_makers"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in list(parameters.values())[1:])
    config = WebConfig.for_database(f"sqlite:///{tmp_path / 'pt.db'}", sync_codes_seconds=None)
    app = create_app(config, secret="s" * 48)
    state = app.state.pumptrail
    assert state.config.data_dir == tmp_path
    assert state.config.version != "unknown"
    state.engine.dispose()
