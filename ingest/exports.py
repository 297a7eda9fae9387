"""Exports of one session: which one is used when two disagree (docs/coding-rules.md §7.16).

One session may arrive as several exports: the binary log and the CSV, or the same
format with other bytes. Two exports conflict when their normalized documents
(docs/session-json.md) differ in anything but `source_format`, `format_version` and
`warnings`; the session is then flagged `conflicting_exports` and the binary
export is the one used. `choose_export` is that rule, for one export in use and
one more; the import pipeline applies it to the stored export and a new one, and
replay folds it over a session's exports in arrival order (`export_in_use`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from db.codec import has_refill
from ingest.rawstore import sha256_hex
from parsers.model import Session
from parsers.psl_binary import FORMAT_NAME
from parsers.registry import decode_bytes
from parsers.session_json import comparable_document, session_document

# The export that wins a conflict (docs/formats.md).
BINARY: Final = FORMAT_NAME


@dataclass(frozen=True)
class Incoming:
    """A decoded file on its way into the database (replay rebuilds these too)."""

    name: str
    digest: str
    size: int
    session: Session
    document: dict[str, Any]


def decode_export(data: bytes, name: str) -> Incoming:
    """Decode one export (raises DecodeError) into what the pipeline would store."""
    session = decode_bytes(data, source=name)
    return Incoming(name, sha256_hex(data), len(data), session, session_document(session))


class ExportChoice(NamedTuple):
    """What `choose_export` decided for one more export of a session."""

    # The two normalized documents differ beyond the format-specific keys.
    conflicting: bool
    # The other export replaces the one in use.
    use_other: bool


def choose_export(
    in_use_format: str,
    in_use_document: Mapping[str, Any],
    other_format: str,
    other_document: Mapping[str, Any],
) -> ExportChoice:
    """Whether another export of a session conflicts with the one in use, and which wins (§7.16).

    Exports that agree keep the one in use. Exports that conflict: the binary one
    is used, so a binary export replaces a non-binary one and nothing replaces a
    binary one.
    """
    if comparable_document(in_use_document) == comparable_document(other_document):
        return ExportChoice(conflicting=False, use_other=False)
    return ExportChoice(
        conflicting=True, use_other=other_format == BINARY and in_use_format != BINARY
    )


@dataclass(frozen=True, slots=True)
class Resolved:
    """A session as the pipeline stores it: the export in use, and whether exports conflict."""

    export: Incoming
    conflicting: bool

    @property
    def session(self) -> Session:
        return self.export.session

    @property
    def has_refill(self) -> bool:
        return has_refill(self.export.session)


def export_in_use(exports: Sequence[Incoming]) -> Resolved:
    """The export whose document is stored, and whether the exports conflict (§7.16).

    `exports` are one session's exports in arrival order, taken as the pipeline
    takes them: the first is stored, and `choose_export` decides for each later one.
    """
    if not exports:
        raise ValueError("a session needs at least one export")
    used, conflicting = exports[0], False
    for other in exports[1:]:
        choice = choose_export(
            used.session.source_format,
            used.document,
            other.session.source_format,
            other.document,
        )
        conflicting = conflicting or choice.conflicting
        if choice.use_other:
            used = other
    return Resolved(used, conflicting)
