"""Timestamps and dates on the wire (docs/formats.md §1).

A timestamp is u32 seconds since 2000-01-01T00:00:00 programmer-local time,
0xFFFFFFFF meaning "not applicable"; a date is u16 days since 1900-01-01,
0xFFFF meaning "not set". The CSV export must stay within the same ranges
(docs/format-psl-csv.md §5.4), so both decoders check their instants here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Final

PSL_EPOCH: Final = datetime(2000, 1, 1)
DATE_EPOCH: Final = date(1900, 1, 1)
TIMESTAMP_NOT_APPLICABLE: Final = 0xFFFFFFFF
DATE_NOT_SET: Final = 0xFFFF
LAST_TIMESTAMP: Final = PSL_EPOCH + timedelta(seconds=TIMESTAMP_NOT_APPLICABLE - 1)
LAST_DATE: Final = DATE_EPOCH + timedelta(days=DATE_NOT_SET - 1)


# Seconds from 1970-01-01 to 2000-01-01: the PSL epoch on the POSIX time scale.
EPOCH_POSIX: Final = 946_684_800

if sys.version_info < (3, 12):
    # Four times faster than epoch + timedelta, and decoding makes one per record.
    # Naive in, naive out: the value is programmer-local wall-clock time, not UTC.
    naive_from_posix: Callable[[int], datetime] = datetime.utcfromtimestamp
else:  # pragma: no cover - utcfromtimestamp is deprecated from 3.12

    def naive_from_posix(seconds: int) -> datetime:
        return PSL_EPOCH + timedelta(0, seconds - EPOCH_POSIX)


def local_from_timestamp(seconds: int) -> datetime | None:
    if seconds == TIMESTAMP_NOT_APPLICABLE:
        return None
    return naive_from_posix(seconds + EPOCH_POSIX)


def timestamp_from_local(local: datetime | None) -> int:
    if local is None:
        return TIMESTAMP_NOT_APPLICABLE
    return int((local - PSL_EPOCH).total_seconds())


def date_from_days(days: int) -> date | None:
    if days == DATE_NOT_SET:
        return None
    return DATE_EPOCH + timedelta(days=days)


def days_from_date(value: date | None) -> int:
    if value is None:
        return DATE_NOT_SET
    return (value - DATE_EPOCH).days


def timestamp_in_range(local: datetime) -> bool:
    """Whether a local instant can be written as a binary timestamp."""
    return PSL_EPOCH <= local <= LAST_TIMESTAMP


def date_in_range(value: date) -> bool:
    """Whether a date can be written as a binary date."""
    return DATE_EPOCH <= value <= LAST_DATE
