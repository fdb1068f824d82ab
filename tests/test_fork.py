"""A process forked after threaded calls (multiprocessing's "fork", PyTorch DataLoader workers,
gunicorn) runs every compiled kernel and gets the parent's bits: no hang (libgomp waiting for a
pool the child lacks) and no abort (Numba's OpenMP layer). Each case runs in a fresh interpreter
with a timeout, so a regression fails instead of hanging the suite."""
import os
import subprocess
import sys
import time

import pytest

import fastbp

pytestmark = pytest.mark.fresh_process      # every test here starts fresh processes

# Under NUMBA_DISABLE_JIT (make test's second pass) Numba runs as plain Python: no threads, no
# compiled memory, nothing for these cases to check.
COMPILED = [pytest.param(b, marks=pytest.mark.skipif(
                b == "numba" and os.environ.get("NUMBA_DISABLE_JIT") == "1",
                reason="NUMBA_DISABLE_JIT: the Numba backend runs interpreted"))
            for b in fastbp.available_backends() if b != "numpy"]

SCRIPT = r"""
import multiprocessing as mp, sys, time
import numpy as np, fastbp

backend, method = sys.argv[1], sys.argv[2]
fastbp.set_backend(backend)
fastbp.set_num_threads(2)


def work(_=None):
    rng = np.random.default_rng(0)
    out = {}
    # linear_head: fused rows (C: on all threads from B n d >= 2^20), BLAS row blocks,
    # softmax_nll's column blocks (a small score budget)
    for name, (B, d, n) in {"fused": (1024, 64, 10), "fused_big": (1024, 1024, 10),
                            "chunked": (512, 300, 40)}.items():
        X, W = rng.standard_normal((B, d)), rng.standard_normal((n, d))
        b, y = rng.standard_normal(n), rng.integers(0, n, B)
        out[name] = fastbp.linear_head(X, W, b, y)
    # the fused rows on all threads, whatever the thresholds pick at this shape
    T = fastbp._dispatch.backend_module(backend).TUNING
    from fastbp.backends.tuning import ISAS
    saved = dict(FUSED_ANY_N_WEIGHTS=T.FUSED_ANY_N_WEIGHTS, FUSED_MAX_N=T.FUSED_MAX_N,
                 PARALLEL_MIN_WORK=T.PARALLEL_MIN_WORK, FUSED_ISAS=T.FUSED_ISAS)
    forced = dict(FUSED_ANY_N_WEIGHTS=0, FUSED_MAX_N=64, PARALLEL_MIN_WORK=0, FUSED_ISAS=ISAS)
    for k, v in forced.items():
        setattr(T, k, v)
    for k in ("FUSED_MIN_WORK", "FUSED_MIN_ROWS"):
        if hasattr(T, k):
            saved[k] = getattr(T, k)
            setattr(T, k, 0)
    X, W = rng.standard_normal((1024, 64)), rng.standard_normal((10, 64))
    out["fused_threads"] = fastbp.linear_head(X, W, None, rng.integers(0, 10, 1024))
    for k, v in saved.items():
        setattr(T, k, v)
    # the chunked path's team on own products, all three (C) or the scores (Numba)
    saved = {k: getattr(T, k) for k in ("OWN_SCORES_MIN_WEIGHTS", "OWN_BACKWARD_MIN_WEIGHTS",
                                        "OWN_ISAS")}
    for k in saved:
        setattr(T, k, ISAS if k == "OWN_ISAS" else 0)
    X, W = rng.standard_normal((256, 64)), rng.standard_normal((600, 64))
    y = rng.integers(0, 600, 256)
    out["own"] = (fastbp.linear_head(X, W, None, y, chunk_rows=64),
                  fastbp.linear_head(X, W, None, y, reduction="none").loss)
    for k, v in saved.items():
        setattr(T, k, v)
    fastbp.config.score_block_bytes = 1 << 14
    X, W = rng.standard_normal((256, 32)), rng.standard_normal((600, 32))
    y = rng.integers(0, 600, 256)
    out["columns"] = fastbp.linear_head(X, W, None, y)
    fastbp.config.score_block_bytes = 12 << 20
    # heads on many scores (the C heads' parallel region from 2^16)
    S, ys = rng.standard_normal((256, 1000)), rng.integers(0, 1000, 256)
    out["softmax_nll"] = fastbp.softmax_nll(S, ys)
    out["sigmoid_focal"] = fastbp.sigmoid_focal(S, rng.random(S.shape))
    # layers, a network, a training step
    A, cache = fastbp.linear_act_forward(X, W[:64], None, "tanh")
    out["layer"] = (A, *fastbp.linear_act_backward(A, cache))
    params = [(0.1 * rng.standard_normal((64, 32)), np.zeros(64)),
              (0.1 * rng.standard_normal((10, 64)), np.zeros(10))]
    out["mlp"] = fastbp.mlp_loss_grad(X, params, y % 10)
    net = fastbp.MLP([32, 64, 10], dtype="float64")
    out["step"] = (net.step(X, y % 10, optimizer=fastbp.Adam()), net.params[0][0])
    return out


def same(a, b):
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if a is None or b is None:
        return a is b
    return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)


if __name__ == "__main__":
    parent = work()
    start = time.perf_counter()
    with mp.get_context(method).Pool(2) as pool:
        children = pool.map_async(work, range(2)).get(timeout=240)
    took = time.perf_counter() - start
    bad = [k for child in children for k in parent if not same(parent[k], child[k])]
    print(f"{backend} {method}: 2 children, {len(parent)} kernels each, {took:.2f} s,",
          "same bits" if not bad else f"DIFFER: {bad}")
    sys.exit(1 if bad else 0)
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("backend", COMPILED)
def test_pool_after_threaded_calls_gets_the_parents_bits(backend, method, tmp_path):
    script = tmp_path / "fork_case.py"
    script.write_text(SCRIPT)
    start = time.perf_counter()
    run = subprocess.run([sys.executable, str(script), backend, method], capture_output=True,
                         text=True, timeout=300)
    print(run.stdout.strip(), f"(whole run {time.perf_counter() - start:.1f} s)")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "same bits" in run.stdout
