"""Calls from several Python threads at once give the serial results, bit for bit, on every
backend and linear_head path (kernels release the GIL; Numba uses a thread-safe layer)."""
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import fastbp
from cases import tiny_linear_jobs

# the C backend's tests, which `make test-asan` runs under the sanitizers
pytestmark = pytest.mark.asan


def _jobs():
    rng = np.random.default_rng(0)
    jobs = []
    for k in range(16):
        B, d, h, n = 40 + k, 24, 7, 5 + k % 3
        dt = np.float32 if k % 2 else np.float64
        X = rng.standard_normal((B, d)).astype(dt)
        params = [((rng.standard_normal((h, d)) / 5).astype(dt), np.zeros(h, dt)),
                  ((rng.standard_normal((n, h)) / 3).astype(dt), np.zeros(n, dt))]
        jobs.append((X, params, rng.integers(0, n, B)))
    return jobs


def test_eight_threads_match_serial_calls(linear_backend):
    def run(job):
        X, params, y = job
        g = fastbp.linear_head(X, *params[0], y % params[0][0].shape[0], backend=linear_backend)
        loss, grads = fastbp.mlp_loss_grad(X, params, y, activation="tanh",
                                           backend=linear_backend)
        return [g.loss, loss, g.dW, g.db, g.dX] + [a for pair in grads for a in pair]

    jobs = _jobs()
    serial = [run(job) for job in jobs]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            for got, want in zip(pool.map(run, jobs), serial):
                for a, b in zip(got, want):
                    np.testing.assert_array_equal(a, b)


def test_eight_threads_through_the_fast_entry_match_serial_calls(backend):
    """Tiny calls with out= (csrc/fastcall.c on the compiled backends, GIL released)."""
    jobs = tiny_linear_jobs(16, seed=1)

    def run(job):
        X, W, b, y = job
        out = fastbp.Grads(None, np.empty_like(W), np.empty_like(b), np.empty_like(X))
        return fastbp.linear_head(X, W, b, y, out=out, backend=backend)

    serial = [run(job) for job in jobs]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(20):
            for got, want in zip(pool.map(run, jobs), serial):
                assert got.loss == want.loss
                for a, b in zip(got[1:], want[1:]):
                    np.testing.assert_array_equal(a, b)


_RACE = r"""
import sys, threading
import numpy as np
import pytest
import fastbp
from fastbp.backends.numba import fastcall

backend = sys.argv[1]
sys.path.insert(0, sys.argv[2])
from cases import tiny_linear_jobs
jobs = tiny_linear_jobs(8, seed=2)
start, got = threading.Barrier(len(jobs)), [None] * len(jobs)

def first_call(i):
    start.wait()                     # every thread's first call at once
    got[i] = fastbp.linear_head(*jobs[i], backend=backend)

threads = [threading.Thread(target=first_call, args=(i,)) for i in range(len(jobs))]
for t in threads:
    t.start()
for t in threads:
    t.join()
for g, job in zip(got, jobs):
    want = fastbp.linear_head(*job, backend=backend)
    assert g.loss == want.loss, (g.loss, want.loss)
    for a, b in zip(g[1:], want[1:]):
        np.testing.assert_array_equal(a, b)
print(len(fastcall._CALLBACKS))
"""


@pytest.mark.fresh_process
def test_threads_racing_to_the_first_tiny_call_of_a_fresh_process(backend, tmp_path):
    """Eight threads make a fresh process's first tiny calls at once, with a Numba cache that
    lacks only the fast entry's callbacks (this session's cache less fastcall.py's entries):
    the callbacks are compiled once (under their lock) and kept, and every thread gets the
    serial call's bits."""
    if backend == "numba" and os.environ.get("NUMBA_DISABLE_JIT") != "1":
        from fastbp.backends.numba import _jit, linear
        fastbp.linear_head(*tiny_linear_jobs(1, seed=0)[0], backend="numba")   # (warm)
        warm = _jit.SourcesLocator.from_function(linear.linear_rows.py_func,
                                                 linear.__file__).get_cache_path()
        shutil.copytree(warm, tmp_path / os.path.basename(warm),
                        ignore=shutil.ignore_patterns("fastcall.*"))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    tests = str(Path(__file__).resolve().parent)
    run = subprocess.run([sys.executable, "-c", _RACE, backend, tests], capture_output=True,
                         text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    compiled = (backend == "numba" and os.environ.get("NUMBA_DISABLE_JIT", "0") == "0"
                and fastbp._dispatch.backend_module("numba").fast_linear_head is not None)
    assert run.stdout.split() == ["1" if compiled else "0"]
