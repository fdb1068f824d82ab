"""Shared shapes and data for the benchmark suites (issue presets), and the test data helpers."""
import sys
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

# name: (B, d, n, dtype)
SHAPES = {
    "T": (5, 4, 3, "float64"),
    "D": (64, 64, 10, "float64"),
    "C": (256, 3072, 10, "float64"),
    "V": (1024, 512, 32000, "float32"),
}


def linear_data(shape, head="softmax_nll"):
    """X, W, b, target for a linear layer of the preset ``shape`` (fixed seed)."""
    B, d, n, dtype = SHAPES[shape]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((B, d)).astype(dtype)
    W = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(dtype)
    b = np.zeros(n, dtype)
    if head in ("softmax_nll", "multiclass_hinge"):
        target = rng.integers(0, n, B)
    else:
        target = rng.random((B, n)).astype(dtype)
    return X, W, b, target


def peak_extra_bytes(fn):
    """tracemalloc's peak during one call of fn (NumPy's and Numba's allocations)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Record what ran: versions, threads and the BLAS libraries (for RESULTS.md)."""
    import threadpoolctl

    import fastbp
    info = fastbp.info()
    output_json["fastbp"] = {
        "versions": {"fastbp": info["fastbp"], **info["versions"]},
        "threads": info["threads"],
        "backends": info["backends"],
        "blas": [{k: lib.get(k) for k in ("internal_api", "version", "architecture",
                                           "num_threads")}
                 for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"],
    }
