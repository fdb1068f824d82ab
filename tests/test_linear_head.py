"""linear_head (docs/api.md s. 2): the fused S = X W^T + b -> head -> backward, for every head and
option, against finite differences, the head on explicit scores, and the naive Jacobian path."""
import contextlib
import functools

import numba
import numpy as np
import pytest

import fastbp
from fastbp.backends import tuning
from fastbp.backends.tuning import ISAS
from cases import (BACKENDS, VARIANTS, assert_close, case_id, cast_floats, head_cases,
                   make_options, make_target, rotated, rotated_ids, variant)

# the C backend's tests, which `make test-asan` runs under the sanitizers
pytestmark = pytest.mark.asan

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


_FD = rotated(CASES, VARIANTS, ["mean", "sum", "none"])
_EXPLICIT = rotated(CASES, VARIANTS, ["float64", "float32"])


@pytest.mark.parametrize("case, name, reduction", _FD, ids=rotated_ids(_FD))
def test_gradients_match_finite_differences(case, name, reduction, rng):
    """Every case on every backend and path, the reductions in turn ("none": the gradients
    are those of the row losses' sum)."""
    with variant(name) as backend:
        _finite_differences(case, reduction, backend, rng)


def _finite_differences(case, reduction, linear_backend, rng):
    head, spec = case
    X, W, b, target, opts = make_linear(head, spec, 5, 3, 4, np.float64, rng)
    if opts.get("ignore_index") is not None and (target == opts["ignore_index"]).all():
        target[0] = 0     # every row ignored: the mean loss is nan, no gradient to check

    def f(X, W, b):
        g = fastbp.linear_head(X, W, b, target, head, reduction=reduction,
                               backend=linear_backend, **opts)
        return np.sum(g.loss), g.dX, g.dW, g.db

    assert fastbp.gradcheck(f, X, W, b) <= 1e-5


@pytest.mark.parametrize("case, name, dtype", _EXPLICIT, ids=rotated_ids(_EXPLICIT))
def test_equals_head_on_explicit_scores(case, name, dtype, rng):
    """dS from the head, then dW = dS^T X, db = sum dS, dX = dS W: every case on every backend
    and path, the dtypes in turn."""
    with variant(name) as backend:
        _equals_head_on_explicit_scores(case, backend, np.dtype(dtype), rng, 11)


_BLOCKS = rotated(CASES, [v for v in VARIANTS if v in ("numba", "numba:parallel")],
                  ["float64", "float32"])


@pytest.mark.parametrize("case, name, dtype", _BLOCKS, ids=rotated_ids(_BLOCKS))
def test_numba_row_blocks_equal_head_on_explicit_scores(case, name, dtype, rng):
    """As above with B n > tuning.Numba.FUSED_TINY_SCORES: Numba's fused rows in blocks of
    four (below it they run one at a time)."""
    with variant(name) as backend:
        _equals_head_on_explicit_scores(case, backend, np.dtype(dtype), rng, 29)


def _equals_head_on_explicit_scores(case, linear_backend, dtype, rng, B):
    head, spec = case
    X, W, b, target, opts = make_linear(head, spec, B, 6, 5, dtype, rng)
    for reduction in ("mean", "sum", "none"):
        S = X @ W.T + b
        loss, dS = getattr(fastbp, head)(S, target, reduction=reduction, backend="numpy", **opts)
        g = fastbp.linear_head(X, W, b, target, head, reduction=reduction, backend=linear_backend,
                               **opts)
        if reduction == "none":     # row losses; the gradients of their sum
            assert g.loss.shape == (len(X),) and g.loss.dtype == dtype
        assert isinstance(g, fastbp.Grads)
        assert g.dW.dtype == g.db.dtype == g.dX.dtype == dtype
        assert_close(g.loss, loss, dtype)
        assert_close(g.dW, dS.T @ X, dtype)
        assert_close(g.db, dS.sum(0), dtype, scale=np.abs(dS).sum(0))
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
        S = (X @ W.T + b).reshape(-1) if spec["target"] == "pm1" else X @ W.T + b
        _, dS = getattr(fastbp, head)(S, target, backend="numpy", **opts)
        terms = np.abs(dS).reshape(len(X), -1).sum(0)   # db's sum may cancel to rounding
        for a, c, name in zip(got, want, got._fields):
            assert_close(a, c, dtype, f"{case_id((head, spec))} {name}",
                         scale=terms if name == "db" else None)


@pytest.mark.parametrize("B, d, n", [(17, 1030, 11), (9, 520, 3), (33, 17, 12), (8, 8, 1)])
def test_shapes_across_register_blocks_and_k_tiles(B, d, n, linear_backend, dtype, rng):
    """The C fused rows work on register tiles of 4 rows and on k chunks: partial tiles,
    partial vectors and several chunks, with and without dX."""
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
    for reduction in ("mean", "sum", "none"):
        want = fastbp.linear_head(X, W, b, target, head, reduction=reduction, backend="numpy",
                                  **opts)
        got = fastbp.naive.linear_head(X, W, b, target, head, reduction=reduction, **opts)
        for a, c in zip(got, want):
            assert_close(a, c, np.float64)


# ---------------------------------------------------------------- the compiled fast entry
COMPILED = [b for b in BACKENDS if b != "numpy"]


def _fast(backend):
    """The backend's fast_linear_head (csrc/fastcall.c), or None where it has none by design."""
    module = fastbp._dispatch.backend_module(backend)
    if backend == "numba" and numba.config.DISABLE_JIT:
        assert module.fast_linear_head is None          # no machine code to call
        return None
    if "c" not in fastbp.available_backends():      # no compiler (conftest.py): no fastcall.c
        return module.fast_linear_head
    assert module.fast_linear_head is not None, "fastbp.backends._fastcall was not built"
    return module.fast_linear_head
def _tiny(dtype, rng, n=3):
    X, W, b = (rng.standard_normal(s).astype(dtype) for s in ((5, 4), (n, 4), (n,)))
    return X, W, b, rng.integers(0, n, 5)


def _grads_like(X, W, b, fill=7.0):
    return fastbp.Grads(None, np.full_like(W, fill), np.full_like(b, fill), np.full_like(X, fill))


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("head", fastbp.HEADS)
def test_fast_entry_runs_the_common_tiny_call(head, backend, dtype, rng):
    """csrc/fastcall.c takes linear_head's tiny default call with out= (every head but
    binary_hinge's +-1 labels) and gives the checked path's bits."""
    fast = _fast(backend)
    if fast is None:
        return
    X, W, b, target, _ = make_linear(head, {"target": CASES_TARGET[head]}, 5, 4, 3, dtype, rng)
    for bias, need_dX, given in ((b, True, True), (None, False, True), (b, True, False),
                                 (None, False, False)):
        out = None if not given else fastbp.Grads(
            None, np.empty_like(W), None if bias is None else np.empty_like(b),
            np.empty_like(X) if need_dX else None)
        got = fast(X, W, bias, target, head, need_dX, out)
        assert (got is None) == (head == "binary_hinge"), head
        want = fastbp.linear_head(X, W, bias, target, head, need_dX=need_dX, chunk_rows=5,
                                  backend=backend)   # chunk_rows: the checked path, same kernel
        if got is not None:
            assert got[0] == want.loss or np.isnan(got[0]) and np.isnan(want.loss)
            for i, (a, exp) in enumerate(zip(got[1:], want[1:]), 1):
                assert (a is None) == (exp is None)
                if a is not None:
                    assert a is out[i] if given else (a.dtype == dtype and a.flags.carray)
                    np.testing.assert_array_equal(a, exp)


CASES_TARGET = {"softmax_nll": "labels", "multiclass_hinge": "labels", "binary_hinge": "pm1",
                "nll": "labels"}
CASES_TARGET.update({h: "dense" for h in fastbp.HEADS if h not in CASES_TARGET})


def _declined_calls(rng):
    """(what, X, W, b, target, head, need_dX, out) the fast entry must leave to the checked
    path; out's buffers hold 7s."""
    X, W, b, y = _tiny(np.float64, rng)
    g = _grads_like(X, W, b)
    big = np.full((10, 4), 7.0)
    yield "fortran X", np.asfortranarray(X), W, b, y, "softmax_nll", True, g
    yield "strided X", np.repeat(X, 2, axis=1)[:, ::2], W, b, y, "softmax_nll", True, g
    yield "float32 W", X, W.astype(np.float32), b, y, "softmax_nll", True, g
    yield "int X", X.astype(int), W, b, y, "softmax_nll", True, g
    yield "byteswapped X", X.astype(">f8"), W, b, y, "softmax_nll", True, g
    yield "subclass X", X.view(type("Sub", (np.ndarray,), {})), W, b, y, "softmax_nll", True, g
    yield "list y", X, W, b, list(y), "softmax_nll", True, g
    yield "int32 y", X, W, b, y.astype(np.int32), "softmax_nll", True, g
    yield "label = n", X, W, b, np.where(y == y[0], 3, y), "softmax_nll", True, g
    yield "label < 0", X, W, b, np.where(y == y[0], -100, y), "softmax_nll", True, g
    yield "wrong W", X, W[:, :3].copy(), b, y, "softmax_nll", True, g
    yield "wrong b", X, W, b[:2].copy(), y, "softmax_nll", True, g
    yield "float target", X, W, b, np.zeros((5, 2)), "sigmoid_l2", True, g
    yield "pm1 head", X, W[:1].copy(), b[:1].copy(), np.ones(5, int), "binary_hinge", True, \
        fastbp.Grads(None, np.full((1, 4), 7.0), np.full(1, 7.0), np.full_like(X, 7.0))
    yield "unknown head", X, W, b, y, "soft", True, g
    yield "unhashable head", X, W, b, y, ["softmax_nll"], True, g
    yield "need_dX=1", X, W, b, y, "softmax_nll", 1, g
    yield "need_dX=False with dX", X, W, b, y, "softmax_nll", False, g
    yield "dX missing", X, W, b, y, "softmax_nll", True, g._replace(dX=None)
    yield "db without b", X, W, None, y, "softmax_nll", True, g
    yield "read-only dW", X, W, b, y, "softmax_nll", True, g._replace(
        dW=np.broadcast_to(np.full(4, 7.0), W.shape))
    yield "dW is W", X, W, b, y, "softmax_nll", True, g._replace(dW=W)
    yield "dX inside dW", X, W, b, y, "softmax_nll", True, fastbp.Grads(None, big[:3], g.db,
                                                                        big[2:7])
    yield "dX is X", X, W, b, y, "softmax_nll", True, g._replace(dX=X)
    yield "out list", X, W, b, y, "softmax_nll", True, list(g)
    yield "large B", np.ones((1 << 14, 4)), W, b, np.zeros(1 << 14, np.intp), "softmax_nll", \
        True, fastbp.Grads(None, g.dW, g.db, np.full((1 << 14, 4), 7.0))


@pytest.mark.parametrize("backend", COMPILED)
def test_fast_entry_declines_anything_else_without_writing(backend, rng):
    """Every other call returns None before a write, whatever the checked path then says."""
    fast = _fast(backend)
    for what, X, W, b, target, head, need_dX, out in (_declined_calls(rng) if fast else ()):
        before = [None if a is None else np.array(a) for a in out[1:]]
        assert fast(X, W, b, target, head, need_dX, out) is None, what
        for a, was in zip(out[1:], before):
            assert a is None or np.array_equal(a, was), what


@pytest.mark.parametrize("backend", COMPILED)
def test_fast_entry_takes_disjoint_views_of_one_buffer(backend, rng):
    """Overlap is decided on byte ranges: rows of one array that do not meet are fine."""
    fast = _fast(backend)
    if fast is None:
        return
    X, W, b, y = _tiny(np.float64, rng)
    big = np.zeros((10, 4))
    out = fastbp.Grads(None, big[:3], np.empty(3), big[5:])
    assert fast(X, W, b, y, "softmax_nll", True, out)[1] is out.dW
    want = fastbp.linear_head(X, W, b, y, chunk_rows=5, backend=backend)
    np.testing.assert_array_equal(big[:3], want.dW)
    np.testing.assert_array_equal(big[5:], want.dX)
    assert not big[3:5].any()


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("setting", [{"FUSED_ANY_N_WEIGHTS": 0, "FUSED_FEW_N": 0},
                                     {"PARALLEL_MIN_WORK": 0}])
def test_fast_entry_follows_the_path_thresholds(setting, backend, rng):
    """It runs only what the fused path would run on one block (the variants move these)."""
    fast = _fast(backend)
    X, W, b, y = _tiny(np.float64, rng)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in setting.items():
            mp.setattr(fastbp._dispatch.backend_module(backend).TUNING, k, v)
        assert fast is None or fast(X, W, b, y, "softmax_nll", True, _grads_like(X, W, b)) is None


@pytest.mark.parametrize("backend", COMPILED)
def test_fast_entry_takes_the_few_classes_window_where_the_backend_has_one(backend, rng):
    """n <= FUSED_FEW_N, d >= FUSED_FEW_MIN_D and n d <= FUSED_FEW_WEIGHTS (the C backend's;
    shape D) run fused on one block, so the fast entry takes them with the checked path's bits;
    rows shorter than FUSED_FEW_MIN_D, or the window closed, are left to the checked path."""
    fast = _fast(backend)
    if fast is None:
        return
    T = fastbp._dispatch.backend_module(backend).TUNING
    X, W, b = (rng.standard_normal(s) for s in ((64, 64), (10, 64), (10,)))
    y = rng.integers(0, 10, 64)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(T, "FUSED_ANY_N_WEIGHTS", 0)      # the few-classes window alone
        mp.setattr(T, "FUSED_ISAS", ISAS)             # open on any ISA (the plan's gate)
        got = fast(X, W, b, y, "softmax_nll", True, None)
        assert (got is not None) == (T.FUSED_FEW_N >= 10 and T.FUSED_FEW_MIN_D <= 64
                                     and T.FUSED_FEW_WEIGHTS >= 640)
        if got is not None:
            want = fastbp.linear_head(X, W, b, y, chunk_rows=64, backend=backend)
            assert got[0] == want.loss
            for a, exp in zip(got[1:], want[1:]):
                np.testing.assert_array_equal(a, exp)
        short = fast(X[:, :32].copy(), W[:, :32].copy(), b, y, "softmax_nll", True, None)
        assert (short is None) == (T.FUSED_FEW_MIN_D > 32 or got is None)
        mp.setattr(T, "FUSED_FEW_N", 0)
        assert fast(X, W, b, y, "softmax_nll", True, None) is None


# ---------------------------------------------------------------------------- filter_eps
# A peaked softmax (a Zipf-like class bias, as presets.P) over n * d above every fused window,
# so explicit chunk_rows take the row blocks, where the filter runs.
def _peaked(dtype, rng, B=40, d=24, n=60, options=None):
    X = rng.standard_normal((B, d)).astype(dtype)
    W = (2 * rng.standard_normal((n, d)) / np.sqrt(d)).astype(dtype)
    b = (-3 * np.log(rng.permutation(n) + 1.0)).astype(dtype)
    y = rng.integers(0, 4, B)
    return X, W, b, y, dict(options or {})


FILTER_OPTIONS = [{}, {"sample_weight": "on", "weight": "on", "ignore_index": 1},
                  {"label_smoothing": 0.1}, {"softcap": 5.0, "z_loss": 1e-3},
                  {"reduction": "sum"}]


def _filter_eps(spec, eps):
    """label smoothing's targets t_ij = alpha / n and softcap's narrower range keep every p_ij
    further from t_ij: larger eps skip there"""
    return 1e-2 if "label_smoothing" in spec else 1e-3 if "softcap" in spec else eps


def _filter_options(spec, dtype, rng, B, n):
    opts = dict(spec)
    if opts.get("sample_weight") == "on":
        opts["sample_weight"] = rng.uniform(0.5, 2.0, B).astype(dtype)
    if opts.get("weight") == "on":
        opts["weight"] = rng.uniform(0.5, 2.0, n).astype(dtype)
    return opts


@pytest.mark.parametrize("spec", FILTER_OPTIONS, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_filter_eps_skips_what_the_reference_rule_skips(spec, backend, rng):
    """Every backend's filtered row blocks equal the NumPy reference's (reference.active_classes
    on each block) and differ from the exact result: classes were skipped. The loss and db stay
    those of the exact call, bit for bit. In float64: float32's rounding can move an entry
    across the threshold (its bound: the next test)."""
    dtype = np.float64
    X, W, b, y, _ = _peaked(dtype, rng)
    opts = _filter_options(spec, dtype, rng, *y.shape, W.shape[0])
    eps = _filter_eps(spec, 1e-4)
    call = functools.partial(fastbp.linear_head, X, W, b, y, chunk_rows=8, **opts)
    exact, got = call(backend=backend), call(backend=backend, filter_eps=eps)
    want = call(backend="numpy", filter_eps=eps)
    for a, c, name in zip(got, want, fastbp.Grads._fields):
        assert_close(a, c, dtype, name)
    assert got.loss == exact.loss and np.array_equal(got.db, exact.db)
    assert not np.array_equal(got.dW, exact.dW)


@pytest.mark.parametrize("spec", FILTER_OPTIONS, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_filter_eps_error_is_within_its_bound(spec, backend, dtype, rng):
    """Each dropped gradient entry is below eps times its row's weight omega_i, scaled as the
    gradient (1 / sum omega under "mean"): with thr_i that product, |dW - dW_exact| <=
    sum_i thr_i |x_i| and |dX_i - dX_exact_i| <= thr_i sum_j |w_j|, against the exact float64
    call."""
    X, W, b, y, _ = _peaked(np.float64, rng)
    opts = _filter_options(spec, np.float64, rng, *y.shape, W.shape[0])
    eps = _filter_eps(spec, 1e-3)
    exact = fastbp.linear_head(X, W, b, y, chunk_rows=8, backend=backend, **opts)
    X_d, W_d, b_d, _, o_d = cast_floats(dtype, X, W, b, y, options=opts)
    got = fastbp.linear_head(X_d, W_d, b_d, y, chunk_rows=8, filter_eps=eps, backend=backend,
                             **o_d)
    omega = np.asarray(opts.get("sample_weight", 1.0)) * np.ones(len(y))
    if "weight" in opts:
        omega = omega * opts["weight"][y] * (y != opts["ignore_index"])
    thr = eps * omega / (1.0 if opts.get("reduction") == "sum" else omega.sum())
    slack = 1e-9 if dtype == np.float64 else 1e-4         # the dtype's own rounding
    bound_dW = thr @ np.abs(X) + slack * np.abs(exact.dW).max()
    bound_dX = np.outer(thr, np.abs(W).sum(0)) + slack * np.abs(exact.dX).max()
    assert (np.abs(got.dW - exact.dW) <= bound_dW).all()
    assert (np.abs(got.dX - exact.dX) <= bound_dX).all()
    assert np.abs(got.dW - exact.dW).max() > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_filter_eps_does_not_depend_on_the_class_order(backend, dtype, rng):
    """Classes permuted (W's rows, b, the labels): the same gradients, permuted back."""
    X, W, b, y, _ = _peaked(dtype, rng)
    perm = rng.permutation(W.shape[0])
    inv = np.argsort(perm)
    call = functools.partial(fastbp.linear_head, chunk_rows=8, filter_eps=1e-4, backend=backend)
    g = call(X, W, b, y)
    h = call(X, W[perm], b[perm], inv[y])
    assert_close(h.loss, g.loss, dtype)
    assert_close(h.dW[inv], g.dW, dtype)
    assert_close(h.db[inv], g.db, dtype)
    assert_close(h.dX, g.dX, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_filter_eps_none_and_zero_are_exact(backend, rng):
    X, W, b, y, _ = _peaked(np.float32, rng)
    exact = fastbp.linear_head(X, W, b, y, chunk_rows=8, backend=backend)
    for eps in (None, 0.0):
        got = fastbp.linear_head(X, W, b, y, chunk_rows=8, filter_eps=eps, backend=backend)
        for a, c in zip(got, exact):
            np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("backend", BACKENDS)
def test_filter_eps_auto_on_a_trained_models_softmax(backend, rng):
    """"auto" (float32's eps / 32) on presets.P's recipe at a small shape:
    most classes of a block are skipped, and dW, dX stay within 1e-4 relative Frobenius error
    of the exact call (the issue's bound)."""
    from fastbp.presets import peaked_lm_data
    X, W, b, y = peaked_lm_data(128, 64, 8000, "float32")
    exact = fastbp.linear_head(X, W, b, y, chunk_rows=32, backend=backend)
    got = fastbp.linear_head(X, W, b, y, chunk_rows=32, filter_eps="auto", backend=backend)
    for a, c in ((got.dW, exact.dW), (got.dX, exact.dX)):
        assert np.linalg.norm(a - c) <= 1e-4 * np.linalg.norm(c)
    assert got.loss == exact.loss
    from fastbp.backends.reference import active_classes
    _, G = fastbp.softmax_nll(X[:32] @ W.T + b, y[:32], reduction="sum", backend="numpy")
    assert active_classes(G, np.full(32, np.finfo(np.float32).eps / 32)).mean() < 0.5


# ---------------------------------------------------------------- the C fused rows' kernel sets
def _tiles():
    """csrc/fused.h's kernel sets this CPU runs: its ISA's and every lesser one, and "wide" (the
    AVX-512 set's tiles on the baseline ISA: their loops tested on any x86-64)."""
    if "c" not in BACKENDS:
        return []
    return [*ISAS[ISAS.index(tuning.host_isa()):], "wide"]


@contextlib.contextmanager
def _tile(name):
    """The C backend's fused rows on every call (two blocks where there are rows for them), on
    kernel set ``name``."""
    c = fastbp._dispatch.backend_module("c")
    with variant("c:parallel"), pytest.MonkeyPatch.context() as mp:
        mp.setattr(c.TUNING, "FUSED_ISAS", ISAS)
        assert c.set_tile(name) == name
        try:
            yield "c"
        finally:
            c.set_tile(None)


_TILE_CASES = rotated(CASES, _tiles(), ["float64", "float32"])


@pytest.mark.parametrize("case, tile, dtype", _TILE_CASES, ids=rotated_ids(_TILE_CASES))
def test_every_kernel_set_equals_head_on_explicit_scores(case, tile, dtype, rng):
    """Every case on every kernel set of the fused rows the CPU runs, the dtypes in turn."""
    with _tile(tile) as backend:
        _equals_head_on_explicit_scores(case, backend, np.dtype(dtype), rng, 11)


# rows past several blocks of rows (d = 3000: a few rows per block), several k chunks, classes
# in one and in several backward groups (the AVX-512 set's groups hold 12, the others' 6), rows
# read in place (d whole vectors, an odd number of 64-byte lines) or copied (even, or partial)
@pytest.mark.parametrize("B, d, n", [(37, 3000, 13), (21, 48, 7), (9, 64, 12), (30, 19, 5),
                                     (50, 784, 10), (3, 1000, 2)])
@pytest.mark.parametrize("tile", _tiles())
def test_every_kernel_set_across_blocks_groups_and_copies(B, d, n, tile, dtype, rng):
    X, W, b, y, _ = make_linear("softmax_nll", {"target": "labels"}, B, d, n, np.float64, rng)
    want = fastbp.linear_head(X, W, b, y, backend="numpy")
    X_d, W_d, b_d = cast_floats(dtype, X, W, b)
    # each gradient held to its terms' size: the mean's g_ij = (p_ij - y_ij) / B, |p| + |y| <= 2
    # (rows all but certain make p - y cancel to rounding: db = 3e-9 at B, d, n = 3, 1000, 2)
    terms = {"dW": 2 * np.abs(X).mean(0).max(), "db": 2.0, "dX": 2 * np.abs(W).sum(0).max() / B}
    with _tile(tile) as backend:
        for need_dX in (True, False):
            got = fastbp.linear_head(X_d, W_d, b_d, y, need_dX=need_dX, backend=backend)
            for name in ("loss", "dW", "db") + (("dX",) if need_dX else ()):
                assert_close(getattr(got, name), getattr(want, name), dtype, name,
                             scale=terms.get(name))


def test_a_kernel_set_the_cpu_lacks_is_not_taken():
    c = pytest.importorskip("fastbp.backends.c_kernels")
    try:
        assert c.set_tile("avx512f") == tuning.host_isa()      # its best at most
        assert c.set_tile("default") == "default"
        assert c.tile() == "default"
    finally:
        assert c.set_tile(None) == tuning.host_isa() == c.tile()


@pytest.mark.parametrize("tile", _tiles())
def test_every_kernel_set_gives_zero_scores_when_d_is_zero(tile):
    """d = 0: no k chunk runs, so the fused rows' accumulators start at zero there (they once
    held whatever the scratch held: NaN losses on the vector sets)."""
    X, W, b, y = np.zeros((3, 0)), np.zeros((5, 0)), np.arange(5.0), np.array([0, 4, 2])
    want = fastbp.linear_head(X, W, b, y, backend="numpy", reduction="sum")
    with _tile(tile) as backend:
        g = fastbp.linear_head(X, W, b, y, backend=backend, reduction="sum")
    assert_close(g.loss, want.loss, np.float64)
    assert_close(g.db, want.db, np.float64)
