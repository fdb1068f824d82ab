"""Hypothesis property tests: random shapes (B = 0 and 1, n = 1, d = 1 included), random values
and scales, both dtypes, every backend against the reference, and invariants of the math."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastbp
from fastbp.backends import tuning
from cases import (BACKENDS, VARIANTS, assert_close, assert_linear_grads_close, cast_floats,
                   column_blocks, head_cases, make_head_inputs, variant)
from test_layers import alpha_for, make_net
from test_linear_head import make_linear

# the C backend's tests, which `make test-asan` runs under the sanitizers
pytestmark = pytest.mark.asan

CASES = head_cases()
dims = st.integers(1, 9)
dtypes = st.sampled_from([np.float32, np.float64])
seeds = st.integers(0, 2**32 - 1)


@given(case=st.sampled_from(CASES), B=st.integers(0, 12), n=dims, dtype=dtypes, seed=seeds,
       scale=st.sampled_from([1e-3, 1.0, 30.0]),
       reduction=st.sampled_from(["mean", "sum", "none"]))
def test_heads_every_backend_and_dtype_match_float64_reference(case, B, n, dtype, seed, scale,
                                                                reduction):
    head, spec = case
    if head == "multiclass_hinge" or spec["target"] == "labels":
        n = max(n, 2)   # ignore_index=1 and hinge margins need a second class
    S, target, opts = make_head_inputs(head, spec, B, n, np.float64, np.random.default_rng(seed),
                                       scale=1.0 if head == "nll" else scale)
    want = getattr(fastbp, head)(S, target, reduction=reduction, backend="numpy", **opts)
    args = cast_floats(dtype, S, target, options=opts)
    for backend in BACKENDS:
        got = getattr(fastbp, head)(*args[:2], reduction=reduction, backend=backend, **args[2])
        if reduction == "mean" and np.isnan(want[0]):    # every row weighted 0 (or B = 0)
            assert np.isnan(got[0])
        else:
            assert_close(got[0], want[0], dtype)
        assert_close(got[1], want[1], dtype)


@given(case=st.sampled_from(CASES), B=st.integers(0, 20), d=dims, n=dims, dtype=dtypes,
       seed=seeds, chunk=st.integers(1, 21))
def test_linear_head_any_chunking_matches_the_head_on_full_scores(case, B, d, n, dtype, seed,
                                                                   chunk):
    head, spec = case
    n = max(n, 2) if spec["target"] == "labels" else n
    X, W, b, target, opts = make_linear(head, spec, B, d, n, np.float64,
                                        np.random.default_rng(seed))
    loss, dS = getattr(fastbp, head)(X @ W.T + b, target, reduction="sum", backend="numpy",
                                     **opts)
    args = cast_floats(dtype, X, W, b, target, options=opts)
    for name in VARIANTS:
        with variant(name) as backend:
            g = fastbp.linear_head(*args[:4], head, chunk_rows=chunk, reduction="sum",
                                   backend=backend, **args[4])
        assert_linear_grads_close(g, loss, dS, X, W, dtype)


@given(case=st.sampled_from([c for c in CASES if c[0] == "softmax_nll"]), B=st.integers(0, 20),
       d=dims, n=st.integers(2, 13), dtype=dtypes, seed=seeds, rows=st.integers(1, 21),
       cols=st.integers(1, 12), scale=st.sampled_from([1.0, 1e4]))
def test_softmax_any_column_blocking_matches_the_reference(case, B, d, n, dtype, seed, rows,
                                                           cols, scale):
    """The compiled backends' column blocks (any panel and block size, partial ones included),
    with logits up to |s| ~ 1e4 in float64 (whose row maxima move from block to block)."""
    _, spec = case
    X, W, b, target, opts = make_linear("softmax_nll", spec, B, d, n, np.float64,
                                        np.random.default_rng(seed))
    W *= scale if dtype == np.float64 else 1.0
    loss, dS = fastbp.softmax_nll(X @ W.T + b, target, backend="numpy", **opts)
    args = cast_floats(dtype, X, W, b, target, options=opts)
    for backend in (b for b in BACKENDS if b != "numpy"):
        with variant(f"{backend}:columns"):    # restores score_blocks on exit
            tuning.score_blocks = column_blocks(rows, min(cols, n - 1))
            got = fastbp.linear_head(*args[:4], backend=backend, **args[4])
        assert_linear_grads_close(got, loss, dS, X, W, dtype)


@given(activation=st.sampled_from(fastbp.ACTIVATIONS), B=st.integers(1, 8),
       widths=st.lists(dims, min_size=2, max_size=4), dtype=dtypes, seed=seeds)
def test_mlp_every_backend_matches_reference(activation, B, widths, dtype, seed):
    rng = np.random.default_rng(seed)
    alpha = alpha_for(activation)
    params = make_net(widths, activation, np.float64, rng, k=alpha or 2)
    X = rng.standard_normal((B, widths[0]))
    y = rng.integers(0, widths[-1], B)
    want = fastbp.mlp_loss_grad(X, params, y, activation=activation, alpha=alpha,
                                backend="numpy")
    X_d = cast_floats(dtype, X)[0]
    p_d = [tuple(cast_floats(dtype, W, b_)) for W, b_ in params]
    for name in VARIANTS:
        with variant(name) as backend:
            loss, grads = fastbp.mlp_loss_grad(X_d, p_d, y, activation=activation,
                                               alpha=alpha, backend=backend)
        assert_close(loss, want[0], dtype)
        for got, exp in zip(grads, want[1]):
            assert_close(got[0], exp[0], dtype)
            assert_close(got[1], exp[1], dtype)


@given(B=st.integers(1, 10), n=st.integers(1, 10), seed=seeds,
       eps=st.sampled_from([0.0, 0.1, 1.0]), scale=st.sampled_from([1.0, 100.0, 1e4]))
def test_softmax_and_hinge_gradient_rows_sum_to_zero(B, n, seed, eps, scale):
    """Softmax: (sum c) p - c sums to 0 per row; hinge: g_y = -sum_{j != y} g_j."""
    rng = np.random.default_rng(seed)
    S, y = scale * rng.standard_normal((B, n)), rng.integers(0, n, B)
    _, dS = fastbp.softmax_nll(S, y, label_smoothing=eps, reduction="sum")
    np.testing.assert_allclose(dS.sum(axis=1), 0, atol=1e-12)
    _, dS = fastbp.multiclass_hinge(S, y, reduction="sum")
    np.testing.assert_array_equal(dS.sum(axis=1), 0)


@given(case=st.sampled_from(CASES), B=st.integers(1, 8),
       n=st.integers(2, 6), seed=seeds)
def test_losses_are_non_negative(case, B, n, seed):
    head, spec = case
    S, target, opts = make_head_inputs(head, spec, B, n, np.float64, np.random.default_rng(seed))
    loss, _ = getattr(fastbp, head)(S, target, reduction="none", **opts)
    assert np.all(loss >= -1e-12)
