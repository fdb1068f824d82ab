"""linear_head at V on the C backend (2 threads) at score budgets of 4 MiB, 12 MiB and the whole
score matrix, beside the three bare products (NumPy), alternating, medians of 5:

    python benchmarks/score_budget.py
"""
import statistics
import time

import numpy as np

import fastbp
from fastbp.presets import linear_data

BUDGETS = {"4 MiB": 4 << 20, "12 MiB": 12 << 20, "whole": 1024 * 32000 * 4}


def main():
    X, W, b, y = linear_data("V")
    fastbp.set_num_threads(2)
    S, dW, dX = np.empty((len(X), len(W)), X.dtype), np.empty_like(W), np.empty_like(X)

    def bare():
        np.matmul(X, W.T, out=S)
        np.matmul(S.T, X, out=dW)
        np.matmul(S, W, out=dX)

    def once(call):
        call()                          # warm: the budget's first call allocates its block
        t0 = time.perf_counter()
        call()
        return time.perf_counter() - t0

    times = {name: [] for name in [*BUDGETS, "bare"]}
    for _ in range(5):
        for name, budget in BUDGETS.items():
            fastbp.config.score_block_bytes = budget
            times[name].append(once(lambda: fastbp.linear_head(X, W, b, y, backend="c")))
        times["bare"].append(once(bare))
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, seconds in median.items():
        print(f"{name:8s} {1e3 * seconds:6.0f} ms  {seconds / median['bare']:.2f}x the bare "
              "products")


if __name__ == "__main__":
    main()
