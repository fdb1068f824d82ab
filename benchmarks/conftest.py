"""The benchmark suites share tests/cases.py (put on the path here) and peak_extra_bytes."""
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


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
