"""linear_head forward+backward through the public API, per backend, beside bare BLAS.

Groups: one per (head, shape preset); every row of a group is measured in the same run.
``make bench`` times them; ``make test`` runs each once with --benchmark-disable.
"""
import functools

import numpy as np
import pytest
from conftest import (assert_matches_reference, checked_run, linear_data, peak_extra_bytes,
                      peak_extra_rss)

import fastbp
from fastbp.presets import SHAPES

HEADS = ("softmax_nll", "multiclass_hinge", "sigmoid_l2")
# (head, shape, dtype): the presets in their dtype; the few-classes shapes (C, C1k, M, K) in
# both, C with every head
FEW = [(h, "C", "float32") for h in HEADS] + [
    ("softmax_nll", s, t) for s in ("C1k", "M", "K") for t in ("float32", "float64")]
CASES = [(h, s, SHAPES[s][3]) for s in ("T", "D", "C") for h in HEADS] + FEW + [
    ("softmax_nll", s, SHAPES[s][3]) for s in ("V", "P", "L")]
# Rows "<backend>, <variant>": V at other score budgets (a fraction of its B x n scores), P
# (a trained model's peaked softmax) with filter_eps="auto"
VARIANTS = {"score budget 1/16": ("V", {}, 1 / 16), "score budget 1/4": ("V", {}, 1 / 4),
            "filter_eps auto": ("P", {"filter_eps": "auto"}, None)}


def reference(head, shape, dtype=None):
    """The NumPy reference's Grads for a (head, shape, dtype), computed once per session."""
    return _reference(head, shape, dtype or SHAPES[shape][3])


@functools.lru_cache(maxsize=None)
def _reference(head, shape, dtype):
    X, W, b, target = linear_data(shape, head, dtype)
    return fastbp.linear_head(X, W, b, target, head, backend="numpy")


def _group(head, shape, dtype=None):
    B, d, n, preset_dtype = SHAPES[shape]
    return f"linear_head {head} {shape} (B={B}, d={d}, n={n}, {dtype or preset_dtype})"


@pytest.mark.parametrize("backend", fastbp.available_backends())
@pytest.mark.parametrize("head,shape,dtype", CASES)
def test_linear_head(benchmark, backend, head, shape, dtype):
    X, W, b, target = linear_data(shape, head, dtype)
    benchmark.group = _group(head, shape, dtype)
    out = fastbp.Grads(None, np.empty_like(W), np.empty_like(b), np.empty_like(X))

    def call():
        return fastbp.linear_head(X, W, b, target, head, out=out, backend=backend)

    benchmark.extra_info["flops"] = 6 * X.shape[0] * X.shape[1] * W.shape[0]     # 3 products
    want = reference(head, shape, dtype)
    checked_run(benchmark, call, lambda got: assert_matches_reference(got, want, X.dtype))
    _memory(benchmark, call, shape, head, backend)      # (after the first call compiled)


def _memory(benchmark, call, shape, head, backend, options=None):
    """The row's peak extra memory, when it is timed (each figure costs one call more): at the
    large shapes as the process's resident peak, in a fresh process (tracemalloc does not see
    C's malloc, nor a peer's allocator); ``backend`` may be a peer's name there."""
    if benchmark.disabled:
        return
    X, W = linear_data(shape, head)[:2]
    if shape in ("V", "P", "L"):
        benchmark.extra_info["peak_extra_bytes"] = peak_extra_rss(
            shape, head, backend, options, fastbp.config.score_block_bytes)
        benchmark.extra_info["peak_extra_method"] = "ru_maxrss"
    else:
        benchmark.extra_info["peak_extra_bytes"] = peak_extra_bytes(call)
    benchmark.extra_info["score_bytes"] = X.shape[0] * W.shape[0] * X.dtype.itemsize


@pytest.mark.parametrize("backend", [b for b in fastbp.available_backends() if b != "numpy"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_linear_head_variant(benchmark, backend, variant, monkeypatch):
    """Exact variants match the reference; filter_eps's dW and dX are within 1e-4 relative
    (Frobenius) of it, and the share of (row block, class) tiles it skipped is recorded."""
    shape, options, budget = VARIANTS[variant]
    X, W, b, target = linear_data(shape)
    score_bytes = X.shape[0] * W.shape[0] * X.dtype.itemsize
    if budget:
        monkeypatch.setattr(fastbp.config, "score_block_bytes", int(budget * score_bytes))
    benchmark.group = _group("softmax_nll", shape)
    out = fastbp.Grads(None, np.empty_like(W), np.empty_like(b), np.empty_like(X))

    def call():
        return fastbp.linear_head(X, W, b, target, out=out, backend=backend, **options)

    want = reference("softmax_nll", shape)

    def check(got):
        if "filter_eps" not in options:
            assert_matches_reference(got, want, X.dtype)
            return
        assert got.loss == pytest.approx(want.loss, rel=1e-5)
        for name in ("dW", "dX"):
            a, c = getattr(got, name), getattr(want, name)
            error = float(np.linalg.norm(a - c) / np.linalg.norm(c))
            assert error <= 1e-4, (name, error)
            benchmark.extra_info[f"relative_error_{name}"] = error

    checked_run(benchmark, call, check)
    if "filter_eps" in options and not benchmark.disabled:
        benchmark.extra_info["skipped_tiles"] = skipped_tiles(X, W, b, target, "auto")
    _memory(benchmark, call, shape, "softmax_nll", backend, options)


def skipped_tiles(X, W, b, target, filter_eps):
    """The share of (row block, class) tiles filter_eps's rule (reference.active_classes) skips
    in the row blocks linear_head takes by default, from the reference's gradients."""
    from fastbp.backends.reference import active_classes
    from fastbp.backends.tuning import default_chunk_rows
    eps = fastbp._checks.filter_option("softmax_nll", filter_eps, X.dtype)
    chunk, skipped, tiles = default_chunk_rows(W.shape[0], X.dtype.itemsize), 0, 0
    for lo in range(0, len(X), chunk):
        _, G = fastbp.softmax_nll(X[lo:lo + chunk] @ W.T + b, target[lo:lo + chunk],
                                  reduction="sum", backend="numpy")
        skipped += int((~active_classes(G, np.full(len(G), eps))).sum())
        tiles += W.shape[0]
    return skipped / tiles


@pytest.mark.parametrize("shape,dtype", sorted({(s, t) for _, s, t in CASES}))
def test_bare_blas(benchmark, shape, dtype):
    """The floor: the three matrix products X W^T, dS^T X, dS W (NumPy, outputs preallocated),
    in every group of softmax_nll (and of C's other heads)."""
    X, W, _, _ = linear_data(shape, dtype=dtype)
    dS = np.full((X.shape[0], W.shape[0]), 0.5, X.dtype)
    S, dW, dX = np.empty_like(dS), np.empty_like(W), np.empty_like(X)
    benchmark.group = _group("softmax_nll", shape, dtype)

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
