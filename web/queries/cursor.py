"""Page cursors of the session list: where a keyset page starts (`web.queries.listing`).

A cursor is the chain key (session start UTC, session ID, pump serial) of the
row next to the page and the direction, as URL-safe base64 of a small JSON
array; `Cursor.decode` refuses anything this list did not issue (`BadCursor`).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from parsers.errors import PumptrailError


class BadCursor(PumptrailError, ValueError):
    """Raised by `Cursor.decode` for text that is not a page cursor this list issued.

    The sessions page then shows the first page with a note; the API answers 400.
    """


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page starts: the chain key of the row next to it, and the direction."""

    start_utc: datetime
    session_id: str
    serial: str
    # "after": the rows following this key in list order; "before": preceding it.
    direction: Literal["after", "before"]
    # Beyond the whole instant `start_utc` (a scan window ended there).
    edge: bool = False

    def encode(self) -> str:
        direction = self.direction[0] + ("e" if self.edge else "")
        raw = json.dumps(
            [direction, self.start_utc.isoformat(), self.session_id, self.serial],
            separators=(",", ":"),
        ).encode("utf-8")
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    @staticmethod
    def decode(text: str) -> Cursor:
        try:
            padded = text + "=" * (-len(text) % 4)
            raw = base64.urlsafe_b64decode(padded.encode("ascii"))
            direction, start, session_id, serial = json.loads(raw.decode("utf-8"))
            if direction not in ("a", "b", "ae", "be") or not isinstance(session_id, str):
                raise BadCursor("not a page cursor")
            if not isinstance(serial, str) or not isinstance(start, str):
                raise BadCursor("not a page cursor")
            return Cursor(
                datetime.fromisoformat(start),
                session_id,
                serial,
                "after" if direction[0] == "a" else "before",
                edge=direction.endswith("e"),
            )
        except (ValueError, TypeError, UnicodeError, binascii.Error) as exc:
            raise BadCursor("not a page cursor") from exc
