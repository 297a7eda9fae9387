"""Who made a pump: model prefixes to manufacturers, as data (FHIR Device.manufacturer).

The export header names the pump model (docs/formats.md §2.1), never its maker. The
built-in table `evidence/data/devices.toml` holds the models pumptrail knows; a
clinic's `rules_dir/devices.toml` adds its own, tried first. A model no entry
matches has no known maker, and the FHIR Device then carries none.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Final

from evidence.rules import RulesError

DEVICES_FILE: Final = "devices.toml"

DeviceMakers = tuple[tuple[str, str], ...]


def _entries(file: str, text: str) -> DeviceMakers:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(file, "", f"not TOML: {exc}") from exc
    found: list[tuple[str, str]] = []
    for index, entry in enumerate(data.get("device", [])):
        where = f"device[{index}]"
        prefix, maker = entry.get("model_prefix"), entry.get("manufacturer")
        if not isinstance(prefix, str) or not prefix.strip():
            raise RulesError(file, f"{where}.model_prefix", "expected a non-empty text")
        if not isinstance(maker, str) or not maker.strip():
            raise RulesError(file, f"{where}.manufacturer", "expected a non-empty text")
        found.append((prefix.strip(), maker.strip()))
    return tuple(found)


def load_device_makers(extra_dir: Path | None = None) -> DeviceMakers:
    """The clinic's entries (from `extra_dir`, when it has a devices.toml) then the built-ins."""
    builtin = _entries(
        f"evidence/data/{DEVICES_FILE}",
        resources.files("evidence.data").joinpath(DEVICES_FILE).read_text("utf-8"),
    )
    if extra_dir is None or not (extra_dir / DEVICES_FILE).is_file():
        return builtin
    path = extra_dir / DEVICES_FILE
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(str(path), "", f"cannot read: {exc}") from exc
    return _entries(str(path), text) + builtin


def manufacturer_of(model: str, makers: Sequence[tuple[str, str]]) -> str | None:
    """The maker of the first entry whose prefix `model` starts with; None when unknown."""
    wanted = model.strip().casefold()
    for prefix, maker in makers:
        if wanted.startswith(prefix.casefold()):
            return maker
    return None
