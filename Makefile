# The README's commands. Each creates .venv and installs from pyproject.toml on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast lint install clean bench bench-gpu screenshot

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps record that the install is current with pyproject.toml.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,postgres]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/fer-tune run search_spaces/quick.yaml

# Lint first: ruff (style, import order) and import-linter (the layer contracts in pyproject.toml).
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# Two pytest-xdist workers, a test file each at a time (module fixtures stay shared): most of a test's
# time waits on subprocesses, servers and Ray, so two overlap even on 2 cores. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),-p no:xdist,-n $(PYTEST_WORKERS) --dist loadfile)

test: lint
	$(BIN)/python -m pytest -q $(XDIST) $(PYTEST_ARGS)

# The inner loop: everything but the tests marked slow (tests/budget.py).
test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow" $(PYTEST_ARGS)

# The README's pictures of `fer-tune serve` (docs/serve.png) and of a sweep's report (docs/report.png),
# taken by the page tests in headless Chromium.
screenshot: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q tests/test_web.py -k page_boxes_the_face --screenshot docs/serve.png
	$(BIN)/python -m pytest -q tests/test_report.py -k headless_chromium --report-screenshot docs/report.png

# Benchmarks (bench/): short by default; `make bench BENCH_ARGS=--full` for the real sizes.
bench: $(VENV)/.installed
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

# The GPU benchmark (bench/gpu.py) in one device call: fetches the wheels the GPU box lacks (pydantic and
# its needs, for Python 3.12 there) into build/gpu-wheels and prints the call. It measures nothing here;
# `$(BIN)/python -m bench.gpu --smoke --out /tmp/gpu-smoke` runs the same code on this CPU.
bench-gpu: $(VENV)/.installed
	$(BIN)/python -m bench.gpu --device-call

clean:
	rm -rf $(VENV) .pytest_cache $$(ls -d results/*/ | grep -v "^results/bench/")
