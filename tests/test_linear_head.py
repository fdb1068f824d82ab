"""linear_head (api.md s. 2): the fused S = X W^T + b -> head -> backward, for every head and
option, against finite differences, the head on explicit scores, and the naive Jacobian path."""
import numpy as np
import pytest

import fastbp
from cases import assert_close, case_id, cast_floats, head_cases, make_options, make_target

CASES = head_cases()


def make_linear(head, spec, B, d, n, dtype, rng, bias=True):
    n = 1 if head == "binary_hinge" else n
    X = rng.standard_normal((B, d)).astype(dtype)
    W = (0.5 * rng.standard_normal((n, d))).astype(dtype)
    b = (0.1 * rng.standard_normal(n)).astype(dtype) if bias else None
    if head == "nll":   # scores must be probabilities: positive X and W, rows summing below 1
        X, W = np.abs(X) / d, np.abs(W) / (2 * n)
        if b is not None:
            b = np.abs(b) / (4 * n) + 0.01
    target = make_target(head, spec["target"], B, n, dtype, rng)
    return X, W, b, target, make_options(head, spec, B, n, dtype, rng)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gradients_match_finite_differences(case, reduction, linear_backend, rng):
    head, spec = case
    X, W, b, target, opts = make_linear(head, spec, 5, 3, 4, np.float64, rng)
    if opts.get("ignore_index") is not None and (target == opts["ignore_index"]).all():
        target[0] = 0     # every row ignored: the mean loss is nan, no gradient to check

    def f(X, W, b):
        g = fastbp.linear_head(X, W, b, target, head, reduction=reduction, backend=linear_backend, **opts)
        return g.loss, g.dX, g.dW, g.db

    assert fastbp.gradcheck(f, X, W, b) <= 1e-5


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_equals_head_on_explicit_scores(case, linear_backend, dtype, rng):
    """dS from the head, then dW = dS^T X, db = sum dS, dX = dS W."""
    head, spec = case
    X, W, b, target, opts = make_linear(head, spec, 11, 6, 5, dtype, rng)
    for reduction in ("mean", "sum"):
        S = X @ W.T + b
        loss, dS = getattr(fastbp, head)(S, target, reduction=reduction, backend="numpy", **opts)
        g = fastbp.linear_head(X, W, b, target, head, reduction=reduction, backend=linear_backend,
                               **opts)
        assert isinstance(g, fastbp.Grads)
        assert g.dW.dtype == g.db.dtype == g.dX.dtype == dtype
        assert_close(g.loss, loss, dtype)
        assert_close(g.dW, dS.T @ X, dtype)
        assert_close(g.db, dS.sum(0), dtype)
        assert_close(g.dX, dS @ W, dtype)


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 7, 13, 100])
def test_result_does_not_depend_on_chunk_rows(chunk_rows, linear_backend, dtype, rng):
    X, W, b, y, opts = make_linear("softmax_nll", {"target": "labels", "weight": "on",
                                                   "ignore_index": 1, "sample_weight": "on"},
                                   13, 5, 4, dtype, rng)
    whole = fastbp.linear_head(X, W, b, y, chunk_rows=13, backend=linear_backend, **opts)
    part = fastbp.linear_head(X, W, b, y, chunk_rows=chunk_rows, backend=linear_backend, **opts)
    for a, c in zip(part, whole):
        assert_close(a, c, dtype)


def test_backends_match_reference(linear_backend, dtype, rng):
    for head, spec in CASES:
        X, W, b, target, opts = make_linear(head, spec, 9, 4, 3, np.float64, rng)
        want = fastbp.linear_head(X, W, b, target, head, backend="numpy", **opts)
        X_d, W_d, b_d, t_d, o_d = cast_floats(dtype, X, W, b, target, options=opts)
        got = fastbp.linear_head(X_d, W_d, b_d, t_d, head, backend=linear_backend, **o_d)
        for a, c in zip(got, want):
            assert_close(a, c, dtype, case_id((head, spec)))


@pytest.mark.parametrize("B, d, n", [(17, 1030, 11), (9, 520, 3), (33, 17, 12), (8, 8, 1)])
def test_shapes_across_register_blocks_and_k_tiles(B, d, n, linear_backend, dtype, rng):
    """The C fused rows work on 8 rows x 8 lanes at a time and on k tiles of 512: partial
    blocks, partial vectors and several tiles, with and without dX."""
    for head, spec in [("softmax_nll", {"target": "labels"}),
                       ("multiclass_hinge", {"target": "labels"}), ("l1", {"target": "dense"})]:
        n_head = max(n, 2) if spec["target"] == "labels" else n
        X, W, b, target, opts = make_linear(head, spec, B, d, n_head, np.float64, rng)
        want = fastbp.linear_head(X, W, b, target, head, backend="numpy", **opts)
        X_d, W_d, b_d, t_d = cast_floats(dtype, X, W, b, target)
        for need_dX in (True, False):
            got = fastbp.linear_head(X_d, W_d, b_d, t_d, head, need_dX=need_dX,
                                     backend=linear_backend, **opts)
            for name in ("loss", "dW", "db") + (("dX",) if need_dX else ()):
                assert_close(getattr(got, name), getattr(want, name), dtype, f"{head} {name}")
            assert need_dX or got.dX is None


def test_no_bias_and_no_dX(linear_backend, rng):
    X, W, _, y, _ = make_linear("softmax_nll", {"target": "labels"}, 6, 3, 4, np.float64, rng,
                                bias=False)
    g = fastbp.linear_head(X, W, None, y, need_dX=False, backend=linear_backend)
    assert g.db is None and g.dX is None
    full = fastbp.linear_head(X, W, np.zeros(4), y, backend=linear_backend)
    assert_close(g.dW, full.dW, np.float64)
    assert g.loss == pytest.approx(full.loss, rel=1e-12)


def test_out_buffers_are_written(linear_backend, dtype, rng):
    X, W, b, y, _ = make_linear("multiclass_hinge", {"target": "labels"}, 6, 3, 4, dtype, rng)
    want = fastbp.linear_head(X, W, b, y, "multiclass_hinge", backend=linear_backend)
    out = fastbp.Grads(None, np.empty_like(W), np.empty_like(b), np.empty_like(X))
    got = fastbp.linear_head(X, W, b, y, "multiclass_hinge", out=out, backend=linear_backend)
    assert got.dW is out.dW and got.db is out.db and got.dX is out.dX
    for a, c in zip(got[1:], want[1:]):
        np.testing.assert_array_equal(a, c)


def test_empty_batch(linear_backend):
    X, W, b = np.zeros((0, 3)), np.ones((4, 3)), np.zeros(4)
    g = fastbp.linear_head(X, W, b, np.zeros(0, int), reduction="sum", backend=linear_backend)
    assert g.loss == 0.0 and not g.dW.any() and not g.db.any() and g.dX.shape == (0, 3)
    assert np.isnan(fastbp.linear_head(X, W, b, np.zeros(0, int), backend=linear_backend).loss)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_naive_path_equals_fused(case, rng):
    head, spec = case
    X, W, b, target, opts = make_linear(head, spec, 5, 3, 4, np.float64, rng)
    for reduction in ("mean", "sum"):
        want = fastbp.linear_head(X, W, b, target, head, reduction=reduction, backend="numpy",
                                  **opts)
        got = fastbp.naive.linear_head(X, W, b, target, head, reduction=reduction, **opts)
        for a, c in zip(got, want):
            assert_close(a, c, np.float64)
