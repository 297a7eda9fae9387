"""`pumptrail replay --fixtures DIR`: check a case folder of exports, no database.

A case folder holds the raw exports of one or more pumps' histories and
`expected-evidence.json`, the evidence array of docs/session-json.md ("Evidence", as
`pumptrail evidence --json` prints it) those exports must give. The check runs
the same steps as an import, in memory:

1. Every regular file of the folder, recursively, in sorted order (docs/coding-rules.md
   §7.16), except `expected-evidence.json`, `README*` and dot files, is read and
   decoded with this version's parsers. Identical bytes count once. A file that
   does not decode is reported (every file of a case is meant to be an export).
2. Exports are grouped by session ID in that order: the first is used unless a
   later one disagrees, which flags `conflicting_exports` and makes the binary one
   used (§7.16, `ingest.exports.export_in_use`).
3. Sessions are chained per pump serial (§7.5) and the evidence of each is
   derived with this version's rules (`--rules-dir` or the configured ones).
4. The derived array is compared with `expected-evidence.json` session by
   session, field by field: `old` is what the folder expects, `new` what this
   version derives.

Nothing is written unless `write_expected` is asked for, which writes the derived
array as the folder's new `expected-evidence.json` (review it before keeping it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from evidence import Rules, derive_evidence, evidence_document
from ingest.exports import Incoming, Resolved, decode_export, export_in_use
from ingest.pipeline import walk_folder
from ingest.rawstore import sha256_hex
from ingest.replay.comparison import json_differences
from ingest.replay.replayer import chain_walk
from ingest.replay.report import (
    ABSENT,
    EVIDENCE,
    EVIDENCE_MISSING,
    UNDECODABLE,
    Difference,
    counted,
)
from parsers.errors import DecodeError, PumptrailError
from parsers.registry import read_export

EXPECTED_FILE: Final = "expected-evidence.json"
EXTRA_SESSION: Final = "evidence_extra"


class CaseError(PumptrailError):
    """Raised when a case folder cannot be checked at all.

    The folder is missing or not a folder, a file of it cannot be read, or its
    `expected-evidence.json` is missing, not JSON, or not an array of evidence
    objects each with a `session_id`.
    """


@dataclass
class CaseReport:
    """What checking one case folder found."""

    folder: Path
    files: int = 0
    duplicates: int = 0
    sessions: int = 0
    pumps: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def summary(self) -> str:
        line = (
            f"case {self.folder}: {counted(self.files, 'export')} ({self.duplicates} identical), "
            f"{counted(self.sessions, 'session')} of {counted(self.pumps, 'pump')}"
        )
        if self.ok:
            return line + ": evidence as expected"
        subjects = len({d.subject for d in self.differences})
        return (
            line
            + f": {counted(len(self.differences), 'difference')} in {counted(subjects, 'session or file', 'sessions or files')}"
        )


def case_exports(folder: Path) -> list[Path]:
    """The export files of a case folder, in the order an import takes them (§7.16)."""
    return [
        path
        for path in walk_folder(folder)
        if path.name != EXPECTED_FILE
        and not path.name.startswith(("README", "."))
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]


def derive_case(folder: Path, rules: Rules) -> tuple[list[dict[str, Any]], CaseReport]:
    """The evidence array the exports of `folder` give, and what was seen on the way."""
    if not folder.is_dir():
        raise CaseError(f"{folder}: not a folder")
    report = CaseReport(folder)
    seen: set[str] = set()
    by_session: dict[str, list[Incoming]] = {}
    for path in case_exports(folder):
        name = path.relative_to(folder).as_posix()
        report.files += 1
        try:
            data = read_export(path, source=name)
        except DecodeError as exc:
            report.differences.append(Difference(UNDECODABLE, name, message=str(exc)))
            continue
        except OSError as exc:
            raise CaseError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        digest = sha256_hex(data)
        if digest in seen:  # identical bytes, recognised before decoding (§7.16)
            report.duplicates += 1
            continue
        seen.add(digest)
        try:
            export = decode_export(data, name)
        except DecodeError as exc:
            report.differences.append(
                Difference(UNDECODABLE, name, message=f"does not decode: {exc}")
            )
            continue
        by_session.setdefault(export.session.session_id, []).append(export)

    chains: dict[str, list[Resolved]] = {}
    for exports in by_session.values():
        resolved = export_in_use(exports)
        chains.setdefault(resolved.session.pump.serial, []).append(resolved)
    documents: list[dict[str, Any]] = []
    for serial in sorted(chains):
        chain = sorted(
            chains[serial], key=lambda r: (r.session.session_start_utc, r.session.session_id)
        )
        for item, _prior, history in chain_walk(chain, lambda r: r.session.session_start_utc):
            evidence = derive_evidence(
                item.session,
                [h.session for h in history],
                rules,
                conflicting_exports=item.conflicting,
            )
            documents.append(evidence_document(evidence))
    report.sessions = len(documents)
    report.pumps = len(chains)
    return documents, report


def load_expected(folder: Path) -> list[dict[str, Any]]:
    path = folder / EXPECTED_FILE
    try:
        value = json.loads(path.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise CaseError(
            f"{path}: missing (write it with `pumptrail replay --fixtures {folder} "
            "--write-expected`, then review it)"
        ) from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CaseError(f"{path}: not readable JSON: {exc}") from exc
    if not isinstance(value, list) or not all(
        isinstance(item, dict) and isinstance(item.get("session_id"), str) for item in value
    ):
        raise CaseError(
            f"{path}: expected a JSON array of evidence objects, each with a session_id"
        )
    return value


def compare_evidence_arrays(
    expected: list[dict[str, Any]], derived: list[dict[str, Any]]
) -> list[Difference]:
    """Per session ID: what the folder expects (`old`) against what is derived (`new`)."""
    found: list[Difference] = []
    derived_by_id = {doc["session_id"]: doc for doc in derived}
    expected_ids = {doc["session_id"] for doc in expected}
    for doc in expected:
        session_id = doc["session_id"]
        now = derived_by_id.get(session_id)
        if now is None:
            found.append(
                Difference(
                    EVIDENCE_MISSING,
                    session_id,
                    "evidence",
                    message="expected, but no export in the folder gives this session",
                )
            )
            continue
        found.extend(
            Difference(EVIDENCE, session_id, path, old, new)
            for path, old, new in json_differences(doc, now, "evidence")
        )
    for doc in derived:
        if doc["session_id"] not in expected_ids:
            found.append(
                Difference(
                    EXTRA_SESSION,
                    doc["session_id"],
                    "evidence",
                    ABSENT,
                    message="derived from the exports, but not in expected-evidence.json",
                )
            )
    return found


def check_case(folder: Path, rules: Rules) -> CaseReport:
    """Derive the folder's evidence and compare it with its `expected-evidence.json`."""
    if not folder.is_dir():
        raise CaseError(f"{folder}: not a folder")
    expected = load_expected(folder)
    derived, report = derive_case(folder, rules)
    report.differences.extend(compare_evidence_arrays(expected, derived))
    return report


def expected_text(documents: list[dict[str, Any]]) -> str:
    """`expected-evidence.json` as written: indented, UTF-8 kept, newline at the end."""
    return json.dumps(documents, indent=2, ensure_ascii=False) + "\n"


def write_expected(folder: Path, rules: Rules) -> CaseReport:
    """Write the derived evidence as the folder's `expected-evidence.json`."""
    derived, report = derive_case(folder, rules)
    (folder / EXPECTED_FILE).write_text(expected_text(derived), "utf-8")
    return report
