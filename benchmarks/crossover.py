"""Where a compiled backend's fused-rows path stops beating its chunked-BLAS path.

    make crossover                                  # both compiled backends
    python benchmarks/crossover.py c                # one of them
    python benchmarks/crossover.py --hot c          # calls back to back
    python benchmarks/crossover.py --tiny           # Numba's rows one at a time vs in blocks
    python benchmarks/crossover.py --own [c|numba]  # own products vs BLAS's, many classes

Prints median times of the three linear_head paths over a grid of shapes. Each path is timed
after the previous one's threads went to sleep, or with ``--hot`` back to back (as a benchmark
or a training loop calls: BLAS's threads still spinning, which favours BLAS). The thresholds of
``fastbp/backends/tuning.py`` (FUSED_MAX_N, FUSED_MAX_WEIGHTS, FUSED_ANY_N_WEIGHTS,
PARALLEL_MIN_WORK, ...) were chosen from this table (docs/performance.md); rerun it on a new
machine. A second table puts softmax_nll's row blocks beside its column blocks (and the three
bare products) for many classes: ``COLUMN_MIN_ROWS``. A third (``--own``, also run by ``make
crossover``) times the chunked path's products on BLAS, with the scores on fastbp's own kernels,
and (C) with all three on them: ``OWN_SCORES_MIN_WEIGHTS``, ``OWN_BACKWARD_MIN_WEIGHTS``.
"""
import sys
import time

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "tests"))
from cases import variant  # noqa: E402

import fastbp  # noqa: E402
from fastbp.backends import tuning  # noqa: E402
from fastbp.compare import median_time  # noqa: E402


def main(backend, hot=False):
    rng = np.random.default_rng(0)
    print(f"backend {backend!r}{', back to back' if hot else ''}")
    print(f"{'dtype':>7} {'B':>5} {'d':>5} {'n':>5} {'fused us':>10} {'parallel us':>12} "
          f"{'chunked us':>11}  best")
    for dtype, B, d, n in _grid():
        X = rng.standard_normal((B, d)).astype(dtype)
        W = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(dtype)
        b, y = np.zeros(n, dtype), rng.integers(0, n, B)
        row = {}
        for name, path in (("fused", "serial"), ("parallel", "parallel"),
                           ("chunked", "chunked")):
            # BLAS threads spin for a while after a call, and OpenMP threads started
            # meanwhile wait for a core (ms): let the previous path's threads sleep
            if not hot:
                time.sleep(0.15)
            with variant(f"{backend}:{path}") as be:
                row[name] = 1e6 * median_time(
                    lambda: fastbp.linear_head(X, W, b, y, backend=be), 25 if hot else 9)
        best = min(row, key=row.get)
        print(f"{dtype:>7} {B:>5} {d:>5} {n:>5} {row['fused']:>10.1f} "
              f"{row['parallel']:>12.1f} {row['chunked']:>11.1f}  {best}")


def _grid():
    """float64 over the small shapes where the tiny-call windows are set, then both dtypes over
    the few-classes shapes (C, C1k, M and K's widths; n up to 128)."""
    for B in (8, 64, 256, 1024):
        for d in (16, 32, 64, 512, 3072):
            for n in (3, 10, 16, 32, 64, 128):
                yield "float64", B, d, n
    for dtype in ("float32", "float64"):
        for B in (256, 512, 1024):
            for d in (784, 1024, 3072):
                for n in (10, 16, 32, 64, 100):
                    yield dtype, B, d, n


def columns(backend):
    """Row blocks against column blocks, rows per block of scores first (ms)."""
    rng = np.random.default_rng(0)
    print(f"backend {backend!r}, softmax_nll, {fastbp.config.score_block_bytes >> 20} MiB "
          "blocks of scores")
    print(f"{'B':>5} {'d':>5} {'n':>6} {'dtype':>7} {'rows/block':>10} {'row blocks ms':>13} "
          f"{'column blocks ms':>16} {'bare ms':>8}")
    saved = tuning.COLUMN_MIN_ROWS
    for B, d, n, dtype in ((256, 512, 100000, "float32"), (1024, 512, 49152, "float32"),
                           (512, 256, 24576, "float64"), (1024, 512, 32000, "float32"),
                           (512, 256, 16000, "float64"), (1024, 1024, 16000, "float32")):
        X = rng.standard_normal((B, d)).astype(dtype)
        W = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(dtype)
        b, y = np.zeros(n, dtype), rng.integers(0, n, B)
        out = fastbp.Grads(None, np.empty_like(W), np.empty_like(b), np.empty_like(X))
        S = np.empty((B, n), dtype)
        times = []
        for min_rows in (0, 1 << 62):        # row blocks always, column blocks always
            tuning.COLUMN_MIN_ROWS = min_rows
            time.sleep(0.15)
            times.append(1e3 * median_time(
                lambda: fastbp.linear_head(X, W, b, y, out=out, backend=backend), 5))
        tuning.COLUMN_MIN_ROWS = saved

        def bare():
            np.matmul(X, W.T, out=S)
            np.matmul(S.T, X, out=out.dW)
            np.matmul(S, W, out=out.dX)
        time.sleep(0.15)
        rows = tuning.default_chunk_rows(n, X.itemsize)
        print(f"{B:>5} {d:>5} {n:>6} {dtype:>7} {rows:>10} {times[0]:>13.1f} {times[1]:>16.1f} "
              f"{1e3 * median_time(bare, 5):>8.1f}")


def tiny_rows():
    """Numba's fused rows one at a time (linear_rows_tiny) against its blocks of four
    (linear_rows) on one thread, softmax_nll, ns per call of the kernel alone: where
    FUSED_TINY_SCORES (B n) sits."""
    import numba
    import fastbp.backends.numba as nk
    from fastbp.backends.numba import linear

    @numba.njit
    def calls(tiny, reps, X, W, b, dW, db, dX, pack):
        total = 0.0
        for _ in range(reps):
            if tiny:
                total += linear.linear_rows_tiny(pack, X, W, b, 1.0, 0, len(X), dW, db, dX)[0]
            else:
                total += linear.linear_rows(pack, X, W, b, 1.0, 0, len(X), dW, db, dX)[0]
        return total

    rng = np.random.default_rng(0)
    print(f"{'dtype':>7} {'B':>4} {'d':>4} {'n':>4} {'B n':>5} {'one at a time ns':>16} "
          f"{'blocks ns':>10}")
    for dtype in ("float64", "float32"):
        for B in (5, 16, 64):
            for n, d in ((3, 4), (3, 64), (10, 8), (4, 32), (10, 64), (32, 8)):
                X = rng.standard_normal((B, d)).astype(dtype)
                W = rng.standard_normal((n, d)).astype(dtype)
                b, y = np.zeros(n, dtype), rng.integers(0, n, B)
                pack = nk._pack("softmax_nll", X, y, {})
                out = (np.zeros_like(W), np.zeros_like(b), np.empty_like(X))
                reps = 100000 // B
                ns = [1e9 / reps * median_time(lambda: calls(t, reps, X, W, b, *out, pack), 5)
                      for t in (True, False)]
                print(f"{dtype:>7} {B:>4} {d:>4} {n:>4} {B * n:>5} {ns[0]:>16.0f} {ns[1]:>10.0f}")


def own(backend):
    """The chunked path (softmax_nll, default score budget) with its products on BLAS, with the
    scores on fastbp's own kernels ("scores"), and with all three on them ("all", C only), ms;
    the best of them, and what tuning.own_products picks ("columns": the budget holds too few
    rows, column blocks run, own products or not)."""
    from fastbp._dispatch import backend_module
    T = backend_module(backend).TUNING
    modes = {"blas": (1 << 62, 1 << 62), "scores": (0, 1 << 62), "all": (0, 0)}
    if backend != "c":
        del modes["all"]
    rng = np.random.default_rng(0)
    print(f"backend {backend!r}, softmax_nll, chunked path, ms")
    print(f"{'dtype':>7} {'B':>5} {'d':>5} {'n':>6} {'n d':>9} "
          + " ".join(f"{m:>8}" for m in modes) + "  best    picks")
    saved = T.OWN_SCORES_MIN_WEIGHTS, T.OWN_BACKWARD_MIN_WEIGHTS
    isas, T.OWN_ISAS = T.OWN_ISAS, tuning.ISAS          # measure the own products on any ISA
    for dtype in ("float32", "float64"):
        for B, d, n in ((256, 256, 300), (1024, 256, 1000), (1024, 512, 1000),
                        (256, 1024, 4000), (1024, 512, 4000), (1024, 256, 16000),
                        (1024, 512, 16000), (1024, 512, 32000), (256, 256, 65536)):
            X = rng.standard_normal((B, d)).astype(dtype)
            W = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(dtype)
            b, y = np.zeros(n, dtype), rng.integers(0, n, B)
            out = fastbp.Grads(None, np.empty_like(W), np.empty_like(b), np.empty_like(X))
            row = {}
            for mode, (scores, backward) in modes.items():
                T.OWN_SCORES_MIN_WEIGHTS, T.OWN_BACKWARD_MIN_WEIGHTS = scores, backward
                with variant(f"{backend}:chunked") as be:
                    row[mode] = 1e3 * median_time(
                        lambda: fastbp.linear_head(X, W, b, y, out=out, backend=be), 5)
            T.OWN_SCORES_MIN_WEIGHTS, T.OWN_BACKWARD_MIN_WEIGHTS = saved
            T.OWN_ISAS = isas                      # what the plan picks on this host
            picks = tuning.own_products(T, np.dtype(dtype), n, d)
            T.OWN_ISAS = tuning.ISAS
            picks = "all" if picks == 3 else "scores" if picks else "blas"
            if tuning.score_blocks("softmax_nll", B, n, X.itemsize, None, {})[1] < n:
                picks = "columns"            # (column blocks: no own products, rows alike)
            print(f"{dtype:>7} {B:>5} {d:>5} {n:>6} {n * d:>9} "
                  + " ".join(f"{t:>8.1f}" for t in row.values())
                  + f"  {min(row, key=row.get):<7} {picks}")
    T.OWN_ISAS = isas


if __name__ == "__main__":
    if "--tiny" in sys.argv[1:]:
        tiny_rows()
        sys.exit()
    if "--own" in sys.argv[1:]:
        for name in [a for a in sys.argv[1:] if a != "--own"] or ["numba", "c"]:
            own(name)
        sys.exit()
    hot = "--hot" in sys.argv[1:]
    names = [a for a in sys.argv[1:] if a != "--hot"]
    for name in names or [b for b in ("numba", "c") if b in fastbp.available_backends()]:
        main(name, hot)
        if not hot:
            columns(name)
