# Two commands set a fresh machine up: `make run` (the pipeline) and `make test` (the suite).
# Installs happen once: a stamp file per extra records what was installed from which setup.cfg.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= etc/hedgepipe.toml

.PHONY: run test bench down status install install-test clean help

help:
	@echo "make run    - install (once) and start the whole pipeline under supervisord"
	@echo "              (CHAIN=FILE: the simulator animates a real option chain)"
	@echo "make test   - install test dependencies (once) and run the test suite"
	@echo "make bench  - runtime hops vs raw pyzmq, feed decode/memory, etl-filter, store-writer, strategy-box (prints a report)"
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

# The FIX tests' counterparty is QuickFIX, a real FIX engine: Debian's prebuilt example acceptor.
# (PyPI's quickfix has no wheel and builds for ~10 minutes.) Needs root for apt-get; without it,
# install libquickfix-doc and libquickfix17 by hand, or the FIX engine test fails and says so.
QUICKFIX_EXECUTOR := /usr/share/doc/libquickfix-doc/examples/executor/C++/.libs/executor.gz
$(QUICKFIX_EXECUTOR):
	@if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libquickfix-doc libquickfix17; \
	else \
	    echo "make test: QuickFIX missing: run 'sudo apt-get install libquickfix-doc libquickfix17'"; \
	fi

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# CHAIN=FILE: the simulator animates that real option chain instead of its generated market
# (e.g. CHAIN=../shared/data/deribit/btc_option_chain_2020-05-21.csv); applies when supervisord starts.
run: install
	DERIBIT_SIM_CHAIN=$(CHAIN) $(BIN)/hedgepipe --config $(CONFIG) up

status: install
	$(BIN)/hedgepipe --config $(CONFIG) status

down: install
	$(BIN)/hedgepipe --config $(CONFIG) down

test: install-test $(QUICKFIX_EXECUTOR)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench
	$(BIN)/python -m bench.feed_decode
	$(BIN)/python -m bench.feed_memory
	$(BIN)/python -m bench.etl_filter
	$(BIN)/python -m bench.store_writer
	$(BIN)/python -m bench.stages
	$(BIN)/python -m bench.strategy_box

clean:
	rm -rf $(VENV) var build *.egg-info
