"""Replay's comparisons: stored rows against the rows and evidence derived again.

The rows compared are those the import pipeline writes (`db.codec`: the `sessions`
columns and normalized document of docs/session-json.md, `setting_values`,
`events`) and the evidence row, its document and its `evidence_flags`
(docs/coding-rules.md §7.5, §7.11). JSON documents are compared leaf by leaf
(`json_differences`), with a boolean never equal to an integer (`same_value`).
Audit entries of `--apply` count differing fields by name only (`field_counts`):
values may be patient identifiers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, Final

from db import queries
from db.codec import event_rows, loads, session_columns, setting_rows
from db.replay_queries import StoredRows
from ingest.exports import Resolved
from ingest.replay.report import (
    ABSENT,
    EVENT,
    EVIDENCE,
    EVIDENCE_MISSING,
    SESSION,
    SETTING,
    Difference,
)
from parsers.params import PHASE_INTERROGATED, PHASE_PROGRAMMED

PHASE_NAMES: Final = {PHASE_INTERROGATED: "interrogated", PHASE_PROGRAMMED: "programmed"}


def json_differences(old: Any, new: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """(path, old, new) of every leaf where two JSON values differ.

    Objects by key (`a.b`), arrays by index (`a[3]`); `true` and `1` differ.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in new:
                yield sub, old[key], ABSENT
            elif key not in old:
                yield sub, ABSENT, new[key]
            else:
                yield from json_differences(old[key], new[key], sub)
    elif isinstance(old, list) and isinstance(new, list):
        for index in range(max(len(old), len(new))):
            sub = f"{path}[{index}]"
            if index >= len(new):
                yield sub, old[index], ABSENT
            elif index >= len(old):
                yield sub, ABSENT, new[index]
            else:
                yield from json_differences(old[index], new[index], sub)
    elif not same_value(old, new):
        yield path, old, new


def same_value(old: Any, new: Any) -> bool:
    """Equal and of the same kind (a boolean never equals an integer)."""
    return isinstance(old, bool) == isinstance(new, bool) and old == new


def field_counts(differences: Sequence[Difference]) -> dict[str, int]:
    """How often each field differs: names only, no values (audit detail)."""
    counts: Counter[str] = Counter()
    for difference in differences:
        # events[3].data.new -> events[].data.new: field names, not positions.
        name = difference.field or difference.kind
        counts[_generic(name)] += 1
    return dict(sorted(counts.items()))


def _generic(name: str) -> str:
    out: list[str] = []
    skipping = False
    for char in name:
        if char == "[":
            skipping = True
            out.append("[")
        elif char == "]":
            skipping = False
            out.append("]")
        elif not skipping:
            out.append(char)
    return "".join(out)


def compare_session(
    stored: StoredRows, now: Resolved, serial: str, *, parser_version: str
) -> list[Difference]:
    """The stored session rows against those the pipeline would write now.

    `now` is the session as its raw files resolve today (`ingest.exports.export_in_use`);
    `serial` is the pump it is stored under; `parser_version` the version writing rows.
    """
    export = now.export
    subject = stored.session_id
    found: list[Difference] = []
    expected = session_columns(export.session, export.document)
    expected.update(
        source_sha256=export.digest,
        source_name=export.name,
        conflicting_exports=now.conflicting,
        parser_version=parser_version,
    )
    for column, new in expected.items():
        if column == "document":
            continue
        old = stored.row.get(column, ABSENT)
        if not same_value(old, new):
            found.append(Difference(SESSION, subject, f"sessions.{column}", old, new))
    if export.session.pump.serial != serial:
        found.append(
            Difference(SESSION, subject, "pump.serial", serial, export.session.pump.serial)
        )
    found.extend(
        document_differences(
            SESSION, subject, "document", stored.row["document"], expected["document"]
        )
    )

    new_settings = {
        (row["phase"], row["param"]): row["value"]
        for row in setting_rows(stored.pk, export.session, export.document)
    }
    for key in [*stored.settings, *(k for k in new_settings if k not in stored.settings)]:
        old_text, new_text = stored.settings.get(key), new_settings.get(key)
        if old_text == new_text:
            continue
        phase, param = key
        found.append(
            Difference(
                SETTING,
                subject,
                f"setting_values.{PHASE_NAMES.get(phase, phase)}.{param}",
                ABSENT if old_text is None else _json(old_text),
                ABSENT if new_text is None else _json(new_text),
            )
        )

    new_events = {row["seq"]: row for row in event_rows(stored.pk, export.session, export.document)}
    for seq in sorted(set(stored.events) | set(new_events)):
        old_row, new_row = stored.events.get(seq), new_events.get(seq)
        if old_row is None or new_row is None:
            found.append(
                Difference(
                    EVENT,
                    subject,
                    f"events[{seq}]",
                    ABSENT if old_row is None else _json(old_row["data"]),
                    ABSENT if new_row is None else _json(new_row["data"]),
                )
            )
            continue
        for column, new in new_row.items():
            if column in ("session_pk", "seq", "data"):
                continue
            if not same_value(old_row.get(column), new):
                found.append(
                    Difference(EVENT, subject, f"events[{seq}].{column}", old_row.get(column), new)
                )
        found.extend(
            document_differences(
                EVENT, subject, f"events[{seq}].data", old_row["data"], new_row["data"]
            )
        )
    return found


def compare_evidence(stored: StoredRows, record: queries.EvidenceRecord) -> list[Difference]:
    """The stored evidence row and flags against the evidence derived now."""
    subject = stored.session_id
    row = stored.evidence
    if row is None:
        code = _json(record.document).get("codes", {})
        summary = ", ".join(f"{name} {value.get('procedure')}" for name, value in code.items())
        return [
            Difference(
                EVIDENCE_MISSING,
                subject,
                "evidence",
                message=f"no stored evidence row (derived now: {summary or 'no codes'})",
            )
        ]
    found: list[Difference] = []
    expected = {
        "prior_session_pk": record.prior_session_pk,
        "procedure": record.procedure,
        "flags": queries.flags_text(record.flags),
        "rules_version": record.rules_version,
        "parser_version": record.parser_version,
    }
    for column, new in expected.items():
        old = row.get(column, ABSENT)
        if not same_value(old, new):
            found.append(Difference(EVIDENCE, subject, f"evidence.{column}", old, new))
    found.extend(
        document_differences(
            EVIDENCE, subject, "evidence.document", row["document"], record.document
        )
    )
    if stored.flags != set(record.flags):
        found.append(
            Difference(
                EVIDENCE, subject, "evidence_flags", sorted(stored.flags), sorted(record.flags)
            )
        )
    return found


def _json(text_value: str) -> Any:
    try:
        return loads(text_value)
    except ValueError:
        return text_value


def document_differences(
    kind: str, subject: str, where: str, old_text: str, new_text: str
) -> list[Difference]:
    if old_text == new_text:
        return []
    old, new = _json(old_text), _json(new_text)
    found = [
        Difference(kind, subject, path, old_value, new_value)
        for path, old_value, new_value in json_differences(old, new, where)
    ]
    if not found:  # same JSON, other text: the stored text was rewritten
        found.append(
            Difference(kind, subject, where, message="stored JSON text differs in form only")
        )
    return found
