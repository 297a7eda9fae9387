"""Property tests: generated sessions round-trip through the builder and both decoders.

A scenario written as binary and as CSV (any locale, delimiter, encoding, line
ending, padding) decodes to the session the scenario describes, and the two exports
print the same document but for source_format, format_version and warnings
(docs/format-psl-csv.md preamble, docs/session-json.md).
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.binary_writer import encode_binary
from fixtures.csv_writer import encode_csv
from fixtures.scenarios import realistic_scenario
from parsers.records import ParamChangeRec, SnapshotRec
from parsers.registry import decode_bytes
from parsers.session_json import comparable_document, session_document

dialects = st.fixed_dictionaries(
    {
        "locale": st.sampled_from(["ISO", "en-US", "de-DE"]),
        "delimiter": st.sampled_from([",", ";"]),
        "encoding": st.sampled_from(["utf-8", "utf-8-sig", "utf-16-le-bom"]),
        "sep_hint": st.booleans(),
        "line_ending": st.sampled_from(["\r\n", "\n"]),
        "trailing_sub": st.integers(min_value=0, max_value=200),
    }
)

PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(seed=st.integers(min_value=0, max_value=2**32 - 1), dialect=dialects)
def test_binary_and_csv_exports_decode_to_the_same_session(
    seed: int, dialect: dict[str, object]
) -> None:
    scenario = realistic_scenario(random.Random(seed))
    from_binary = decode_bytes(encode_binary(scenario), source="gen.psl")
    from_csv = decode_bytes(encode_csv(scenario, **dialect), source="gen.csv")  # type: ignore[arg-type]
    assert from_binary.source_format == "psl-binary"
    assert from_csv.source_format == "psl-csv"
    assert comparable_document(session_document(from_binary)) == comparable_document(
        session_document(from_csv)
    )


@PROPERTY_SETTINGS
@given(seed=st.integers(min_value=0, max_value=2**32 - 1), padding=st.integers(0, 1023))
def test_decoded_session_is_the_scenario(seed: int, padding: int) -> None:
    scenario = realistic_scenario(random.Random(seed))
    session = decode_bytes(encode_binary(scenario, padding=padding), source="gen.psl")
    snapshots = [r for r in scenario.records if isinstance(r, SnapshotRec)]
    phase0 = {e.name: e.value for e in snapshots[0].entries}
    assert dict(session.interrogated) == phase0
    if len(snapshots) == 2:
        assert session.programmed is not None
        assert dict(session.programmed) == {e.name: e.value for e in snapshots[1].entries}
    else:
        assert session.programmed is None
    changes = [r for r in scenario.records if isinstance(r, ParamChangeRec)]
    decoded_changes = [e for e in session.events if e.type == "change"]
    assert [(c.entry_old.name, c.entry_old.value, c.new, c.reason) for c in changes] == [
        (e.parameter, e.old, e.new, e.reason) for e in decoded_changes
    ]
    assert session.session_id == scenario.header.session_id
    assert session.pump.serial == scenario.header.pump_serial
    # The generator keeps §4 consistency, so a faithful decode raises no warning.
    assert session.warnings == ()
