"""How long a NumPy product slows the fastbp calls after it: the OpenBLAS spin window.

    python benchmarks/after_blas.py                  # C float32, both compiled backends
    python benchmarks/after_blas.py --shape K --trials 8

After one 256 x 512 @ 512 x 512 float32 matmul, linear_head (softmax_nll, the shape's preset,
out= given) is called back to back for --span ms; each call's time goes to the bucket of --bucket
ms in which it started. Printed per backend: the median microseconds per bucket over --trials
matmuls (each after a --rest s pause, so no earlier call's threads are still spinning), and the
ratio of the first bucket to the last. OpenBLAS's workers spin after a call before they sleep,
taking a core from the threads of the call that follows (docs/performance.md, "Threads next to
the user's own NumPy").
"""
import argparse
import time

import numpy as np

import fastbp
from fastbp.presets import SHAPES


def profile(backend, shape, dtype, trials, span, bucket, rest):
    B, d, n, _ = SHAPES[shape]
    rng = np.random.default_rng(1)
    A, M = (rng.standard_normal(s).astype(np.float32) for s in ((256, 512), (512, 512)))
    X = rng.standard_normal((B, d)).astype(dtype)
    W = (rng.standard_normal((n, d)) * 0.01).astype(dtype)
    b, y = np.zeros(n, dtype), rng.integers(0, n, B)
    out = fastbp.Grads(None, np.empty_like(W), np.empty_like(b), np.empty_like(X))
    for _ in range(10):
        fastbp.linear_head(X, W, b, y, out=out, backend=backend)
    times = {}
    for _ in range(trials):
        time.sleep(rest)
        np.matmul(A, M)
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            fastbp.linear_head(X, W, b, y, out=out, backend=backend)
            t1 = time.perf_counter()
            at = (t0 - start) * 1e3
            if at >= span:
                break
            times.setdefault(int(at // bucket) * bucket, []).append((t1 - t0) * 1e6)
    return {k: float(np.median(v)) for k, v in sorted(times.items())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="C")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--backends", default="c,numba")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--span", type=float, default=400.0, help="ms after the matmul")
    ap.add_argument("--bucket", type=float, default=50.0, help="ms")
    ap.add_argument("--rest", type=float, default=0.5, help="s before each matmul")
    args = ap.parse_args()
    B, d, n, _ = SHAPES[args.shape]
    print(f"linear_head {args.shape} ({B} x {d} x {n}, {args.dtype}), {fastbp.info()['threads']} "
          f"threads; median us of the calls starting in each {args.bucket:g} ms after a matmul")
    for backend in args.backends.split(","):
        got = profile(backend, args.shape, np.dtype(args.dtype), args.trials, args.span,
                      args.bucket, args.rest)
        cells = ", ".join(f"{k:g}: {v:,.0f}" for k, v in got.items())
        first, last = next(iter(got.values())), list(got.values())[-1]
        print(f"{backend}: {cells} (first / last {first / last:.2f}x)")


if __name__ == "__main__":
    main()
