# A new user's two entry points are `make demo` and `make test`: each creates .venv if missing
# and installs what it needs into it, so either works first on a fresh clone with only Python
# and a C compiler. The rest are the developers': lint, the sanitizers (test-asan, fuzz), the
# timed suites (bench, bench-dask, bench-scaling, bench-percore, crossover) and clean.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q

.PHONY: demo test lint test-asan asan-build fuzz bench bench-dask bench-scaling bench-percore \
	crossover clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# What each entry point installs; one stamp each, redone when pyproject.toml or the C sources
# change (pip install compiles the C backend's extensions, fastbp/backends/_fastbp_c*.so and
# _fastcall*.so). The tests install the peers (PyTorch, JAX, dask-ml) and Dask so the adapters'
# and fastbp.dask's tests run.
EXTRAS_demo := plot,sklearn
EXTRAS_test := test,plot,sklearn,dask,peers
EXTRAS_bench := test,plot,sklearn,dask,peers
C_SOURCES := setup.py fastbp/backends/_cbuild.py $(wildcard csrc/*.c csrc/*.h)
# PyPI's plain torch on Linux is a CUDA build of several GB: benchmarks/constraints.txt names
# the CPU build to install instead (PEERS_CONSTRAINTS= to let pip choose).
PEERS_CONSTRAINTS ?= benchmarks/constraints.txt
$(VENV)/.installed-%: pyproject.toml $(C_SOURCES) $(PEERS_CONSTRAINTS) | $(BIN)/python
	$(PIP) $(if $(PEERS_CONSTRAINTS),-c $(PEERS_CONSTRAINTS)) -e ".[$(EXTRAS_$*)]"
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/fastbp demo

# A compiled backend that failed to build or load stops the run (conftest.py) instead of
# silently dropping its tests; on a machine with no C compiler the run goes on without the C
# backend and says so (FASTBP_ALLOW_MISSING=c opts out explicitly). The tests run on one worker
# per core, at most TEST_WORKERS_MAX (pytest-xdist; each worker holds PyTorch, JAX and Numba).
TEST_WORKERS_MAX ?= 4
XDIST = -n auto --maxprocesses $(TEST_WORKERS_MAX)
test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider $(XDIST) tests benchmarks
	@echo "The Numba backend's tests again, interpreted (NUMBA_DISABLE_JIT=1):"
	NUMBA_DISABLE_JIT=1 $(BIN)/python -m pytest -q -p no:cacheprovider $(XDIST) tests -k numba

# The Python code against ruff's rules and the C code against .clang-format (pyproject.toml has
# ruff's configuration); both tools come with the test extras.
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/clang-format --dry-run --Werror csrc/*.c csrc/*.h
	@echo "lint: ruff and clang-format found nothing"

# The C backend under AddressSanitizer + UndefinedBehaviorSanitizer: the extension is built with
# the sanitizers (FASTBP_CFLAGS) from a copy of the tree into its own virtual environment (.venv's
# build stays untouched), and Python, not itself instrumented, runs with the sanitizer runtimes
# preloaded. Any report aborts the run (-fno-sanitize-recover); leaks are not checked (CPython
# keeps its own memory alive at exit).
ASAN_DIR   := build/asan
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g
CC         ?= cc
ASAN_RUN    = cd $(ASAN_DIR)/src && \
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	FASTBP_TEST_BACKENDS=c $(ASAN_ENV) ../venv/bin/python -m pytest -q -p no:cacheprovider
asan-build:
	rm -rf $(ASAN_DIR)/src && mkdir -p $(ASAN_DIR)/src
	tar -c --exclude=./.venv --exclude=./build --exclude='*.so' --exclude=__pycache__ \
		--exclude=./.git . | tar -x -C $(ASAN_DIR)/src
	test -x $(ASAN_DIR)/venv/bin/python || $(PYTHON) -m venv $(ASAN_DIR)/venv
	cd $(ASAN_DIR)/src && CC=$(CC) FASTBP_CFLAGS="$(ASAN_FLAGS)" \
		../venv/bin/python -m pip install --disable-pip-version-check -q -e ".[test,jax]"

# The C backend's tests under the sanitizers.
# The C backend's tests: those marked `asan` (pytestmark in each file).
test-asan: asan-build
	$(ASAN_RUN) -m asan tests
	@echo "test-asan: the C backend's tests ran under ASan + UBSan with no report"

# Every exported C kernel called through cffi with random shapes, exactly-sized buffers, extreme
# values and random head structs (tests/test_c_abi_fuzz.py), FUZZ_EXAMPLES per kernel, under the
# sanitizers: a few minutes.
FUZZ_EXAMPLES ?= 20000
fuzz: ASAN_ENV = FASTBP_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES)
fuzz: asan-build
	$(ASAN_RUN) tests/test_c_abi_fuzz.py
	@echo "fuzz: $(FUZZ_EXAMPLES) random calls per C kernel family under ASan + UBSan, no report"

# Timed suites -> benchmarks/RESULTS.md. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for this
# command only: the workplace sets them for old OpenBLAS builds, and they slow a current one.
BENCH_ENV := env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE
# RESULTS.md from the last runs' files (the Dask section where `make bench-dask` has run here)
REPORT = $(BIN)/python benchmarks/report.py benchmarks/last-run.json benchmarks/last-compile.json \
	benchmarks/last-adapters.json $$(ls benchmarks/last-dask.json 2>/dev/null) \
	> benchmarks/RESULTS.md
THREADS_REPORT = if [ -f benchmarks/last-run.json ]; then $(REPORT); else \
	$(BIN)/python benchmarks/report.py --threads benchmarks/last-scaling.json \
	benchmarks/RESULTS.md > benchmarks/RESULTS.md.new && mv benchmarks/RESULTS.md.new \
	benchmarks/RESULTS.md; fi
bench: $(VENV)/.installed-bench
	$(BENCH_ENV) $(BIN)/python -m pytest -q -p no:cacheprovider benchmarks --benchmark-enable \
		--benchmark-json=benchmarks/last-run.json --benchmark-columns=median,iqr,rounds
	$(BENCH_ENV) $(BIN)/python benchmarks/compile_times.py --json benchmarks/last-compile.json
	$(BENCH_ENV) $(BIN)/python benchmarks/adapters.py --json benchmarks/last-adapters.json
	$(REPORT)
	$(BIN)/python benchmarks/quotes.py docs/performance.md
	@echo "wrote benchmarks/RESULTS.md, renewed docs/performance.md's quotes of it"

# fastbp.dask against dask-ml on 2,000,000 rows (about 25 min: dask-ml's default solver takes
# most of it); RESULTS.md's Dask section is its last run's.
bench-dask: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/dask_scaling.py --json benchmarks/last-dask.json
	test ! -f benchmarks/last-run.json || $(REPORT)

# Threads 1, 2, 4 ... up to the cores: every compiled backend beside its peers, one process per
# thread count pinned to that many cores (benchmarks/scaling.py; the table goes to stdout).
bench-scaling: $(VENV)/.installed-bench
	$(BENCH_ENV) $(BIN)/python benchmarks/scaling.py --json benchmarks/last-scaling.json
	$(THREADS_REPORT)
	$(BIN)/python benchmarks/quotes.py docs/performance.md

# Threads 1 and all the cores only (minutes): the per-core efficiency table, same output.
# Without the whole run's files here (benchmarks/last-run.json), RESULTS.md's Threads section
# alone is rewritten (report.py --threads).
bench-percore: $(VENV)/.installed-bench
	$(BENCH_ENV) $(BIN)/python benchmarks/scaling.py --per-core --json benchmarks/last-scaling.json
	$(THREADS_REPORT)
	$(BIN)/python benchmarks/quotes.py docs/performance.md

# The tables behind the compiled backends' fused-vs-BLAS thresholds (FUSED_MAX_N and friends).
crossover: $(VENV)/.installed-test
	$(BENCH_ENV) $(BIN)/python benchmarks/crossover.py
	$(BENCH_ENV) $(BIN)/python benchmarks/crossover.py --own

clean:
	rm -rf $(VENV) build *.egg-info fastbp/backends/_fastbp_c* fastbp/backends/_fastcall* .pytest_cache .hypothesis .benchmarks fastbp-demo
