"""The rooms import one way, as docs/architecture.md's table says.

The allowed directions are read from that table, so the document and the code
cannot drift apart: a new import against the flow fails here, and so does a table
that no longer matches the rooms.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ("parsers", "evidence", "db", "ingest", "web", "fixtures", "pumptrail")
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def allowed_imports() -> dict[str, set[str]]:
    """Room -> rooms it may import, from the 'Rooms and their imports' table."""
    allowed: dict[str, set[str]] = {}
    for line in ARCHITECTURE.read_text("utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not re.fullmatch(r"`\w+/`", cells[0]):
            continue
        room = cells[0].strip("`/")
        may = cells[2]
        if may == "everything":
            allowed[room] = set(ROOMS)
        elif may == "nothing else":
            allowed[room] = set()
        else:
            allowed[room] = set(re.findall(r"`(\w+)`", may))
    return allowed


def imported_rooms(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module.split(".")[0]


def test_the_table_names_every_room_once() -> None:
    assert sorted(allowed_imports()) == sorted(ROOMS)


@pytest.mark.parametrize("room", ROOMS)
def test_room_imports_only_what_the_table_allows(room: str) -> None:
    allowed = allowed_imports()[room] | {room}
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: imports {target}"
        for path in sorted((ROOT / room).rglob("*.py"))
        for line, target in imported_rooms(path)
        if target in ROOMS and target not in allowed
    ]
    assert wrong == [], "imports against docs/architecture.md:\n" + "\n".join(wrong)


def test_the_check_sees_a_wrong_direction(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from pumptrail.settings import SETTINGS\nimport web.app\n")
    assert [target for _, target in imported_rooms(module)] == ["pumptrail", "web"]
    assert "pumptrail" not in allowed_imports()["ingest"]
    assert "web" not in allowed_imports()["db"]
