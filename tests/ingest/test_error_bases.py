"""Every error the project raises on purpose derives from `PumptrailError`, and says when."""

from __future__ import annotations

import pytest

from db.codec import StoredDocumentError
from db.engine import DatabaseUrlError
from db.migrate import SchemaError
from evidence.rules import RulesError
from ingest.rawstore import RawStoreError
from ingest.replay.fixtures import CaseError
from ingest.serial_receiver import SerialPortError, SerialReceiverError, TransferFailed
from parsers.errors import PumptrailError

ERRORS = [
    RawStoreError,
    SerialReceiverError,
    SerialPortError,
    TransferFailed,
    CaseError,
    StoredDocumentError,
    DatabaseUrlError,
    SchemaError,
    RulesError,
]


@pytest.mark.parametrize("error", ERRORS, ids=[e.__name__ for e in ERRORS])
def test_error_derives_from_the_root_and_says_when_it_is_raised(error: type[Exception]) -> None:
    assert issubclass(error, PumptrailError)
    assert (error.__doc__ or "").startswith(("Raised ", "Base of"))


@pytest.mark.parametrize("error", [StoredDocumentError, DatabaseUrlError, RulesError])
def test_errors_callers_catch_as_value_errors_still_are(error: type[Exception]) -> None:
    assert issubclass(error, ValueError)
