"""Heads (docs/api.md s. 1): every head x option x reduction against finite differences and against
direct formulas; reductions, out=, stability, empty batches, NaN, backends vs the reference."""
import numpy as np
import pytest

import fastbp
from fastbp._checks import REDUCTIONS
from cases import (BACKENDS, assert_close, case_id, cast_floats, head_cases, make_head_inputs,
                   rotated, rotated_ids)

# the C backend's tests, which `make test-asan` runs under the sanitizers
pytestmark = pytest.mark.asan

CASES = head_cases()
_FD = rotated(CASES, BACKENDS, list(REDUCTIONS))
_REDUCE = rotated(CASES, BACKENDS, ["float64", "float32"])


def call(head, S, target, **kw):
    return getattr(fastbp, head)(S, target, **kw)


@pytest.mark.parametrize("case, backend, reduction", _FD, ids=rotated_ids(_FD))
def test_gradient_matches_finite_differences(case, backend, reduction, rng):
    """Every case on every backend, the reductions in turn."""
    head, spec = case
    S, target, opts = make_head_inputs(head, spec, 6, 4, np.float64, rng)

    def f(S):
        loss, dS = call(head, S, target, reduction=reduction, backend=backend, **opts)
        return np.sum(loss), dS        # "none": d(sum_i L_i)/dS[i] is each row's own gradient

    assert fastbp.gradcheck(f, S) <= 1e-5


@pytest.mark.parametrize("case, backend, dtype", _REDUCE, ids=rotated_ids(_REDUCE))
def test_reductions_agree(case, backend, dtype, rng):
    """sum = sum of "none"; mean = sum / sum(omega); "mean" dS = "sum" dS / sum(omega)."""
    head, spec = case
    dtype = np.dtype(dtype)
    S, target, opts = make_head_inputs(head, spec, 7, 5, dtype, rng)
    l_none, d_none = call(head, S, target, reduction="none", backend=backend, **opts)
    l_sum, d_sum = call(head, S, target, reduction="sum", backend=backend, **opts)
    l_mean, d_mean = call(head, S, target, reduction="mean", backend=backend, **opts)
    assert l_none.shape == (7,) and l_none.dtype == dtype
    assert isinstance(l_sum, float) and isinstance(l_mean, float)
    assert d_sum.dtype == dtype and d_sum.shape == np.shape(S)
    assert_close(l_sum, l_none.astype(np.float64).sum(), dtype)
    assert_close(d_sum, d_none, dtype)
    assert_close(d_mean * (l_sum / l_mean), d_sum, dtype)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_backends_match_reference(case, backend, dtype, rng):
    head, spec = case
    S, target, opts = make_head_inputs(head, spec, 9, 5, np.float64, rng)
    S_d, tgt, cast = cast_floats(dtype, S, target, options=opts)
    for reduction in REDUCTIONS:
        want = call(head, S, target, reduction=reduction, backend="numpy", **opts)
        got = call(head, S_d, tgt, reduction=reduction, backend=backend, **cast)
        assert_close(got[0], want[0], dtype, f"{reduction} loss")
        assert_close(got[1], want[1], dtype, f"{reduction} dS")


# every head and target kind, with and without row weights (the row-indexed operands)
ROW_CASES = [c for c in CASES if case_id(c).replace("-sample_weight", "").count("-") == 1]


@pytest.mark.parametrize("case", ROW_CASES, ids=case_id)
def test_many_scores_split_over_threads_match_reference(case, backend, dtype, rng):
    """B n >= 2^16 scores: the compiled heads cut the rows into one block per thread."""
    head, spec = case
    n = 1 if head == "binary_hinge" else 200
    S, target, opts = make_head_inputs(head, spec, (1 << 16) // n + 3, n, np.float64, rng)
    S_d, tgt, cast = cast_floats(dtype, S, target, options=opts)
    for reduction in ("mean", "none"):
        want = call(head, S, target, reduction=reduction, backend="numpy", **opts)
        got = call(head, S_d, tgt, reduction=reduction, backend=backend, **cast)
        assert_close(got[0], want[0], dtype, f"{reduction} loss")
        assert_close(got[1], want[1], dtype, f"{reduction} dS")


# ---------------------------------------------------------------- direct formulas (docs/math.md)
def test_softmax_nll_by_hand():
    S = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    y = np.array([2, 0])
    P = np.exp(S) / np.exp(S).sum(1, keepdims=True)
    loss, dS = fastbp.softmax_nll(S, y, reduction="sum")
    assert loss == pytest.approx(-np.log(P[0, 2]) - np.log(P[1, 0]), rel=1e-14)
    np.testing.assert_allclose(dS, P - np.eye(3)[y], rtol=1e-14)


def test_softmax_nll_weights_ignore_smoothing_by_hand():
    """torch's cross_entropy: smoothing term weighted per class, mean over sum of w[y] kept."""
    S = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0], [2.0, 0.0, 1.0]])
    y = np.array([2, 0, 1])
    w = np.array([1.0, 2.0, 0.5])
    eps, n = 0.3, 3
    logp = S - np.log(np.exp(S).sum(1, keepdims=True))
    rows = [(1 - eps) * w[y[i]] * -logp[i, y[i]] + eps / n * -(w * logp[i]).sum() for i in (0, 1)]
    loss, _ = fastbp.softmax_nll(S, y, weight=w, ignore_index=1, label_smoothing=eps)
    assert loss == pytest.approx(sum(rows) / (w[2] + w[0]), rel=1e-14)


def test_softmax_nll_probability_targets_mean_divides_by_batch():
    S = np.array([[1.0, 2.0], [0.0, 0.0]])
    Z = np.array([[0.25, 0.75], [1.0, 0.0]])
    w = np.array([2.0, 1.0])
    logp = S - np.log(np.exp(S).sum(1, keepdims=True))
    loss, _ = fastbp.softmax_nll(S, Z, weight=w)
    assert loss == pytest.approx(-(w * Z * logp).sum() / 2, rel=1e-14)


def test_multiclass_hinge_by_hand():
    """The notes' hinge: kinks give 0 (strict inequality); g_y = -sum of the others."""
    S = np.array([[3.0, 2.0, 5.0], [1.0, 1.0, 0.0]])
    y = np.array([0, 2])
    loss, dS = fastbp.multiclass_hinge(S, y, reduction="none")
    # row 0: max(0, 2-3+1)=0 (kink), max(0, 5-3+1)=3; row 1: 1-0+1=2 twice
    np.testing.assert_array_equal(loss, [3.0, 4.0])
    np.testing.assert_array_equal(dS, [[-1, 0, 1], [1, 1, -2]])
    loss2, dS2 = fastbp.multiclass_hinge(S, y, p=2, reduction="none")
    np.testing.assert_array_equal(loss2, [9.0, 8.0])
    np.testing.assert_array_equal(dS2, [[-6, 0, 6], [4, 4, -8]])


def test_binary_hinge_by_hand_keeps_shape():
    s = np.array([0.5, 2.0, -0.5])
    y = np.array([1, 1, -1])
    loss, ds = fastbp.binary_hinge(s, y, reduction="none")
    np.testing.assert_array_equal(loss, [0.5, 0.0, 0.5])
    np.testing.assert_array_equal(ds, [-1.0, 0.0, 1.0])
    _, ds_col = fastbp.binary_hinge(s[:, None], y, reduction="none")
    assert ds_col.shape == (3, 1)


def test_regression_and_probability_heads_by_hand():
    S = np.array([[0.0, 2.0]])
    Z = np.array([[1.0, 2.0]])
    assert fastbp.l2(S, Z)[0] == 1.0
    np.testing.assert_array_equal(fastbp.l2(S, Z)[1], [[-2.0, 0.0]])
    np.testing.assert_array_equal(fastbp.l1(S, Z)[1], [[-1.0, 0.0]])   # sign, 0 where equal
    sig = 1 / (1 + np.exp(-S))
    assert fastbp.sigmoid_l2(S, Z)[0] == pytest.approx(((Z - sig) ** 2).sum(), rel=1e-14)
    np.testing.assert_allclose(fastbp.sigmoid_bce(S, Z)[1], sig - Z, rtol=1e-14)
    P = np.array([[0.25, 0.75]])
    loss, dP = fastbp.nll(P, np.array([1]))
    assert loss == pytest.approx(-np.log(0.75))
    np.testing.assert_allclose(dP, [[0.0, -1 / 0.75]])


def test_sigmoid_bce_pos_weight_by_hand():
    S = np.array([[0.3, -1.2]])
    Z = np.array([[1.0, 0.0]])
    pw = np.array([3.0, 2.0])
    sig = 1 / (1 + np.exp(-S))
    want = -(pw * Z * np.log(sig) + (1 - Z) * np.log(1 - sig)).sum()
    assert fastbp.sigmoid_bce(S, Z, pos_weight=pw)[0] == pytest.approx(want, rel=1e-13)


# ---------------------------------------------------------------- behaviour
@pytest.mark.parametrize("head", fastbp.HEADS)
def test_out_is_written_and_returned_and_may_be_S(head, backend, dtype, rng):
    spec = next(s for h, s in CASES if h == head)
    S, target, opts = make_head_inputs(head, spec, 5, 3, dtype, rng)
    loss, dS = call(head, S, target, backend=backend, **opts)
    buf = np.empty_like(S)
    loss2, dS2 = call(head, S, target, out=buf, backend=backend, **opts)
    assert dS2 is buf and loss2 == loss
    np.testing.assert_array_equal(buf, dS)
    S_copy = S.copy()
    loss3, dS3 = call(head, S_copy, target, out=S_copy, backend=backend, **opts)  # in place
    assert dS3 is S_copy and loss3 == loss
    np.testing.assert_array_equal(S_copy, dS)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_inputs_are_never_modified(case, backend, rng):
    head, spec = case
    S, target, opts = make_head_inputs(head, spec, 5, 3, np.float64, rng)
    before = [a.copy() for a in (S, target, *opts.values()) if isinstance(a, np.ndarray)]
    call(head, S, target, backend=backend, **opts)
    after = [a for a in (S, target, *opts.values()) if isinstance(a, np.ndarray)]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] != "nll"], ids=case_id)
def test_extreme_logits_are_finite_and_warning_free(case, backend, dtype, rng):
    """|s| up to 1e4 in both dtypes (every head on logits; nll takes probabilities): finite
    loss and gradient (docs/math.md's stable forms); RuntimeWarnings are errors in this suite."""
    head, spec = case
    S, target, opts = make_head_inputs(head, spec, 6, 4, dtype, rng, scale=1e4)
    for reduction in REDUCTIONS:
        loss, dS = call(head, S, target, reduction=reduction, backend=backend, **opts)
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(dS))
        S64, target64, opts64 = cast_floats(np.float64, S, target, options=opts)
        want = call(head, S64, target64, reduction=reduction, backend="numpy", **opts64)
        assert_close(loss, want[0], dtype)
        assert_close(dS, want[1], dtype)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_empty_batch(case, backend, rng):
    head, spec = case
    S, target, opts = make_head_inputs(head, spec, 0, 3, np.float64, rng)
    l_sum, d_sum = call(head, S, target, reduction="sum", backend=backend, **opts)
    l_mean, _ = call(head, S, target, reduction="mean", backend=backend, **opts)
    l_none, _ = call(head, S, target, reduction="none", backend=backend, **opts)
    assert l_sum == 0.0 and np.isnan(l_mean) and l_none.shape == (0,)
    assert d_sum.shape == np.shape(S)


def test_all_rows_ignored_gives_nan_mean_and_zero_gradient(backend):
    S = np.ones((3, 4))
    loss, dS = fastbp.softmax_nll(S, np.full(3, -100), backend=backend)
    assert np.isnan(loss)
    np.testing.assert_array_equal(dS, 0)
    loss, dS = fastbp.multiclass_hinge(S, np.zeros(3, int), sample_weight=np.zeros(3),
                                       backend=backend)
    assert np.isnan(loss)
    np.testing.assert_array_equal(dS, 0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_nan_in_nan_out(case, backend, rng):
    head, spec = case
    S, target, opts = make_head_inputs(head, spec, 4, 3, np.float64, rng)
    # nll reads only p_y: the NaN goes there (every other head reads the whole row)
    S.reshape(4, -1)[0, target[0] if head == "nll" else 0] = np.nan
    loss, dS = call(head, S, target, reduction="none", backend=backend, **opts)
    row_ignored = spec["target"] == "labels" and target[0] == opts.get("ignore_index")
    if not row_ignored:
        assert np.isnan(loss[0]) and np.isnan(dS.reshape(4, -1)[0]).any()
    assert np.all(np.isfinite(loss[1:])) and np.all(np.isfinite(dS.reshape(4, -1)[1:]))


def test_huber_by_hand():
    """r = s - z: r^2/2 inside delta, delta (|r| - delta/2) outside; gradient clip(r)."""
    S = np.array([[0.5, 3.0, -2.0, 1.0]])
    Z = np.array([[0.0, 0.0, 0.0, 1.0]])
    loss, dS = fastbp.huber(S, Z, reduction="sum")
    assert loss == pytest.approx(0.125 + 2.5 + 1.5, rel=1e-15)
    np.testing.assert_array_equal(dS, [[0.5, 1.0, -1.0, 0.0]])
    loss, dS = fastbp.huber(S, Z, delta=2.0, reduction="sum")
    assert loss == pytest.approx(0.125 + 4.0 + 2.0, rel=1e-15)
    np.testing.assert_array_equal(dS, [[0.5, 2.0, -2.0, 0.0]])


def test_sigmoid_focal_by_hand_and_gamma_zero_is_weighted_bce():
    S = np.array([[0.3, -1.2, 2.0]])
    Z = np.array([[1.0, 0.0, 0.5]])
    p = 1 / (1 + np.exp(-S))
    ce = np.log1p(np.exp(S)) - Z * S
    q = 1 - (p * Z + (1 - p) * (1 - Z))
    at = 0.25 * Z + 0.75 * (1 - Z)
    loss, _ = fastbp.sigmoid_focal(S, Z, reduction="sum")
    assert loss == pytest.approx((at * q ** 2 * ce).sum(), rel=1e-14)
    loss, dS = fastbp.sigmoid_focal(S, Z, alpha=-1.0, gamma=0.0, reduction="sum")
    want = fastbp.sigmoid_bce(S, Z, reduction="sum")
    assert loss == pytest.approx(want[0], rel=1e-14)
    np.testing.assert_allclose(dS, want[1], rtol=1e-14)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_sigmoid_focal_is_finite_at_confident_binary_targets(gamma, backend, dtype):
    """(1 - p_t)^(gamma - 1) is unbounded as p_t -> 1 for gamma < 1; the gradient's product
    form keeps it finite, for |s| up to 1e4 in both dtypes, and equal to the reference's."""
    S = np.array([[1e4, -1e4, 30.0, -30.0, 0.0, 5.0]] * 2, dtype)
    Z = np.array([[1, 0, 1, 0, 1, 1], [0, 1, 0, 1, 0, 0]], dtype)
    loss, dS = fastbp.sigmoid_focal(S, Z, gamma=gamma, reduction="none", backend=backend)
    assert np.isfinite(loss).all() and np.isfinite(dS).all()
    want = fastbp.sigmoid_focal(S.astype(np.float64), Z.astype(np.float64), gamma=gamma,
                                reduction="none", backend="numpy")
    assert_close(loss, want[0], dtype)
    assert_close(dS, want[1], dtype)
    assert dS[0, 0] == 0 and dS[0, 1] == 0      # confident and right: nothing to learn
