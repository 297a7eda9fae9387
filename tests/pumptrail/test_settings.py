"""Settings declared once: defaults, config file, environment and CLI, in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

from pumptrail import settings


def test_defaults_derive_paths_from_data_dir(tmp_path: Path) -> None:
    resolved = settings.load(environ={"PUMPTRAIL_DATA_DIR": str(tmp_path)})
    assert resolved.inbox == tmp_path / "inbox"
    assert resolved.quarantine == tmp_path / "quarantine"
    assert resolved.db == f"sqlite:///{tmp_path}/pumptrail.db"
    assert resolved.values["poll_seconds"] == 2.0
    assert resolved.values["settle_seconds"] == 2.0
    assert resolved.values["serial_baud"] == 115200
    assert resolved.values["due_within_days"] == 14
    assert resolved.sources["poll_seconds"] == "default"


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    config = tmp_path / "pumptrail.toml"
    config.write_text('poll_seconds = 5\nserial_port = "/dev/ttyUSB0"\ndue_within_days = 7\n')
    resolved = settings.load(
        cli={"poll_seconds": "9"},
        environ={"PUMPTRAIL_SERIAL_PORT": "/dev/ttyS1"},
        config_file=config,
    )
    assert resolved.values["poll_seconds"] == 9.0
    assert resolved.sources["poll_seconds"] == "command line"
    assert resolved.values["serial_port"] == "/dev/ttyS1"
    assert resolved.sources["serial_port"] == "environment PUMPTRAIL_SERIAL_PORT"
    assert resolved.values["due_within_days"] == 7
    assert resolved.sources["due_within_days"].startswith("config ")


def test_bad_values_name_the_setting_and_source(tmp_path: Path) -> None:
    with pytest.raises(
        settings.SettingsError,
        match="environment PUMPTRAIL_SERIAL_BAUD: setting serial_baud: expected int, found 'fast'",
    ):
        settings.load(environ={"PUMPTRAIL_SERIAL_BAUD": "fast"})
    config = tmp_path / "bad.toml"
    config.write_text("pol_seconds = 1\n")
    with pytest.raises(settings.SettingsError, match="unknown setting"):
        settings.load(environ={}, config_file=config)


def test_markdown_table_lists_every_setting() -> None:
    table = settings.markdown_table()
    for s in settings.SETTINGS:
        assert f"`PUMPTRAIL_{s.name.upper()}`" in table
        assert f"`--{s.name.replace('_', '-')}`" in table
