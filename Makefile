# Two entry points: `make demo` and `make test`. Each creates .venv if missing and installs what
# it needs into it, so either works first on a fresh clone with only Python and a C compiler.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# One stamp per set of extras: reinstall when pyproject.toml changes.
$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(PIP) -e ".[$*]"
	touch $@

demo: $(VENV)/.installed-plot
	$(BIN)/fastbp demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -p no:cacheprovider tests benchmarks --benchmark-disable
	@echo "The Numba backend's tests again, interpreted (NUMBA_DISABLE_JIT=1):"
	NUMBA_DISABLE_JIT=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests -k numba

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .benchmarks fastbp-demo
