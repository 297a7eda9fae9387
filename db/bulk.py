"""Many-row INSERTs at the driver: a session's events and settings in one executemany.

An import writes about a hundred `events` and `setting_values` rows per session.
SQLAlchemy Core's executemany builds a parameter dictionary per row and runs each
value through its type's bind processor; for rows this small that bookkeeping
costs more than SQLite's own work. `RowInserter` compiles the table's INSERT once
per dialect, with SQLAlchemy, keeps the bind processors SQLAlchemy would apply,
and sends plain tuples (or dictionaries, for a named paramstyle) to the driver.
What lands in the database is what Core's `insert()` would have written; a test
holds the two paths to the same rows on both backends.

One processor is replaced: SQLAlchemy's SQLite `DateTime` formatting, as
`datetime.isoformat(" ", "microseconds")`, which writes the same text (the
`YYYY-MM-DD HH:MM:SS.ffffff` storage format) for the naive datetimes pumptrail
stores, in C.

On PostgreSQL the rows go by `COPY ... FROM STDIN` on the same connection and
transaction (psycopg's `Cursor.copy`, each value adapted by its Python type):
psycopg's executemany sends one INSERT per row, which the server executes one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Table, insert
from sqlalchemy.engine import Connection, Dialect

Processor = Callable[[Any], Any]


def _sqlite_datetime(value: datetime | None) -> str | None:
    """SQLAlchemy's SQLite DateTime storage text for a naive datetime."""
    if value is None:
        return None
    if value.tzinfo is not None:
        raise ValueError("stored datetimes are naive UTC or programmer-local")
    return value.isoformat(" ", "microseconds")


class RowInserter:
    """INSERT many rows of one table, all with the same keys, through the driver."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self._plans: dict[tuple[str, tuple[str, ...]], Plan] = {}

    def plan(self, dialect: Dialect, keys: tuple[str, ...]) -> Plan:
        """The compiled INSERT and processors for rows with these keys on this dialect."""
        plan = self._plans.get((dialect.name, keys))
        if plan is None:
            plan = self._plans[(dialect.name, keys)] = Plan(self.table, keys, dialect)
        return plan

    def insert(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        plan = self.plan(connection.dialect, tuple(rows[0]))
        self.insert_parameters(connection, plan, plan.parameters(rows))

    @staticmethod
    def insert_parameters(connection: Connection, plan: Plan, parameters: Sequence[Any]) -> None:
        """Rows already through `plan.parameters` (by a parallel import's worker, say)."""
        if not parameters:
            return
        if plan.copy_sql is not None:
            cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            with cursor, cursor.copy(plan.copy_sql) as copy:
                for values in parameters:
                    copy.write_row(values)
            return
        connection.exec_driver_sql(plan.sql, list(parameters))


class Plan:
    """The compiled statement and the per-column processors for one dialect and key set."""

    def __init__(self, table: Table, keys: tuple[str, ...], dialect: Dialect) -> None:
        unknown = [key for key in keys if key not in table.c]
        if unknown:
            raise ValueError(f"{table.name}: rows hold keys that are not columns: {unknown}")
        compiled = insert(table).compile(dialect=dialect, column_keys=list(keys))
        self.sql = compiled.string
        self.copy_sql: str | None = None
        self.positional = compiled.positional
        # Bind names in the order the statement takes them (positional paramstyles).
        order = list(compiled.positiontup or ()) if compiled.positional else list(keys)
        if dialect.name == "postgresql" and dialect.driver == "psycopg":
            preparer = dialect.identifier_preparer
            columns = ", ".join(preparer.quote(name) for name in keys)
            self.copy_sql = f"COPY {preparer.format_table(table)} ({columns}) FROM STDIN"
            self.positional = True
            order = list(keys)
        self.order = [name for name in order if name in keys]
        if set(self.order) != set(keys):
            raise ValueError(f"{table.name}: INSERT takes {self.order}, rows hold {list(keys)}")
        self.processors: list[tuple[str, Processor | None]] = [
            (name, _processor(table.c[name].type, dialect)) for name in self.order
        ]

    def position(self, key: str) -> int:
        """Where `key` sits in a positional parameter tuple of this plan."""
        if not self.positional:
            raise ValueError(f"{self.sql}: named parameters have no positions")
        return self.order.index(key)

    def parameters(self, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        processors = self.processors
        if self.positional:
            return [
                tuple(row[name] if p is None else p(row[name]) for name, p in processors)
                for row in rows
            ]
        return [
            {name: row[name] if p is None else p(row[name]) for name, p in processors}
            for row in rows
        ]


def _processor(column_type: Any, dialect: Dialect) -> Processor | None:
    if dialect.name == "sqlite" and isinstance(column_type, DateTime):
        return _sqlite_datetime
    processor: Processor | None = column_type.dialect_impl(dialect).bind_processor(dialect)
    return processor
