"""Where a compiled backend's fused-rows path stops beating its chunked-BLAS path.

    make crossover                                  # both compiled backends
    python benchmarks/crossover.py c                # one of them

Prints median times of the three linear_head paths over a grid of shapes. The thresholds of
``fastbp/backends/numba_kernels.py`` and ``c_kernels.py`` (FUSED_MAX_N, FUSED_MAX_WEIGHTS,
FUSED_ANY_N_WEIGHTS, PARALLEL_MIN_WORK) were chosen from this table; rerun it on a new machine.
"""
import sys
import time

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "tests"))
from cases import variant  # noqa: E402

import fastbp  # noqa: E402
from fastbp.compare import median_time  # noqa: E402


def main(backend):
    rng = np.random.default_rng(0)
    print(f"backend {backend!r}")
    print(f"{'B':>5} {'d':>5} {'n':>5} {'fused us':>10} {'parallel us':>12} {'chunked us':>11}  best")
    for B in (8, 64, 256, 1024):
        for d in (16, 64, 512, 3072):
            for n in (3, 10, 16, 32, 64, 128):
                X = rng.standard_normal((B, d))
                W = rng.standard_normal((n, d)) / np.sqrt(d)
                b, y = np.zeros(n), rng.integers(0, n, B)
                row = {}
                for name, path in (("fused", "serial"), ("parallel", "parallel"),
                                   ("chunked", "chunked")):
                    # BLAS threads spin for a while after a call, and OpenMP threads started
                    # meanwhile wait for a core (ms): let the previous path's threads sleep
                    time.sleep(0.15)
                    with variant(f"{backend}:{path}") as be:
                        row[name] = 1e6 * median_time(
                            lambda: fastbp.linear_head(X, W, b, y, backend=be), 9)
                best = min(row, key=row.get)
                print(f"{B:>5} {d:>5} {n:>5} {row['fused']:>10.1f} {row['parallel']:>12.1f} "
                      f"{row['chunked']:>11.1f}  {best}")


if __name__ == "__main__":
    for name in sys.argv[1:] or [b for b in ("numba", "c") if b in fastbp.available_backends()]:
        main(name)
