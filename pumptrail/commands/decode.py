"""`pumptrail decode FILE...`: print the normalized session JSON (session-json.md).

One document for one file, a JSON array for several, indented by two spaces,
non-ASCII characters as they are (UTF-8), the same bytes as the golden files
`fixtures/*/*.expected.json`; written with orjson, a C encoder. A file that
cannot be decoded prints one line to standard error, `FILE: offset 0x1A4: what
was wrong` or `FILE: line 17: what was wrong`, and the command exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pumptrail.commands import set_handler
from pumptrail.errors import EXIT_UNUSABLE


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

    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()


def run(args: argparse.Namespace) -> int:
    from parsers.errors import DecodeError
    from parsers.registry import decode_file
    from parsers.session_json import session_document

    documents: list[dict[str, Any]] = []
    status = 0
    for path in args.files:
        try:
            documents.append(session_document(decode_file(path, strict=args.strict)))
        except DecodeError as exc:
            print(str(exc), file=sys.stderr)
            status = EXIT_UNUSABLE
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
            status = EXIT_UNUSABLE
    if status:
        return status
    output: object = documents[0] if len(args.files) == 1 else documents
    sys.stdout.write(dumps(output))
    sys.stdout.write("\n")
    return 0
