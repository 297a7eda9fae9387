"""The web room's read-only queries, one module per job; this package re-exports them.

- `web.queries.listing`: the session list (filters, query plan, keyset pages,
  bounded counts; its tuning constants such as `SCAN_WINDOW` live there);
- `web.queries.cursor`: the list's page cursors;
- `web.queries.session`: one stored session, its raw files and event positions;
- `web.queries.timeline`: a pump's timeline;
- `web.queries.imports`: the imports page's counts and latest files.

The per-profile code index these queries read (`evidence_codes`) is written by
`db.code_index`. Patient identifiers are filter values here and nothing else:
never logged.
"""

from web.queries.cursor import BadCursor, Cursor
from web.queries.imports import import_counts, recent_imports
from web.queries.listing import (
    COUNT_CAP,
    DEFAULT_PAGE_SIZE,
    PAGE_SIZES,
    SORTS,
    ListRow,
    Page,
    SessionFilter,
    Sort,
    bare_list_query,
    list_sessions,
)
from web.queries.session import (
    EventPosition,
    RawFile,
    SessionRecord,
    event_positions,
    raw_file,
    raw_files_of,
    session_record,
)
from web.queries.timeline import PumpInfo, TimelineEntry, pump_timeline

__all__ = [
    "COUNT_CAP",
    "DEFAULT_PAGE_SIZE",
    "PAGE_SIZES",
    "SORTS",
    "BadCursor",
    "Cursor",
    "EventPosition",
    "ListRow",
    "Page",
    "PumpInfo",
    "RawFile",
    "SessionFilter",
    "SessionRecord",
    "Sort",
    "TimelineEntry",
    "bare_list_query",
    "event_positions",
    "import_counts",
    "list_sessions",
    "pump_timeline",
    "raw_file",
    "raw_files_of",
    "recent_imports",
    "session_record",
]
