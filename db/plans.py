"""How a query reads each table, from the database's own plan (SQLite and PostgreSQL).

`table_reads` runs `EXPLAIN QUERY PLAN` (SQLite) or `EXPLAIN (FORMAT JSON)`
(PostgreSQL) on a statement exactly as the driver received it (its SQL text and
bound parameters, e.g. captured with SQLAlchemy's `before_cursor_execute` event)
and names, for every table the plan reads, the kind of read:

- `search`: through an index with a condition (SQLite `SEARCH`, PostgreSQL an
  index scan with an `Index Cond`, or a bitmap heap scan): rows near the key only;
- `walk`: a whole index in its order with no condition on it (SQLite `SCAN t
  USING INDEX`, PostgreSQL an index scan without `Index Cond`): stops early only
  under a LIMIT, otherwise reads every entry;
- `scan`: every row of the table (SQLite `SCAN t`, or an automatic index SQLite
  builds by reading the table; PostgreSQL `Seq Scan`).

The benchmark (`bench/bench_web.py`) prints these for every list filter on a large
database; `tests/web/test_list_plans.py` asserts them on a small one
(`unbounded_scan`: a scan no LIMIT ends soon). Nothing here changes the database:
EXPLAIN without ANALYZE runs no statement.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from sqlalchemy.engine import Connection

ReadKind = Literal["search", "walk", "scan"]

# A LIMIT ends a row-by-row read soon when the planner expects at least this share
# of the rows to pass its filter (about a hundred rows read per row wanted).
SOON: Final = 0.01

_SQLITE_READ: Final = re.compile(
    r"^(?P<verb>SCAN|SEARCH) (?P<table>\S+)(?: AS \S+)?(?P<rest>.*)$", re.DOTALL
)
_SQLITE_INDEX: Final = re.compile(r"USING (?:COVERING )?INDEX (?P<index>\S+)")


@dataclass(frozen=True, slots=True)
class TableRead:
    """One read of one table in a plan."""

    table: str
    kind: ReadKind
    # The index read (None for a table scan; "pk" for SQLite's rowid).
    index: str | None = None
    # PostgreSQL: rows are also filtered after the read (a `Filter` on the node).
    filtered: bool = False
    # PostgreSQL: a LIMIT node above the read (it may stop early).
    limited: bool = False
    # PostgreSQL: the rows the planner expects the read to return (all of them,
    # LIMIT aside): with the table's size, how soon a LIMIT may stop it.
    estimated_rows: float | None = None

    def describe(self) -> str:
        text = f"{self.kind} {self.table}"
        if self.index:
            text += f" ({self.index})"
        if self.limited and self.kind != "search":
            text += " under LIMIT"
        return text


def table_reads(
    connection: Connection, statement: str, parameters: Sequence[Any] | Mapping[str, Any] | None
) -> list[TableRead]:
    """Every table read in the plan of `statement` (driver SQL and parameters)."""
    dialect = connection.dialect.name
    if dialect == "sqlite":
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", _args(parameters))
        return sqlite_reads(str(row[3]) for row in rows)
    if dialect == "postgresql":
        raw = connection.exec_driver_sql(
            f"EXPLAIN (FORMAT JSON) {statement}", _args(parameters)
        ).scalar_one()
        document = json.loads(raw) if isinstance(raw, str) else raw
        return postgresql_reads(document[0]["Plan"])
    raise ValueError(f"no plan reader for {dialect}")


def unbounded_scan(read: TableRead, table_rows: float | None) -> bool:
    """Whether `read` goes through its table row by row with nothing to end it soon.

    A scan is bounded only under a LIMIT, and then only when unfiltered or when
    the planner expects at least `SOON` of the `table_rows` to pass the filter
    (PostgreSQL's estimate; SQLite gives none, so its filtered scans count).
    """
    if read.kind != "scan":
        return False
    if not read.limited:
        return True
    if not read.filtered:
        return False
    return read.estimated_rows is None or not table_rows or read.estimated_rows < SOON * table_rows


def table_rows(connection: Connection, table: str) -> float | None:
    """PostgreSQL's estimate of a table's rows (`pg_class.reltuples`); None on SQLite."""
    if connection.dialect.name != "postgresql":
        return None
    value = connection.exec_driver_sql(
        "SELECT reltuples FROM pg_class WHERE oid = to_regclass(%(table)s)", {"table": table}
    ).scalar()
    return None if value is None else float(value)


def _args(parameters: Sequence[Any] | Mapping[str, Any] | None) -> Any:
    if parameters is None:
        return ()
    if isinstance(parameters, Mapping):
        return dict(parameters)
    return tuple(parameters)


def sqlite_reads(details: Iterable[str]) -> list[TableRead]:
    """Table reads from the `detail` column of SQLite's EXPLAIN QUERY PLAN."""
    reads = []
    for detail in details:
        found = _SQLITE_READ.match(detail)
        if found is None or found["table"] in ("CONSTANT", "SUBQUERY"):
            continue
        table, rest = found["table"], found["rest"]
        if "AUTOMATIC" in rest:
            # SQLite reads the whole table to build a temporary index first.
            reads.append(TableRead(table, "scan", "automatic"))
        elif "INTEGER PRIMARY KEY" in rest:
            kind: ReadKind = "search" if found["verb"] == "SEARCH" else "walk"
            reads.append(TableRead(table, kind, "pk"))
        elif (index := _SQLITE_INDEX.search(rest)) is not None:
            kind = "search" if found["verb"] == "SEARCH" else "walk"
            reads.append(TableRead(table, kind, index["index"]))
        elif found["verb"] == "SCAN" and not rest.strip():
            reads.append(TableRead(table, "scan"))
    return reads


def postgresql_reads(plan: Mapping[str, Any], *, limited: bool = False) -> list[TableRead]:
    """Table reads from one node of PostgreSQL's JSON plan and the nodes below it."""
    reads = []
    node = str(plan.get("Node Type", ""))
    table = plan.get("Relation Name")
    filtered = "Filter" in plan
    rows = plan.get("Plan Rows")
    estimate = None if rows is None else float(rows)
    if table is not None:
        if node == "Seq Scan":
            reads.append(TableRead(str(table), "scan", None, filtered, limited, estimate))
        elif node in ("Index Scan", "Index Only Scan"):
            kind: ReadKind = "search" if "Index Cond" in plan else "walk"
            index = plan.get("Index Name")
            reads.append(TableRead(str(table), kind, index, filtered, limited, estimate))
        elif node == "Bitmap Heap Scan":
            names = ",".join(sorted(_bitmap_indexes(plan))) or None
            reads.append(TableRead(str(table), "search", names, filtered, limited, estimate))
    # A node that reads all its input before returning a row (a sort, a hash, an
    # aggregate other than a sorted one) stops a LIMIT above it from ending the reads below.
    blocking = node in ("Sort", "Hash") or (
        node in ("Aggregate", "SetOp") and plan.get("Strategy") != "Sorted"
    )
    below_limit = (limited or node == "Limit") and not blocking
    for child in plan.get("Plans", ()):
        if node == "Bitmap Heap Scan" and child.get("Node Type") in (
            "Bitmap Index Scan",
            "BitmapOr",
            "BitmapAnd",
        ):
            continue
        # A subplan runs once per outer row or once in all: a LIMIT above its
        # parent does not bound it.
        inner_limit = below_limit and child.get("Parent Relationship") not in (
            "SubPlan",
            "InitPlan",
        )
        reads += postgresql_reads(child, limited=inner_limit)
    return reads


def _bitmap_indexes(plan: Mapping[str, Any]) -> set[str]:
    names = set()
    for child in plan.get("Plans", ()):
        if "Index Name" in child:
            names.add(str(child["Index Name"]))
        names |= _bitmap_indexes(child)
    return names
