"""linear_head forward+backward through the public API, per backend, beside bare BLAS.

Groups: one per (head, shape preset); every row of a group is measured in the same run.
``make bench`` times them; ``make test`` runs each once with --benchmark-disable.
"""
import functools

import numpy as np
import pytest
from conftest import assert_matches_reference, peak_extra_bytes, peak_extra_rss

import fastbp
from fastbp.presets import SHAPES, linear_data

HEADS = ("softmax_nll", "multiclass_hinge", "sigmoid_l2")
CASES = [(h, s) for s in ("T", "D", "C") for h in HEADS] + [("softmax_nll", "V"), ("softmax_nll", "L")]


@functools.lru_cache(maxsize=None)
def reference(head, shape):
    """The NumPy reference's Grads for a (head, shape), computed once per session."""
    X, W, b, target = linear_data(shape, head)
    return fastbp.linear_head(X, W, b, target, head, backend="numpy")


def _group(head, shape):
    B, d, n, dtype = SHAPES[shape]
    return f"linear_head {head} {shape} (B={B}, d={d}, n={n}, {dtype})"


@pytest.mark.parametrize("backend", fastbp.available_backends())
@pytest.mark.parametrize("head,shape", CASES)
def test_linear_head(benchmark, backend, head, shape):
    X, W, b, target = linear_data(shape, head)
    benchmark.group = _group(head, shape)
    out = fastbp.Grads(None, np.empty_like(W), np.empty_like(b), np.empty_like(X))

    def call():
        return fastbp.linear_head(X, W, b, target, head, out=out, backend=backend)

    assert_matches_reference(call(), reference(head, shape), X.dtype)     # (compiles once)
    if backend == "c" and shape in ("V", "L") and not benchmark.disabled:
        # tracemalloc does not see C's malloc: the process's resident peak instead
        benchmark.extra_info["peak_extra_bytes"] = peak_extra_rss(shape, head, backend)
        benchmark.extra_info["peak_extra_method"] = "ru_maxrss"
    else:
        benchmark.extra_info["peak_extra_bytes"] = peak_extra_bytes(call)
    benchmark.extra_info["score_bytes"] = X.shape[0] * W.shape[0] * X.dtype.itemsize
    benchmark(call)


@pytest.mark.parametrize("shape", ["T", "D", "C", "V", "L"])
def test_bare_blas(benchmark, shape):
    """The floor: the three matrix products X W^T, dS^T X, dS W (NumPy, outputs preallocated)."""
    X, W, _, _ = linear_data(shape)
    dS = np.full((X.shape[0], W.shape[0]), 0.5, X.dtype)
    S, dW, dX = np.empty_like(dS), np.empty_like(W), np.empty_like(X)
    benchmark.group = _group("softmax_nll", shape)

    def three_gemms():
        np.matmul(X, W.T, out=S)
        np.matmul(dS.T, X, out=dW)
        np.matmul(dS, W, out=dX)

    benchmark(three_gemms)


@pytest.mark.parametrize("part", [1, 8, 4])
def test_bare_blas_row_blocks(benchmark, part):
    """V's floor for a path that holds 1/part of the scores: the three products in blocks of
    B/part rows, dW accumulated by the GEMM itself (beta = 1). All three go to SciPy's BLAS
    (NumPy has no beta; two BLAS pools taking turns would slow each other), so part = 1, the
    same products whole, is the row to compare with. Not a path of fastbp: the bound its row
    blocks cannot beat."""
    from scipy.linalg.blas import get_blas_funcs
    X, W, _, _ = linear_data("V")
    B, n = X.shape[0], W.shape[0]
    r = B // part
    dS = np.full((r, n), 0.5, X.dtype)
    # Fortran-order views of the C-order arrays: S^T (n, r), dW^T (d, n), dX^T (d, B)
    S, dW, dX = np.empty_like(dS), np.empty_like(W), np.empty_like(X)
    gemm = get_blas_funcs("gemm", dtype=X.dtype)
    benchmark.group = _group("softmax_nll", "V")

    def blocks():
        for i in range(0, B, r):
            Xc = X[i:i + r]
            gemm(1.0, W.T, Xc.T, c=S.T, trans_a=1, overwrite_c=1)               # S = Xc W^T
            gemm(1.0, Xc.T, dS.T, beta=float(i > 0), c=dW.T, trans_b=1,         # dW += dS^T Xc
                 overwrite_c=1)
            gemm(1.0, W.T, dS.T, c=dX[i:i + r].T, overwrite_c=1)                # dXc = dS W

    blocks()
    # every row of dW is 0.5 times X's column sums, every row of dX 0.5 times W's: in place
    assert np.allclose(dW, 0.5 * X.sum(0, dtype=np.float64), rtol=1e-3, atol=1e-3)
    assert np.allclose(dX, 0.5 * W.sum(0, dtype=np.float64), rtol=1e-3, atol=1e-3)
    benchmark(blocks)
