"""Every pytest session of this repository (tests/ and benchmarks/, plain ``pytest`` included)
says in its header which backends it runs, and refuses to start when a compiled backend is
missing: a broken build must not pass by silently dropping thousands of cases. On a machine
with no C compiler the C backend cannot be built: the session runs without it and says so
loudly, in its header and at its end. Otherwise opt out explicitly: ``FASTBP_ALLOW_MISSING=c``
(comma-separated names)."""
import os
import shlex
import shutil
import sysconfig

import pytest

COMPILED = ("numba", "c")
# every session runs the shipped thresholds, never a `fastbp tune` cache of the machine it runs
# on (the tests check the shipped plan; tests/test_tune.py applies caches of its own)
os.environ["FASTBP_TUNING"] = "defaults"


def c_compiler():
    """The C compiler pip would build with (``CC``, else Python's own ``CC``), if it is on the
    PATH; else None."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    words = shlex.split(cc)
    return shutil.which(words[0]) if words else None


_NO_COMPILER = ("the C backend was NOT tested: no C compiler was found "
                "(CC={!r} is not on the PATH); install one and reinstall fastbp to test it")


def _backends():
    """(available backends, {missing compiled backend: why}, the names allowed to be missing)."""
    import fastbp
    from fastbp import _dispatch
    available = fastbp.available_backends()
    missing = {b: _dispatch.unavailable_backends().get(b, "not registered") for b in COMPILED
               if b not in available}
    allowed = {b for b in os.environ.get("FASTBP_ALLOW_MISSING", "").split(",") if b}
    if "c" in missing and c_compiler() is None:
        allowed.add("c")
        missing["c"] = _NO_COMPILER.format(
            os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    return available, missing, allowed


def pytest_report_header(config):
    available, missing, allowed = _backends()
    lines = [f"fastbp backends under test: {', '.join(available)}"]
    lines += [f"fastbp backend {b!r} is missing"
              f"{' (allowed: FASTBP_ALLOW_MISSING)' if b in allowed and 'NOT' not in why else ''}"
              f": {why}" for b, why in missing.items()]
    return [line.upper() if "NOT tested" in line else line for line in lines]


def pytest_collection_modifyitems(items):
    """Tests that start fresh Python processes importing fastbp run last: by then the
    session has filled Numba's disk cache, so those processes load the kernels instead of
    compiling them again (a cold compile is most of such a test's time)."""
    items.sort(key=lambda item: item.get_closest_marker("fresh_process") is not None)


def pytest_terminal_summary(terminalreporter):
    _, missing, allowed = _backends()
    for b, why in missing.items():
        if b in allowed:
            terminalreporter.write_sep("!", f"fastbp backend {b!r} was not tested", red=True)
            terminalreporter.write_line(f"fastbp backend {b!r}: {why}", red=True)


def pytest_sessionstart(session):
    _, missing, allowed = _backends()
    refused = {b: why for b, why in missing.items() if b not in allowed}
    if refused:
        names = ",".join(refused)
        raise pytest.UsageError(
            f"compiled backend(s) {names} failed to build or load: {refused}. Fix the build "
            f"(pip install -e . needs a C compiler for 'c'), or run with "
            f"FASTBP_ALLOW_MISSING={names} to test without them.")
    config = session.config
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and config.option.verbose < 0 and not hasattr(config, "workerinput"):
        for line in pytest_report_header(config):     # (-q hides the header: say it anyway)
            reporter.write_line(line, red=line.isupper(), bold=line.isupper())
