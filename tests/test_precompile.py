"""fastbp precompile: every kernel family's first calls in parallel processes, into the shared
Numba cache (the session has filled it by the time this runs: it only loads)."""
import os
import subprocess
import sys

import pytest

from fastbp import precompile


@pytest.mark.fresh_process
def test_precompile_runs_every_family_in_its_processes():
    run = subprocess.run([sys.executable, "-m", "fastbp.cli", "precompile", "--jobs", "2"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    for family in precompile.FAMILIES:
        assert f"precompile: {family.__name__} " in run.stdout
    assert "precompile: done in" in run.stdout


def test_precompile_under_numba_disable_jit_compiles_nothing():
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    run = subprocess.run([sys.executable, "-m", "fastbp.cli", "precompile"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "NUMBA_DISABLE_JIT is set, nothing is compiled" in run.stdout
