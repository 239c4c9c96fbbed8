# swaplab: `make quickstart` (set up + train the embedded default on CPU), `make test` (set up + tests).
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PYTEST_ARGS ?=

.PHONY: setup quickstart test test-fast lint clean-logs

$(UV):
	python3 -m pip install --user --quiet uv || python3 -m pip install --user --quiet --break-system-packages uv

setup: $(UV)
	$(UV) sync --frozen

quickstart: setup
	$(UV) run --frozen python train.py

test: setup
	$(UV) run --frozen lint-imports
	$(UV) run --frozen pytest $(PYTEST_ARGS)

test-fast: setup
	$(UV) run --frozen pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(UV) run --frozen ruff check src tests train.py eval.py swap.py
	$(UV) run --frozen lint-imports

clean-logs:
	rm -rf logs
