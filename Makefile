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

.PHONY: demo serve stop test check test-deps test-data lint typecheck pytest unit test-gpu bench clean

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

# The system tools the stack tests run: Debian's Chromium, poppler's pdftoppm and the
# PostgreSQL server (where tests/support/postgres.py looks for it); tesseract for the Clean
# Pixel Data option's OCR (tests/unit/dicom/test_burned_in.py). Only what is missing is
# installed, after one apt-get update; with everything there this takes no time.
test-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v pdftoppm >/dev/null || missing="$$missing poppler-utils"; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v tesseract >/dev/null || missing="$$missing tesseract-ocr tesseract-ocr-eng"; \
	if [ -n "$$missing" ]; then \
		sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		echo "installing$$missing"; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q$$missing; \
	fi

# Real images nobody here wrote, for the tests: pyradiomics' five cases (lung1/2 CT, brain1/2
# and breast1 MR, with their labels) and its published feature baseline, from its source
# package on PyPI (it ships no wheel for this Python). Fetched once; tests/support/realdata.py
# reads them.
TEST_DATA := tests/.data
$(TEST_DATA)/pyradiomics/.fetched: | $(VENV)/.installed-dev
	rm -rf $(TEST_DATA)/pyradiomics $(TEST_DATA)/download
	$(BIN)/pip download --quiet --no-deps --no-build-isolation -d $(TEST_DATA)/download pyradiomics==3.0.1
	mkdir -p $(TEST_DATA)/pyradiomics
	tar -xzf $(TEST_DATA)/download/pyradiomics-3.0.1.tar.gz -C $(TEST_DATA)/pyradiomics \
		--strip-components=2 pyradiomics-3.0.1/data
	rm -rf $(TEST_DATA)/download
	touch $@

test-data: $(TEST_DATA)/pyradiomics/.fetched

# pytest exits 5 when it collected nothing: a broken suite, so it fails loudly here. The
# slowest tests are listed at the end of every run, so the cost of each stays visible.
# Containers often set PYTHONDONTWRITEBYTECODE (this machine does). Under it every one of the
# many Python processes the suite starts compiles radflow's modules from source again (0.5 s
# a command here), and each pytest worker rewrites the asserts of every test module again (8 s
# a worker): the tests write their bytecode (`__pycache__/`, ignored by git).
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest --durations=25
define run-pytest
	$(PYTEST) $(1); rc=$$?; [ $$rc -ne 5 ] || echo "pytest collected no tests" >&2; exit $$rc
endef

# pytest-xdist gives each worker whole modules (`loadscope`), so a module's fixtures are
# built once, in the order tests/conftest.py sorts them (the stack tier's long modules first),
# not xdist's (the modules with the most tests first, which left the demo's to run alone at
# the end). The flow and stack tiers wait much of the time (on Prefect's server, on the
# processes and servers they start), so the whole suite runs as one session on a worker
# more than there are cores: on 2 cores, 3 workers took 16.7 minutes where the unit and flow
# tiers on 2 workers and then the stack tier alone took 24-28 (bench/RESULTS.md).
WORKERS ?= 3
XDIST := -n $(WORKERS) --dist loadscope --no-loadscope-reorder

# The whole suite: unit, flow (real Prefect runs in process) and stack (servers, subprocesses,
# browsers, PostgreSQL).
pytest: $(VENV)/.installed-dev test-deps test-data
	$(call run-pytest,$(XDIST))

# The unit tier alone: what `make check` runs.
unit: $(VENV)/.installed-dev test-data
	$(call run-pytest,-n 2 --dist loadscope --no-loadscope-reorder -m "not flow and not stack")

# The CUDA training paths (tests/gpu/; in `make test` too, skipped there without a GPU). On a
# GPU machine, with a CUDA build of torch: make test-gpu TORCH="torch --index-url <CUDA index>"
test-gpu: $(VENV)/.installed-dev
	$(call run-pytest,-m gpu tests/gpu)

test: test-deps lint typecheck pytest

# The developer's loop: everything `make test` checks except the flow and stack tiers.
check: lint typecheck unit

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
