"""The docs stand alone and stay in step with the code.

- No file of the project cites a document a clone does not have: the formats, the
  session JSON and the coding rules are the project's own `docs/formats.md`,
  `docs/format-psl-csv.md`, `docs/session-json.md` and `docs/coding-rules.md`.
- Every "docs/X.md §N" (or `docs/X.md "Section"`) citation names a doc that exists
  and a heading that exists in it.
- The error-code table of docs/formats.md §9.1 lists exactly the codes the decoders
  raise, and the warning table of §10 exactly the warning codes they log.
- README.md's documentation table lists every doc.
"""

from __future__ import annotations

import ast
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
THIS_FILE = Path(__file__).resolve().relative_to(ROOT).as_posix()
TEXT_SUFFIXES = frozenset({".py", ".md", ".toml", ".html", ".txt", ".cfg", ".ini", ".j2"})
SKIP_DIRS = frozenset(
    {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "build"}
)

# Citations of documents outside the project (the reference contracts the project
# was written from) or of their file names without the project's docs/ folder.
FOREIGN_CITATIONS = (
    re.compile(r"\.\./shared"),
    re.compile(r"\bshared/(?:formats|domain|design|hooks)\b"),
    re.compile(r"psl-binary-v1"),
    re.compile(r"psl-csv-v1"),
    re.compile(r"(?<![\w/.-])design\.md"),
    re.compile(r"(?<!docs/)(?<![\w.-])(?:coding-rules|session-json)\.md"),
    re.compile(r"(?<![\w/.-])(?:coding-rules|session-json)(?= ?§)"),
)

# "docs/X.md §7.10-7.12, §8" or "`docs/X.md` §1, §3": the doc, then its section numbers.
SECTION = r"§\d+(?:\.\d+)*"
CITATION = re.compile(
    r"docs/(?P<doc>[\w-]+\.md)`?\s*(?P<sections>"
    + SECTION
    + r"(?:\s*(?:,|/|-|–|and)\s*§?\d+(?:\.\d+)*(?![\w.]))*)"
)
NAMED_CITATION = re.compile(r'docs/(?P<doc>[\w-]+\.md)`?\s*"(?P<name>[^"\n]+)"')
DOC_MENTION = re.compile(r"docs/(?P<doc>[\w-]+\.md)")
HEADING = re.compile(r"^#{1,6}\s+(?P<text>.+?)\s*$", re.MULTILINE)
HEADING_NUMBER = re.compile(r"^(?:§)?(?P<number>\d+(?:\.\d+)*)\.?(?:\s|$)")

# The callables whose first argument is a decode error's code (`UnknownFormat` passes
# its code to `DecodeError.__init__` through `super().__init__`).
ERROR_FACTORIES = frozenset(
    {
        "DecodeError",
        "LimitExceeded",
        "UnsupportedVersion",
        "StrictModeWarning",
        "_Fail",
        "_error",
        "fail",
        "error",
        "__init__",
    }
)
TABLE_CODE = re.compile(r"^\|\s*`(?P<code>[a-z0-9_:]+)`\s*\|", re.MULTILINE)


def project_files() -> list[str]:
    """Tracked text files (every file under the root when there is no git checkout)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        listed = [
            path.relative_to(ROOT).as_posix()
            for path in ROOT.rglob("*")
            if path.is_file() and not SKIP_DIRS.intersection(path.relative_to(ROOT).parts)
        ]
    return sorted(
        name
        for name in listed
        if name
        and Path(name).suffix in TEXT_SUFFIXES
        and name != THIS_FILE
        and (ROOT / name).is_file()
    )


def flattened(text: str) -> str:
    """The text with line breaks (and comment markers after them) as single spaces,
    so a citation wrapped over two docstring or comment lines is still one citation."""
    return re.sub(r"\s*\n\s*(?:#+\s*)?", " ", text)


def headings(doc: str) -> list[str]:
    return [m["text"] for m in HEADING.finditer((ROOT / "docs" / doc).read_text("utf-8"))]


def section_numbers(doc: str) -> set[str]:
    numbers = set()
    for text in headings(doc):
        m = HEADING_NUMBER.match(text)
        if m:
            numbers.add(m["number"])
    return numbers


def cited_sections(sections: str) -> Iterator[str]:
    yield from re.findall(r"\d+(?:\.\d+)*", sections)


def test_no_file_cites_documents_outside_the_project() -> None:
    found = []
    for name in project_files():
        text = (ROOT / name).read_text("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for pattern in FOREIGN_CITATIONS:
                if pattern.search(line):
                    found.append(f"{name}:{number}: {line.strip()}")
                    break
    assert not found, "cite the project's docs/ instead:\n" + "\n".join(found)


def test_every_doc_citation_points_to_an_existing_heading() -> None:
    numbers: dict[str, set[str]] = {}
    titles: dict[str, list[str]] = {}
    broken = []
    for name in project_files():
        text = flattened((ROOT / name).read_text("utf-8", errors="replace"))
        for m in DOC_MENTION.finditer(text):
            if not (ROOT / "docs" / m["doc"]).is_file():
                broken.append(f"{name}: docs/{m['doc']} does not exist")
        for m in CITATION.finditer(text):
            doc = m["doc"]
            if not (ROOT / "docs" / doc).is_file():
                continue
            known = numbers.setdefault(doc, section_numbers(doc))
            broken.extend(
                f"{name}: docs/{doc} has no section §{number} (in {m.group(0)!r})"
                for number in cited_sections(m["sections"])
                if number not in known
            )
        for m in NAMED_CITATION.finditer(text):
            doc = m["doc"]
            if not (ROOT / "docs" / doc).is_file():
                continue
            known_titles = titles.setdefault(doc, headings(doc))
            if not any(m["name"] in title for title in known_titles):
                broken.append(f'{name}: docs/{doc} has no section "{m["name"]}"')
    assert not broken, "\n".join(sorted(set(broken)))


def test_citations_are_found_across_line_breaks() -> None:
    # The checker itself: a wrapped citation, a range, a list and a missing section.
    text = flattened("see docs/coding-rules.md\n    # §7.10-7.12, §8 and §99 (rules 1-7)")
    m = CITATION.search(text)
    assert m is not None
    assert list(cited_sections(m["sections"])) == ["7.10", "7.12", "8", "99"]
    assert "7.16" in section_numbers("coding-rules.md")
    assert "99" not in section_numbers("coding-rules.md")


def _section(doc_text: str, heading: str) -> str:
    start = doc_text.index(heading)
    following = re.search(r"^#{1,3} ", doc_text[start + len(heading) :], re.MULTILINE)
    end = len(doc_text) if following is None else start + len(heading) + following.start()
    return doc_text[start:end]


def _decoder_modules() -> list[tuple[str, ast.Module]]:
    return [
        (path.name, ast.parse(path.read_text("utf-8")))
        for path in sorted((ROOT / "parsers").glob("*.py"))
    ]


def _call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def raised_error_codes() -> set[str]:
    """Every literal code passed to an error constructor or factory in parsers/."""
    codes: set[str] = set()
    opaque = []
    for module, tree in _decoder_modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or _call_name(node) not in ERROR_FACTORIES:
                continue
            if not node.args:
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                codes.add(first.value)
            elif isinstance(first, ast.Name) and first.id == "code":
                continue  # a factory handing its own `code` parameter on
            elif isinstance(first, ast.Attribute) and first.attr == "code":
                continue  # a caught failure re-raised with its code
            elif isinstance(first, ast.JoinedStr) and ast.unparse(first).startswith("f'strict:"):
                continue  # a warning promoted by strict mode: `strict:<warning code>`
            elif _call_name(node) == "__init__":
                continue  # a constructor that is not an error's
            else:
                opaque.append(f"{module}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert not opaque, "error codes the table cannot be checked against:\n" + "\n".join(opaque)
    return codes


def logged_warning_codes() -> set[str]:
    codes: set[str] = set()
    for _module, tree in _decoder_modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _call_name(node) == "warn":
                for keyword in node.keywords:
                    if keyword.arg == "code" and isinstance(keyword.value, ast.Constant):
                        codes.add(str(keyword.value.value))
    return codes


def _table_codes(heading: str) -> list[str]:
    text = (ROOT / "docs" / "formats.md").read_text("utf-8")
    return [m["code"] for m in TABLE_CODE.finditer(_section(text, heading))]


def test_error_code_table_lists_exactly_the_codes_the_decoders_raise() -> None:
    raised = raised_error_codes()
    # The sanity floor: a parser change that hides codes from this scan must fail here.
    assert {"record_crc", "bad_unit", "unknown_format", "file_too_large"} <= raised
    listed = _table_codes("### 9.1 Error codes")
    assert len(listed) == len(set(listed)), "a code is listed twice"
    assert sorted(raised - set(listed)) == [], "raised but missing from docs/formats.md §9.1"
    assert sorted(set(listed) - raised) == [], "listed in docs/formats.md §9.1 but never raised"


def test_warning_table_lists_exactly_the_warning_codes() -> None:
    logged = logged_warning_codes()
    assert {"unknown_record_type", "unlogged_change", "unknown_label"} <= logged
    listed = _table_codes("## 10. Warnings")
    assert len(listed) == len(set(listed)), "a code is listed twice"
    assert sorted(logged - set(listed)) == [], "logged but missing from docs/formats.md §10"
    assert sorted(set(listed) - logged) == [], "listed in docs/formats.md §10 but never logged"


@pytest.mark.parametrize("module", ["psl_binary.py", "psl_csv.py"])
def test_decoder_docstrings_point_to_the_table_instead_of_listing_codes(module: str) -> None:
    docstring = ast.get_docstring(ast.parse((ROOT / "parsers" / module).read_text("utf-8")))
    assert docstring is not None
    assert "docs/formats.md §9.1" in docstring
    assert "``record_crc``" not in docstring
    assert "``bad_unit``" not in docstring


def test_readme_lists_every_doc() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    missing = [
        f"docs/{path.name}"
        for path in sorted((ROOT / "docs").glob("*.md"))
        if f"| `docs/{path.name}` |" not in readme
    ]
    assert not missing, f"README.md's documentation table lacks {missing}"
