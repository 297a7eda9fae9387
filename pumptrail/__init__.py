"""pumptrail: the composition root (settings, the CLI, the service entry).

The only package that imports every room: ingest, parsers, db, evidence, web.
"""

__version__ = "0.1.0"
