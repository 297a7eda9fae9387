"""Alembic migrations of the pumptrail database, run from code by `db.migrate`."""
