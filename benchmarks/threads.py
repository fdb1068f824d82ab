"""fastbp's parallel kernels called alone and right after a NumPy matmul, per OpenMP wait setting.

    python benchmarks/threads.py

After a BLAS call, OpenBLAS's threads spin for a while; OpenMP threads that spin too then wait
for a core a whole time slice. Each setting runs in a fresh process (libgomp reads its
environment once, when it loads): libgomp's default spin (GOMP_SPINCOUNT=300000), fastbp's
default (GOMP_SPINCOUNT=1000: fastbp/backends/__init__.py's spin_policy, when the user set no
policy), and OMP_WAIT_POLICY=passive; and fastbp's default with NumPy's BLAS on one thread (no
OpenBLAS worker left spinning after the matmul). Two rows run the C backend's BLAS path with its
GEMMs in NumPy's OpenBLAS (the default) or in SciPy's, a second OpenBLAS copy whose threads fight
NumPy's. The "tiny" rows are linear_head at D (64 x 64 x 10) on each backend, the Numba one on
its fused rows (the default there) and on its BLAS path. Prints the median microseconds of 300
calls.
"""
import os
import subprocess
import sys

SETTINGS = [("libgomp default spin", {"GOMP_SPINCOUNT": "300000"}),
            ("fastbp default", {}),
            ("passive", {"OMP_WAIT_POLICY": "passive"}),
            ("one BLAS thread", {"BENCH_BLAS_THREADS": "1"})]


def child():
    import statistics
    import time

    import numpy as np

    import fastbp
    from fastbp.presets import linear_data

    fastbp.set_num_threads(2)
    if os.environ.get("BENCH_BLAS_THREADS"):
        import threadpoolctl
        threadpoolctl.threadpool_limits(int(os.environ["BENCH_BLAS_THREADS"]), "blas")
    rng = np.random.default_rng(0)
    S, Z = rng.standard_normal((256, 1000)), rng.standard_normal((256, 1000))
    X, W, b, y = linear_data("C")
    Xs, Ws = rng.standard_normal((1024, 16)), rng.standard_normal((10, 16))
    ys = rng.integers(0, 10, 1024)
    A = rng.random((256, 256))
    Xm, Wm, ym = rng.standard_normal((256, 512)), rng.standard_normal((32, 512)), y % 32
    Xd, Wd, bd, yd = linear_data("D")
    import fastbp.backends.numba as numba_backend
    from fastbp.backends import c_kernels

    def tiny(backend, fused_weights=None):
        def call():
            numba_backend.TUNING.FUSED_ANY_N_WEIGHTS = fused_weights or default_weights
            return fastbp.linear_head(Xd, Wd, bd, yd, backend=backend)
        return call

    default_weights = numba_backend.TUNING.FUSED_ANY_N_WEIGHTS

    def chunked():                 # the C backend's BLAS path
        return fastbp.linear_head(Xm, Wm, None, ym, backend="c")

    # (name, the C kernels' GEMMs in NumPy's OpenBLAS or SciPy's, call)
    cases = [("c: l1 head, 256 x 1000", True, lambda: fastbp.l1(S, Z, backend="c")),
             ("c: linear_head C shape", True,
              lambda: fastbp.linear_head(X, W, b, y, backend="c")),
             ("numba: linear_head 1024 x 16 x 10", True,
              lambda: fastbp.linear_head(Xs, Ws, None, ys, backend="numba")),
             ("c: linear_head 256x512x32, NumPy BLAS", True, chunked),
             ("c: linear_head 256x512x32, SciPy BLAS", False, chunked),
             ("numba: linear_head 256x512x32, NumPy BLAS", True,
              lambda: fastbp.linear_head(Xm, Wm, None, ym, backend="numba")),
             ("tiny: c", True, tiny("c")),
             ("tiny: numba, fused rows", True, tiny("numba")),
             ("tiny: numba, BLAS path", True, tiny("numba", fused_weights=1)),
             ("tiny: numpy", True, tiny("numpy"))]
    for name, numpy_blas, f in cases:
        c_kernels.set_blas(numpy=numpy_blas)
        for after_matmul in (False, True):
            f()
            times = []
            for _ in range(300):
                if after_matmul:
                    A @ A
                t0 = time.perf_counter()
                f()
                times.append(time.perf_counter() - t0)
            print(f"{name}\t{'after a matmul' if after_matmul else 'alone'}\t"
                  f"{1e6 * statistics.median(times):.0f}", flush=True)


def main():
    rows = {}
    for label, env in SETTINGS:
        full = {k: v for k, v in os.environ.items()
                if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
        out = subprocess.run([sys.executable, __file__, "--child"], env={**full, **env},
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            case, when, us = line.split("\t")
            rows.setdefault((case, when), []).append(us)
    print(f"{'call':42s} {'when':15s}" + "".join(f"{label:>21s}" for label, _ in SETTINGS))
    for (case, when), values in rows.items():
        print(f"{case:42s} {when:15s}" + "".join(f"{v + ' us':>21s}" for v in values))


if __name__ == "__main__":
    child() if sys.argv[1:] == ["--child"] else main()
