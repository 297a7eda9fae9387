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

`--jobs N` (default: the cores this process may use) decodes the files and builds
their rows in N worker processes while this process alone writes to the database,
a group of files per transaction (`ingest.parallel`); what is stored and printed
is what `--jobs 1` (every file in this process, one transaction each) stores and
prints. Workers start only when there is more than one group of files.

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
# More workers than this gains nothing on any machine a clinic runs (one writer).
MAX_JOBS = 64


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "import", help="import export files and folders into the database"
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="file or folder")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print only refused files and the summary"
    )
    parser.add_argument(
        "-j",
        "--jobs",
        type=_jobs,
        default=None,
        metavar="N",
        help="worker processes decoding files (default: the number of cores; 1: no workers)",
    )
    add_database_arguments(parser, SETTINGS)
    set_handler(parser, run)


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of jobs, found {text!r}"
        ) from None
    if not 1 <= value <= MAX_JOBS:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_JOBS} jobs, found {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from db.audit import cli_actor
    from ingest.parallel import ParallelImporter, default_jobs
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
        jobs = default_jobs() if args.jobs is None else args.jobs
        results = (
            importer.import_paths(paths, group=GROUP_FILES)
            if jobs == 1
            else ParallelImporter(importer, jobs).import_paths(paths)
        )
        with Progress(len(paths), unit="files", show=show) as progress:
            for result in results:
                summary.results.append(result)
                if not args.quiet or result.outcome in ("refused", "failed"):
                    progress.write(f"{result.outcome:<9} {result.detail}")
                progress.advance()
    finally:
        engine.dispose()
    print(summary_counts(summary))
    return 0 if summary.ok else 1
