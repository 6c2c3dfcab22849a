# Partner — the few commands a newcomer needs. `make demo` and `make test` do all set-up first.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Re-install when the dependency list changes.
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: setup test demo bench lint format clean help

help:
	@echo "make setup   create $(VENV) and install Partner with pinned dependencies"
	@echo "make demo    run the main job (set-up first)"
	@echo "make test    run the whole test suite (set-up first)"
	@echo "make bench   run the benchmarks; figures go to build/bench/*.json"
	@echo "make lint    ruff"

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

test: setup
	$(BIN)/python -m pytest

demo: setup
	$(BIN)/partner demo

bench: setup
	$(BIN)/python -m bench

lint: setup
	$(BIN)/ruff check .

format: setup
	$(BIN)/ruff format .

clean:
	rm -rf build
