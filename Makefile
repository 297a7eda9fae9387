# pumptrail: every target creates or reuses the local virtualenv itself, so a
# fresh machine needs only Python 3.11 and make.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all venv demo test lint typecheck pytest bench lock fixtures clean

all: test

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

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

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

## make bench: every benchmark in bench/, each against its same-run baseline
bench: $(STAMP)
	$(BIN)/python -m bench

## make fixtures: rebuild the golden corpus and show what changed
fixtures: $(STAMP)
	$(BIN)/python -m fixtures.build --write
	git --no-pager diff --stat -- fixtures

## make lock: re-resolve pinned dependencies after editing pyproject.toml
lock:
	$(PYTHON) -m venv /tmp/pumptrail-piptools
	/tmp/pumptrail-piptools/bin/pip install --quiet pip-tools==7.6.2
	/tmp/pumptrail-piptools/bin/pip-compile --quiet --extra dev --strip-extras --generate-hashes --allow-unsafe --no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
