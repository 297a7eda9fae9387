"""`pumptrail import PATH...`: store export files and folders, derive their evidence.

Folders are walked recursively, every regular file in sorted order whatever its
extension (docs/coding-rules.md §7.16). Each file is one transaction: a broken file is
reported with its error and the others are still imported. Files go in groups with
group commit (`Importer.import_many`): a group's raw bytes are flushed to disk
before its transactions, and its transactions are made durable together before its
lines are printed. One line per file
(`imported`, `duplicate`, `refused` with the reason), then the summary
`N files: a imported, b duplicate, c refused`. Exit status 1 when any file was
refused, 2 when the database or settings cannot be used, else 0.

On a terminal (standard error a TTY, not under systemd) a progress bar on
standard error shows files done, rate and time left (`pumptrail.progress`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pumptrail.commands import set_handler
from pumptrail.commands.db import (
    add_database_arguments,
    load_clinic_rules,
    open_from_settings,
    resolve,
)

SETTINGS = ("rules_dir", "db", "data_dir", "raw_store", "raw_store_mode")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "import", help="import export files and folders into the database"
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="file or folder")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print only refused files and the summary"
    )
    add_database_arguments(parser, SETTINGS)
    set_handler(parser, run)


def run(args: argparse.Namespace) -> int:
    from db.audit import cli_actor
    from ingest.pipeline import GROUP_FILES, Importer, ImportSummary, expand_paths, summary_counts
    from ingest.rawstore import open_raw_store
    from pumptrail.progress import Progress, wanted

    resolved = resolve(args)
    rules = load_clinic_rules(resolved)
    engine = open_from_settings(resolved)
    try:
        store = open_raw_store(engine, resolved.raw_store, resolved.raw_store_mode)
        importer = Importer(engine, store, rules, actor=cli_actor())
        summary = ImportSummary()
        show = wanted()
        # The bar needs the number of files up front: walk the folders first.
        paths = list(expand_paths(args.paths)) if show else args.paths
        with Progress(len(paths), unit="files", show=show) as progress:
            for result in importer.import_paths(paths, group=GROUP_FILES):
                summary.results.append(result)
                if not args.quiet or result.outcome in ("refused", "failed"):
                    progress.write(f"{result.outcome:<9} {result.detail}")
                progress.advance()
    finally:
        engine.dispose()
    print(summary_counts(summary))
    return 0 if summary.ok else 1
