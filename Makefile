# The README's commands. `make demo` and `make test` work on a fresh clone: they create
# .venv when it is missing and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU build of torch, installed before the project so pip never pulls a multi-GB CUDA
# build. A GPU user sets TORCH to a CUDA build, e.g. TORCH="torch --index-url <CUDA index>".
TORCH  ?= torch==2.13.0

export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: demo serve stop test lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/radflow demo

serve: $(VENV)/.installed
	$(BIN)/radflow serve

stop: $(VENV)/.installed
	$(BIN)/radflow stop

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy radflow

# pytest exits 5 when it collected nothing: a broken suite, so it fails loudly here.
pytest: $(VENV)/.installed-dev
	$(BIN)/pytest; rc=$$?; [ $$rc -ne 5 ] || echo "pytest collected no tests" >&2; exit $$rc

test: lint typecheck pytest

$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(BIN)/pip install --quiet -e ".[bench]"
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/demo_bench.py
	$(BIN)/python bench/deid_bench.py
	$(BIN)/python bench/imaging_bench.py
	$(BIN)/python bench/features_bench.py
	$(BIN)/python bench/cnn_bench.py
	$(BIN)/python bench/arrival_bench.py
	$(BIN)/python bench/load_bench.py

clean:
	rm -rf radflow-demo radflow-data radflow-cache .pytest_cache .mypy_cache .ruff_cache
