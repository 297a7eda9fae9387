"""Regenerate the settings table of docs/operations.md from the declarations.

The table between `<!-- settings:begin -->` and `<!-- settings:end -->` is the
output of `pumptrail settings --markdown` (`pumptrail.settings.markdown_table`),
so the docs cannot drift from the code. Run after changing a setting:

    .venv/bin/python docs/gen_settings.py          # rewrite docs/operations.md
    .venv/bin/python docs/gen_settings.py --check  # exit 1 when it is out of date

`tests/pumptrail/test_settings_docs.py` fails when the file is out of date.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

OPERATIONS = Path(__file__).resolve().parent / "operations.md"
BEGIN = "<!-- settings:begin -->"
END = "<!-- settings:end -->"


class MarkerError(ValueError):
    """The document lacks the markers, or has them in the wrong order."""


def generated_section() -> str:
    from pumptrail.settings import markdown_table

    return markdown_table()


def render(document: str, section: str) -> str:
    """`document` with the text between the markers replaced by `section`."""
    start = document.find(BEGIN)
    end = document.find(END)
    if start < 0 or end < 0 or end < start:
        raise MarkerError(f"expected {BEGIN} ... {END} in the document")
    head = document[: start + len(BEGIN)]
    return f"{head}\n{section.rstrip()}\n{document[end:]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when stale")
    parser.add_argument("--file", type=Path, default=OPERATIONS, help="document to update")
    args = parser.parse_args(argv)
    current = args.file.read_text(encoding="utf-8")
    try:
        wanted = render(current, generated_section())
    except MarkerError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2
    if wanted == current:
        print(f"{args.file}: settings section up to date")
        return 0
    if args.check:
        print(f"{args.file}: settings section out of date; run docs/gen_settings.py")
        return 1
    args.file.write_text(wanted, encoding="utf-8")
    print(f"{args.file}: settings section regenerated")
    return 0


if __name__ == "__main__":
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    sys.exit(main())
