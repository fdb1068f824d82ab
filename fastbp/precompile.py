"""``fastbp precompile``: the Numba backend's kernels compiled into its disk cache ahead of use.

Numba compiles a kernel at its first call for each type signature, about a second each, and
keeps it on disk (backends/numba/_jit.py). Compiling them all up front -- in a container
image, before a test session, before a job fans out over many processes -- spreads that cost
over the cores: the kernel families below run their first calls in parallel processes, each
filling the shared cache, so no later process compiles what one of them did. Every family
calls the public functions with small inputs of both dtypes on every path the shapes choose;
the kernels' types depend on the dtypes and the number of layers, not on the values.
"""
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

DTYPES = (np.float32, np.float64)


def _heads(rows, n):
    import fastbp
    from ._checks import TARGET_KIND
    rng = np.random.default_rng(0)
    for dt in DTYPES:
        S = rng.standard_normal((rows, n)).astype(dt)
        y, Z = rng.integers(0, n, rows), rng.random((rows, n)).astype(dt)
        for head in fastbp.HEADS:
            if head == "binary_hinge":
                args = (S[:, 0].copy(), np.where(y % 2, 1, -1))
            elif head == "nll":
                args = ((np.abs(S) / (np.abs(S).sum(1, keepdims=True) + 1)).astype(dt), y)
            else:
                args = (S, y if TARGET_KIND[head].startswith("labels") else Z)
            for reduction in ("mean", "none"):
                getattr(fastbp, head)(*args, reduction=reduction, backend="numba")
        fastbp.softmax_nll(S, Z / Z.sum(1, keepdims=True), backend="numba")
        fastbp.softmax_nll(S, y, softcap=5.0, z_loss=1e-4, backend="numba")


def heads():
    """Every head on a few rows (one thread)."""
    _heads(7, 5)


def heads_parallel():
    """Every head on enough scores for fixed row blocks over the threads."""
    _heads(256, 600)


def _linear(shapes, **options):
    import fastbp
    rng = np.random.default_rng(0)
    for dt in DTYPES:
        for B, d, n in shapes:
            X, W = rng.standard_normal((B, d)).astype(dt), rng.standard_normal((n, d)).astype(dt)
            b, y = np.zeros(n, dt), rng.integers(0, n, B)
            fastbp.linear_head(X, W, b, y, backend="numba")          # the tiny call's entry
            fastbp.linear_head(X, W, b, y, reduction="sum", backend="numba", **options)
            fastbp.linear_head(X, W, None, y, need_dX=False, reduction="sum", backend="numba")


def linear_fused():
    """linear_head's fused rows: a few scores, one thread, all threads."""
    _linear([(5, 4, 3), (64, 16, 10), (512, 2048, 10)])


def linear_blas():
    """linear_head's BLAS paths: one block, row blocks (filtered too), column blocks."""
    _linear([(64, 64, 40), (300, 64, 20000)])
    _linear([(300, 64, 20000)], filter_eps=1e-3)
    _linear([(2000, 16, 1000)], chunk_rows=512)


def layers():
    """linear_act_forward / backward for every activation, and mlp_loss_grad."""
    import fastbp
    rng = np.random.default_rng(0)
    for dt in DTYPES:
        X = rng.standard_normal((16, 8)).astype(dt)
        for act in fastbp.ACTIVATIONS:
            W = rng.standard_normal((12, 8)).astype(dt)
            A, cache = fastbp.linear_act_forward(X, W, np.zeros(12, dt), act, backend="numba")
            fastbp.linear_act_backward(np.ones_like(A), cache, backend="numba")
        params = [(rng.standard_normal((6, 8)).astype(dt), np.zeros(6, dt)),
                  (rng.standard_normal((3, 6)).astype(dt), np.zeros(3, dt))]
        fastbp.mlp_loss_grad(X, params, rng.integers(0, 3, 16), backend="numba")


def training():
    """A compiled SGD and Adam step and epoch for networks of 1 to 3 layers."""
    import fastbp
    rng = np.random.default_rng(0)
    for dt in DTYPES:
        X, y = rng.standard_normal((32, 8)).astype(dt), rng.integers(0, 3, 32)
        for sizes in ([8, 3], [8, 6, 3], [8, 6, 5, 3]):
            for opt in (fastbp.SGD(momentum=0.9), fastbp.Adam()):
                net = fastbp.MLP(sizes, dtype=dt, backend="numba")
                net.step(X, y, optimizer=opt)
                net.epoch(X, y, optimizer=opt, batch_size=16)


FAMILIES = (linear_blas, linear_fused, heads_parallel, training, heads, layers)


def _run(name):
    start = time.perf_counter()
    globals()[name]()
    return name, time.perf_counter() - start


def precompile(jobs=None, report=print):
    """Run every family's first calls in ``jobs`` processes (default: the cores, at most one
    per family); returns {family: seconds}. Nothing to do when Numba runs interpreted."""
    import numba
    if numba.config.DISABLE_JIT:
        report("precompile: NUMBA_DISABLE_JIT is set, nothing is compiled")
        return {}
    from ._dispatch import _cpu_count
    jobs = min(jobs or _cpu_count(), len(FAMILIES))
    took = {}
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        for name, seconds in pool.map(_run, [f.__name__ for f in FAMILIES]):
            took[name] = seconds
            report(f"precompile: {name} {seconds:.1f} s")
    return took


if __name__ == "__main__":
    precompile(int(os.environ.get("FASTBP_PRECOMPILE_JOBS", "0")) or None)
