"""The C fused rows' kernel sets (csrc/fused.h) side by side on this host, one thread.

    python benchmarks/kernel_sets.py                  # C, C1k, M, D in both dtypes
    python benchmarks/kernel_sets.py --groups C,M --dtypes float32

For each shape: every kernel set the CPU runs (its ISA's and each lesser one, and "wide", the
AVX-512 set's tiles compiled for the baseline ISA), and the chunked path on BLAS's products,
each timed in turn within every round (so a host that slows down slows them all), the minimum
over the rounds; efficiency as scaling.py's: 6 B d n flops / time / the GEMM rate measured in
this process. Results are checked equal to the chunked path's before they are timed.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from cases import variant  # noqa: E402
from scaling import gemm_rates, host, host_line, provenance, provenance_line  # noqa: E402

import fastbp  # noqa: E402
from fastbp.backends import tuning  # noqa: E402

SHAPES = {"C": (256, 3072, 10), "C1k": (1024, 3072, 10), "M": (512, 784, 10),
          "D": (64, 64, 10)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups", default=",".join(SHAPES))
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)
    fastbp.set_num_threads(1)
    c = fastbp._dispatch.backend_module("c")
    isa = tuning.host_isa()
    sets = [*tuning.ISAS[tuning.ISAS.index(isa):], "wide"]
    h = host()
    rates = gemm_rates()
    print(f"Host: {host_line(h)}; one thread; GEMM rate "
          f"sgemm {rates['float32'] / 1e9:.0f}, dgemm {rates['float64'] / 1e9:.0f} GFLOP/s")
    print(provenance_line(provenance()))
    print(f"\n| shape | dtype | {' | '.join(sets)} | chunked (BLAS) |")
    print("|---|---|" + "---|" * (len(sets) + 1))
    for dtype in args.dtypes.split(","):
        for name in args.groups.split(","):
            B, d, n = SHAPES[name]
            rng = np.random.default_rng(0)
            X = rng.standard_normal((B, d)).astype(dtype)
            W = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(dtype)
            b, y = np.zeros(n, dtype), rng.integers(0, n, B)
            out = fastbp.Grads(None, np.empty_like(W), np.empty_like(b), np.empty_like(X))

            def call(backend="c"):
                return fastbp.linear_head(X, W, b, y, out=out, backend=backend)
            times = {s: [] for s in [*sets, "chunked"]}
            with variant("c:chunked") as be:
                want = [np.copy(a) for a in call(be)]
            for s in sets:
                c.set_tile(s)
                got = call()
                for a, w in zip(got, want):
                    np.testing.assert_allclose(a, w, rtol=1e-3 if dtype == "float32" else 1e-9,
                                               atol=1e-5 * np.abs(w).max())
            for _ in range(args.rounds):
                for s in times:
                    if s == "chunked":
                        with variant("c:chunked") as be:
                            runs = [_timed(lambda: call(be)) for _ in range(3)]
                    else:
                        c.set_tile(s)
                        runs = [_timed(call) for _ in range(3)]
                    times[s].append(min(runs))
            c.set_tile(None)
            flops = 6 * B * d * n
            cells = [f"{min(t) * 1e6:,.0f} µs, eff {flops / min(t) / rates[dtype]:.2f}"
                     for t in times.values()]
            print(f"| {name} ({B} × {d} × {n}) | {dtype} | {' | '.join(cells)} |")


def _timed(f):
    f()
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
