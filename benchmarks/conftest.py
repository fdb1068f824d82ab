"""The benchmark suites share tests/cases.py (put on the path here), the presets' data, the
reference check every row passes before it is timed, and the peak-memory probes."""
import functools
import sys
import tracemalloc
from pathlib import Path

import numpy as np

from fastbp import presets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

# each preset's data made once per session (P's takes a second); read-only by convention, as
# every fastbp call and peer leaves its inputs untouched
@functools.lru_cache(maxsize=None)
def _linear_data(shape, head, dtype):
    return presets.linear_data(shape, head, dtype)


def linear_data(shape, head="softmax_nll", dtype=None):
    """presets.linear_data, cached: one entry per (shape, head, dtype), the dtype filled in."""
    return _linear_data(shape, head, dtype or presets.SHAPES[shape][3])


def assert_matches_reference(got, want, dtype):
    """A timed row computes the NumPy reference's numbers (nested tuples of floats / arrays),
    to 1e-9 in float64 and 2e-3 in float32, relative to each array's largest entry."""
    if isinstance(want, (tuple, list)):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_matches_reference(g, w, dtype)
        return
    if want is None:
        assert got is None
        return
    rtol = 1e-9 if np.dtype(dtype) == np.float64 else 2e-3
    want = np.asarray(want, np.float64)
    scale = float(np.abs(want).max(initial=0.0))
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=rtol * scale)


def checked_run(benchmark, call, check, timed=None, time=None):
    """``check(call())``, then ``benchmark(timed or call)`` times it (or ``time()`` does);
    under --benchmark-disable (make test's pass) the benchmark's one untimed call is the checked
    one (one call fewer)."""
    if benchmark.disabled:
        check(benchmark(call))
        return
    check(call())
    if time is not None:
        time()
    else:
        benchmark(timed or call)


def peak_extra_bytes(fn):
    """tracemalloc's peak during one call of fn (NumPy's and Numba's allocations)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


_RSS_PROBE = r"""
import json, sys, numpy as np, fastbp
from fastbp.compare import rss_peak
from fastbp.presets import linear_data

X, W, b, target = linear_data(sys.argv[1], sys.argv[2])
options = json.loads(sys.argv[4])
fastbp.config.score_block_bytes = int(sys.argv[5]) or fastbp.config.score_block_bytes
out = fastbp.Grads(None, np.zeros_like(W), np.zeros_like(b), np.zeros_like(X))
call = lambda: fastbp.linear_head(X, W, b, target, sys.argv[2], out=out, backend=sys.argv[3],
                                  **options)
if sys.argv[3] not in fastbp.available_backends():      # a peer: its step, as timed
    from fastbp import peers
    call = peers.linear_head(sys.argv[3], sys.argv[2], X, W, b, target)
call()      # warm-up (compiles a peer): BLAS's own buffers, a compiled graph are then resident
print(rss_peak(call))
"""


def peak_extra_rss(shape, head, backend, options=None, score_block_bytes=None):
    """Peak extra memory of one linear_head call (or a peer's step: ``backend`` a peer's name)
    as the process sees it (C mallocs included, which tracemalloc misses; docs/design.md "Peak
    memory"): fastbp.compare.rss_peak in a fresh interpreter, after a warm-up call (inputs,
    outputs, imports and BLAS's own buffers for the same products already resident), with
    glibc told to map every block of 128 KiB or more on its own (MALLOC_MMAP_THRESHOLD_), so
    a freed one is returned at once and a warm-up cannot hide the call's scratch. Linux only.
    ``options``: linear_head's keywords; ``score_block_bytes``: fastbp.config's, if given."""
    import json
    import os
    import subprocess
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
           "MALLOC_MMAP_THRESHOLD_": str(128 << 10)}
    run = subprocess.run([sys.executable, "-c", _RSS_PROBE, shape, head, backend,
                          json.dumps(options or {}), str(score_block_bytes or 0)],
                         capture_output=True, text=True, check=True, env=env)
    return int(run.stdout.split()[-1])


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Record what ran: the host, versions, threads and the BLAS libraries (for RESULTS.md)."""
    import threadpoolctl
    from scaling import host, provenance

    import fastbp
    info = fastbp.info()
    output_json["fastbp"] = {
        "host": host(),
        "provenance": provenance(),
        "versions": {"fastbp": info["fastbp"], **info["versions"]},
        "threads": info["threads"],
        "backends": info["backends"],
        "c_blas": info["c_blas"],
        "fastcall": info["fastcall"],
        "blas": [{k: lib.get(k) for k in ("internal_api", "version", "architecture",
                                           "num_threads")}
                 for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"],
    }
