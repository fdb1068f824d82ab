"""linear_head forward+backward through the public API, per backend, beside bare BLAS.

Groups: one per (head, shape preset); every row of a group is measured in the same run.
``make bench`` times them; ``make test`` runs each once with --benchmark-disable.
"""
import numpy as np
import pytest
from conftest import peak_extra_bytes, peak_extra_rss

import fastbp
from fastbp.presets import SHAPES, linear_data

HEADS = ("softmax_nll", "multiclass_hinge", "sigmoid_l2")
CASES = [(h, s) for s in ("T", "D", "C") for h in HEADS] + [("softmax_nll", "V"), ("softmax_nll", "L")]


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

    g = call()                       # warm-up (compiles once)
    if backend == "c" and shape in ("V", "L") and not benchmark.disabled:
        # tracemalloc does not see C's malloc: the process's resident peak instead
        benchmark.extra_info["peak_extra_bytes"] = peak_extra_rss(shape, head, backend)
        benchmark.extra_info["peak_extra_method"] = "ru_maxrss"
    else:
        benchmark.extra_info["peak_extra_bytes"] = peak_extra_bytes(call)
    benchmark.extra_info["score_bytes"] = X.shape[0] * W.shape[0] * X.dtype.itemsize
    benchmark(call)
    assert np.isfinite(g.loss)


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
