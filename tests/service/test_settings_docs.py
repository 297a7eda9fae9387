"""The settings section of docs/operations.md is generated and up to date."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from pumptrail import cli, settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def gen_settings() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_settings", DOCS / "gen_settings.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_docs_settings_section_is_up_to_date() -> None:
    gen = gen_settings()
    document = (DOCS / "operations.md").read_text(encoding="utf-8")
    assert gen.render(document, gen.generated_section()) == document, (
        "docs/operations.md is out of date: run .venv/bin/python docs/gen_settings.py"
    )


def test_the_section_is_the_output_of_pumptrail_settings_markdown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["settings", "--markdown"]) == 0
    printed = capsys.readouterr().out
    assert printed == gen_settings().generated_section()
    document = (DOCS / "operations.md").read_text(encoding="utf-8")
    assert f"<!-- settings:begin -->\n{printed}<!-- settings:end -->" in document
    for name in ("db", "inbox", "archive", "quarantine", "serial_port", "due_within_days"):
        assert f"| `{name}` | `PUMPTRAIL_{name.upper()}` | `--{name.replace('_', '-')}` |" in (
            printed
        )
    for name, default in (("poll_seconds", 2.0), ("settle_seconds", 2.0), ("serial_baud", 115200)):
        assert settings.SETTINGS_BY_NAME[name].default == default
        assert f"| `{name}` |" in printed and f"| `{default}` |" in printed


def test_render_replaces_only_the_marked_section_and_needs_the_markers() -> None:
    gen = gen_settings()
    before = "# Doc\n\nintro\n<!-- settings:begin -->\nold table\n<!-- settings:end -->\nafter\n"
    assert gen.render(before, "| new |\n") == (
        "# Doc\n\nintro\n<!-- settings:begin -->\n| new |\n<!-- settings:end -->\nafter\n"
    )
    with pytest.raises(gen.MarkerError, match="expected <!-- settings:begin -->"):
        gen.render("# no markers\n", "| new |\n")


def test_the_script_checks_and_rewrites_a_stale_file(tmp_path: Path) -> None:
    gen = gen_settings()
    stale = tmp_path / "operations.md"
    stale.write_text("x\n<!-- settings:begin -->\nstale\n<!-- settings:end -->\n", encoding="utf-8")
    assert gen.main(["--check", "--file", str(stale)]) == 1
    assert "stale" in stale.read_text(encoding="utf-8")
    assert gen.main(["--file", str(stale)]) == 0
    assert gen.main(["--check", "--file", str(stale)]) == 0
    assert "| `poll_seconds` |" in stale.read_text(encoding="utf-8")
