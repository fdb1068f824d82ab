"""Every pytest session of this repository (tests/ and benchmarks/, plain ``pytest`` included)
says in its header which backends it runs, and refuses to start when a compiled backend is
missing: a broken build must not pass by silently dropping thousands of cases. Where a backend
cannot be built (no C compiler), opt out explicitly: ``FASTBP_ALLOW_MISSING=c`` (comma-separated
names)."""
import os

import pytest

COMPILED = ("numba", "c")


def _backends():
    """(available backends, {missing compiled backend: why}, the names allowed to be missing)."""
    import fastbp
    from fastbp import _dispatch
    available = fastbp.available_backends()
    missing = {b: _dispatch.unavailable_backends().get(b, "not registered") for b in COMPILED
               if b not in available}
    allowed = {b for b in os.environ.get("FASTBP_ALLOW_MISSING", "").split(",") if b}
    return available, missing, allowed


def pytest_report_header(config):
    available, missing, allowed = _backends()
    lines = [f"fastbp backends under test: {', '.join(available)}"]
    lines += [f"fastbp backend {b!r} is missing"
              f"{' (allowed: FASTBP_ALLOW_MISSING)' if b in allowed else ''}: {why}"
              for b, why in missing.items()]
    return lines


def pytest_sessionstart(session):
    _, missing, allowed = _backends()
    refused = {b: why for b, why in missing.items() if b not in allowed}
    if refused:
        names = ",".join(refused)
        raise pytest.UsageError(
            f"compiled backend(s) {names} failed to build or load: {refused}. Fix the build "
            f"(pip install -e . needs a C compiler for 'c'), or run with "
            f"FASTBP_ALLOW_MISSING={names} to test without them.")
