# Partner — the few commands a newcomer needs. `make demo` and `make test` do all set-up first.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Re-install when the dependency list changes.
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: setup test demo bench lint docs format clean help

help:
	@echo "make setup   create $(VENV) and install Partner with pinned dependencies"
	@echo "make demo    run the main job (set-up first)"
	@echo "make test    run the whole test suite (set-up first)"
	@echo "make bench   run the benchmarks; figures go to build/bench/*.json"
	@echo "make lint    ruff"
	@echo "make docs    regenerate docs/registers.md from the register map"

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

# Two workers, whole modules (or test classes) each, the Verilator simulations first
# (tests/conftest.py): a module's Verilator builds stay in one worker and overlap with the other
# worker's work.
test: setup
	$(BIN)/python -m pytest -n 2 --dist loadscope --no-loadscope-reorder --durations=20

# The main job on the simulated PCIe card; then the host-side flow writes build/demo/input.pcapng
# and the simulated device core replays it under the example rules (the first run builds the
# Verilator models, about 6 minutes in all on 2 cores; later runs reuse them).
demo: setup
	$(BIN)/partner sim card --out build/demo/card
	$(BIN)/partner demo --out build/demo
	$(BIN)/partner sim replay build/demo/input.pcapng --rules docs/examples/demo-rules.json \
		--out build/demo/replay

bench: setup
	$(BIN)/python -m bench

lint: setup
	$(BIN)/ruff check .

docs: setup
	$(BIN)/python -m partner.docgen

format: setup
	$(BIN)/ruff format .

clean:
	rm -rf build
