# Two commands set a fresh machine up: `make run` (the pipeline) and `make test` (the suite).
# Installs happen once: a stamp file per extra records what was installed from which setup.cfg.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= etc/hedgepipe.toml

.PHONY: run test bench down status install install-test clean help

help:
	@echo "make run    - install (once) and start the whole pipeline under supervisord"
	@echo "make test   - install test dependencies (once) and run the test suite"
	@echo "make bench  - throughput and latency benchmarks (prints a report)"
	@echo "make status - each daemon's state and last heartbeat"
	@echo "make down   - stop the pipeline"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "hedgepipe needs Python >= 3.11; set PYTHON=")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(BIN)/hedgepipe --config $(CONFIG) up

status: install
	$(BIN)/hedgepipe --config $(CONFIG) status

down: install
	$(BIN)/hedgepipe --config $(CONFIG) down

test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var build *.egg-info
