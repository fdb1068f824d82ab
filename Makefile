# Two entry points: `make demo` and `make test`. Each creates .venv if missing and installs what
# it needs into it, so either works first on a fresh clone with only Python and a C compiler.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q

.PHONY: demo test bench crossover clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# What each entry point installs; one stamp each, redone when pyproject.toml or the C sources
# change (pip install compiles the C backend's extension, fastbp/backends/_fastbp_c*.so).
EXTRAS_demo := plot,sklearn
EXTRAS_test := test,plot,sklearn
EXTRAS_bench := test,plot,sklearn,peers
C_SOURCES := setup.py fastbp/backends/_cbuild.py $(wildcard csrc/*.c csrc/*.h)
$(VENV)/.installed-%: pyproject.toml $(C_SOURCES) | $(BIN)/python
	$(PIP) -e ".[$(EXTRAS_$*)]"
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/fastbp demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -p no:cacheprovider tests benchmarks --benchmark-disable
	@echo "The Numba backend's tests again, interpreted (NUMBA_DISABLE_JIT=1):"
	NUMBA_DISABLE_JIT=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests -k numba

# Timed suites -> benchmarks/RESULTS.md. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for this
# command only: the workplace sets them for old OpenBLAS builds, and they slow a current one.
BENCH_ENV := env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE
bench: $(VENV)/.installed-bench
	$(BENCH_ENV) $(BIN)/python -m pytest -q -p no:cacheprovider benchmarks \
		--benchmark-json=benchmarks/last-run.json --benchmark-columns=median,iqr,rounds
	$(BENCH_ENV) $(BIN)/python benchmarks/compile_times.py --json benchmarks/last-compile.json
	$(BIN)/python benchmarks/report.py benchmarks/last-run.json benchmarks/last-compile.json \
		> benchmarks/RESULTS.md
	@echo "wrote benchmarks/RESULTS.md"

# The table behind the Numba backend's fused-vs-BLAS thresholds (FUSED_MAX_N and friends).
crossover: $(VENV)/.installed-test
	$(BENCH_ENV) $(BIN)/python benchmarks/crossover.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .benchmarks fastbp-demo
