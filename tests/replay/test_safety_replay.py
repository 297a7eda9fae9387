"""Evidence stored before the safety flags (rules schema 1) is re-derived by replay.

docs/auditing.md: the rules version names the schema; docs/coding-rules.md §8: the
flags `reservoir_depleted` and `refill_overdue`.
"""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from db.codec import dumps, loads
from db.migrate import open_database
from db.models import evidence, evidence_flags
from db.queries import flags_text
from evidence import load_rules
from fixtures.binary_writer import encode_binary
from fixtures.scenarios import troubled_pump
from pumptrail.cli import main

SAFETY = ("reservoir_depleted", "refill_overdue")
OLD_VERSION = "evidence-rules/1+3a5219457c31"


def test_evidence_without_safety_flags_is_reported_and_rewritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    exports = troubled_pump(
        random.Random(9), start=datetime(2025, 11, 12, 10, 15), serial="ITP20-1"
    )
    for n, export in enumerate(e for e in exports if e.fmt == "psl-binary"):
        (inbox / f"v{n}.psl").write_bytes(encode_binary(export.scenario))
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["import", str(inbox), *data]) == 0
    url = f"sqlite:///{tmp_path / 'data' / 'pumptrail.db'}"

    # Make the stored evidence what rules schema 1 derived: no safety flags.
    engine = open_database(url)
    try:
        with engine.begin() as connection:
            rows = list(connection.execute(select(evidence.c.session_pk, evidence.c.document)))
            for pk, text in rows:
                document = loads(text)
                document["flags"] = [f for f in document["flags"] if f not in SAFETY]
                document["rules_version"] = OLD_VERSION
                connection.execute(
                    update(evidence)
                    .where(evidence.c.session_pk == pk)
                    .values(
                        document=dumps(document),
                        rules_version=OLD_VERSION,
                        flags=flags_text(document["flags"]),
                    )
                )
            connection.execute(delete(evidence_flags).where(evidence_flags.c.flag.in_(SAFETY)))
    finally:
        engine.dispose()
    capsys.readouterr()

    assert main(["replay", *data]) == 1
    report = capsys.readouterr().out
    assert OLD_VERSION in report
    assert "reservoir_depleted" in report and "refill_overdue" in report

    assert main(["replay", "--apply", *data]) == 0
    capsys.readouterr()
    assert main(["replay", *data]) == 0
    engine = open_database(url)
    try:
        with engine.connect() as connection:
            stored = set(connection.execute(select(evidence_flags.c.flag)).scalars())
            versions = set(connection.execute(select(evidence.c.rules_version)).scalars())
    finally:
        engine.dispose()
    assert set(SAFETY) <= stored
    assert versions == {load_rules().version}
