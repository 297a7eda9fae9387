"""Pump makers as data: built-in models, a clinic's own entries first, unknown models."""

from __future__ import annotations

from pathlib import Path

import pytest

from evidence.devices import load_device_makers, manufacturer_of
from evidence.rules import RulesError


def test_built_in_models_and_unknown_ones() -> None:
    makers = load_device_makers()
    assert manufacturer_of("SynchroMed II", makers) == "Medtronic"
    assert manufacturer_of("synchromed ii", makers) == "Medtronic"
    assert manufacturer_of("8637-40", makers) == "Medtronic"
    assert manufacturer_of("IT-40", makers) is not None
    assert manufacturer_of("Unheard-of 9000", makers) is None


def test_a_clinics_entries_come_first(tmp_path: Path) -> None:
    (tmp_path / "devices.toml").write_text(
        '[[device]]\nmodel_prefix = "SynchroMed"\nmanufacturer = "Medtronic plc (Dublin)"\n'
        '[[device]]\nmodel_prefix = "Acme"\nmanufacturer = "Acme Pumps"\n'
    )
    makers = load_device_makers(tmp_path)
    assert manufacturer_of("SynchroMed II", makers) == "Medtronic plc (Dublin)"
    assert manufacturer_of("Acme 20", makers) == "Acme Pumps"
    assert manufacturer_of("Prometra II", makers) == "Flowonix Medical"


def test_a_bad_entry_names_its_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "devices.toml").write_text('[[device]]\nmodel_prefix = ""\nmanufacturer = "X"\n')
    with pytest.raises(RulesError, match=r"devices.toml: device\[0\].model_prefix"):
        load_device_makers(tmp_path)
