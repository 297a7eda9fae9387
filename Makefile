# pumptrail: every target creates or reuses the local virtualenv itself, so a
# fresh machine needs only Python 3.11 and make.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Two locks, both pinned with hashes (`make lock` writes them from pyproject.toml):
# requirements.lock is what runs at a clinic (no test tools), requirements-dev.lock
# adds the dev extra (pytest, ruff, mypy, pip-audit, ...).
RUNTIME_LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
RUNTIME_STAMP := $(VENV)/.installed-runtime

.PHONY: all venv venv-runtime demo test lint typecheck pytest audit bench lock fixtures clean

all: test

## make venv: the development virtualenv (runtime and dev locks, pumptrail editable)
venv: $(STAMP)

$(STAMP): $(DEV_LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

## make venv-runtime: what a clinic's service runs, from the runtime lock only
## (docs/operations.md, "Install as a service"); no test tools are installed.
venv-runtime: $(RUNTIME_STAMP)

$(RUNTIME_STAMP): $(RUNTIME_LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(RUNTIME_LOCK)
	# Built in pip's own build environment (pyproject.toml's build-system): the
	# build tools do not stay in the virtualenv.
	$(BIN)/python -m pip install --quiet --no-deps .
	touch $(RUNTIME_STAMP)

## make demo: the main job on the embedded default (SQLite, demo inbox, web view)
demo: $(STAMP)
	$(BIN)/pumptrail demo

## make test: lint, type-check, then the whole test suite
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy pumptrail ingest parsers db evidence web fixtures

# The official FHIR R4 schema and validator the FHIR tests check bundles against
# (npm packages pinned by tests/fhir/package-lock.json).
FHIR_PACKAGES := tests/fhir/node_modules/.package-lock.json

$(FHIR_PACKAGES): tests/fhir/package.json tests/fhir/package-lock.json
	cd tests/fhir && npm ci --no-audit --no-fund --ignore-scripts

pytest: $(STAMP) $(FHIR_PACKAGES)
	$(BIN)/pytest $(PYTEST_ARGS)

## make audit: known vulnerabilities in the runtime lock (pip-audit, PyPI's advisory
## data); exit 1 on a known vulnerability or a partial lookup, 2 when no advisory
## service answers (not audited, never a pass)
audit: $(STAMP)
	.ci/audit-deps $(BIN)/pip-audit $(RUNTIME_LOCK)

## make bench: every benchmark in bench/, each against its same-run baseline
bench: $(STAMP)
	$(BIN)/python -m bench

## make fixtures: rebuild the golden corpus and show what changed
fixtures: $(STAMP)
	$(BIN)/python -m fixtures.build --write
	git --no-pager diff --stat -- fixtures

## make lock: re-resolve both locks after editing pyproject.toml (pins already in a
## lock are kept unless pyproject.toml needs another version)
LOCK_VENV ?= /tmp/pumptrail-piptools
PIP_COMPILE := $(LOCK_VENV)/bin/pip-compile --quiet --strip-extras --generate-hashes --allow-unsafe --no-emit-index-url --no-emit-find-links
lock:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet pip-tools==7.6.2
	$(PIP_COMPILE) -o $(RUNTIME_LOCK) pyproject.toml
	$(PIP_COMPILE) --extra dev -o $(DEV_LOCK) pyproject.toml

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
