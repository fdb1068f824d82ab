"""Where the Numba backend's fused-rows path stops beating its chunked-BLAS path.

    make crossover      # prints median times of the three paths over a grid

The thresholds in ``fastbp/backends/numba_kernels.py`` (FUSED_MAX_N, FUSED_MAX_WEIGHTS,
PARALLEL_MIN_WORK) were chosen from this table; rerun it on a new machine.
"""
import sys

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "tests"))
from cases import variant  # noqa: E402

import fastbp  # noqa: E402
from fastbp.compare import median_time  # noqa: E402


def main():
    rng = np.random.default_rng(0)
    print(f"{'B':>5} {'d':>5} {'n':>5} {'fused us':>10} {'parallel us':>12} {'chunked us':>11}  best")
    for B in (8, 64, 256, 1024):
        for d in (16, 64, 512, 3072):
            for n in (3, 10, 32, 64, 128, 512):
                X = rng.standard_normal((B, d))
                W = rng.standard_normal((n, d)) / np.sqrt(d)
                b, y = np.zeros(n), rng.integers(0, n, B)
                row = {}
                for name, path in (("fused", "numba:serial"), ("parallel", "numba:parallel"),
                                   ("chunked", "numba:chunked")):
                    with variant(path) as be:
                        row[name] = 1e6 * median_time(
                            lambda: fastbp.linear_head(X, W, b, y, backend=be), 7)
                best = min(row, key=row.get)
                print(f"{B:>5} {d:>5} {n:>5} {row['fused']:>10.1f} {row['parallel']:>12.1f} "
                      f"{row['chunked']:>11.1f}  {best}")


if __name__ == "__main__":
    main()
