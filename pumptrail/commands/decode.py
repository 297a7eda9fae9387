"""`pumptrail decode FILE...`: print the normalized session JSON (docs/session-json.md).

One document for one file, a JSON array for several, indented by two spaces,
non-ASCII characters as they are (UTF-8): the same bytes as the golden files
`fixtures/*/*.expected.json`. A file that cannot be decoded prints one line to
standard error, `FILE: offset 0x1A4: what was wrong` or `FILE: line 17: what was
wrong`, and the command exits 2 (then nothing is printed on standard output).

Each document is encoded by orjson, a C encoder. Many files (`PARALLEL_MIN_FILES`
or more, on Linux with more than one CPU) are decoded by worker processes, one per
CPU; the output and the order of the error lines are those of one process.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pumptrail.commands import set_handler
from pumptrail.errors import EXIT_UNUSABLE

PARALLEL_MIN_FILES = 64
MAX_WORKERS = 8
INDENT = "  "


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "decode", help="print the normalized session JSON of export files"
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument(
        "--strict", action="store_true", help="treat every decoder warning as an error"
    )
    set_handler(parser, run)


def dumps(document: object) -> str:
    """`json.dumps(document, indent=2, ensure_ascii=False)`, by a C encoder."""
    import orjson

    text: str = orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()
    return text


def decode_one(item: tuple[Path, bool]) -> tuple[str | None, str | None]:
    """One file's document as indented JSON, or the line saying why it cannot be decoded."""
    from parsers.errors import DecodeError
    from parsers.registry import decode_file
    from parsers.session_json import session_document

    path, strict = item
    try:
        return dumps(session_document(decode_file(path, strict=strict))), None
    except DecodeError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"{path}: cannot read: {exc.strerror}"


def _workers(files: int) -> int:
    if files < PARALLEL_MIN_FILES or not sys.platform.startswith("linux"):
        return 1
    return min(len(os.sched_getaffinity(0)), MAX_WORKERS)


def decoded(paths: Sequence[Path], *, strict: bool) -> Iterator[tuple[str | None, str | None]]:
    """`decode_one` of every file, in order; in worker processes when there are many."""
    items = [(path, strict) for path in paths]
    workers = _workers(len(items))
    if workers <= 1:
        yield from map(decode_one, items)
        return
    import multiprocessing

    # fork: the workers start with the decoders already imported.
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        chunk = max(1, len(items) // (workers * 8))
        yield from pool.imap(decode_one, items, chunksize=chunk)


def run(args: argparse.Namespace) -> int:
    # Imported before the workers are forked, so that each has them already.
    import parsers.registry
    import parsers.session_json  # noqa: F401

    texts: list[str] = []
    status = 0
    for text, error in decoded(args.files, strict=args.strict):
        if error is not None:
            print(error, file=sys.stderr)
            status = EXIT_UNUSABLE
        elif text is not None:
            texts.append(text)
    if status:
        return status
    if len(args.files) == 1:
        sys.stdout.write(texts[0])
    else:
        # The array of json.dumps(indent=2): each document one level deeper. JSON
        # strings hold no raw line breaks, so every line of a document is indented.
        sys.stdout.write("[\n")
        sys.stdout.write(",\n".join(INDENT + t.replace("\n", "\n" + INDENT) for t in texts))
        sys.stdout.write("\n]")
    sys.stdout.write("\n")
    return 0
