"""bfloat16 calls (docs/api.md, "bfloat16"; fastbp/_bf16.py): every head and linear_head on
every backend and path against the NumPy reference computed in float32 from the same bfloat16
values, the mixed-dtype rule, gradients rounded once, errors, inputs left alone."""
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastbp
from cases import (BACKENDS, VARIANTS, assert_close, head_cases, make_head_inputs,
                   rotated, rotated_ids, variant)
from test_linear_head import _tile, _tiles, make_linear

BF16 = np.dtype(ml_dtypes.bfloat16)
F32 = np.dtype(np.float32)
CASES = head_cases()


def cast(dtype, *arrays, options=None):
    """Every float array (bfloat16's kind is "V") in ``dtype``; labels untouched."""
    def one(v):
        return (v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind in "fV" else v)
    out = [one(a) for a in arrays]
    return out + [{k: one(v) for k, v in options.items()}] if options is not None else out


def assert_rounded_once(got, want32, terms=None):
    """``got`` (bfloat16) is the float32 result ``want32`` rounded to bfloat16: within one
    bfloat16 rounding (2^-8 relative) of it, beyond the float32 result's own 1e-4 of its
    terms."""
    assert got.dtype == BF16
    got, want = got.astype(np.float64), np.asarray(want32, np.float64)
    scale = np.abs(want) if terms is None else terms
    assert np.all(np.abs(got - want) <= 2.0 ** -8 * np.abs(want) + 1e-4 * np.max(scale, initial=0)
                  + 1e-30)


_HEADS = rotated(CASES, BACKENDS, ["mean", "sum", "none"])


@pytest.mark.parametrize("case, backend, reduction", _HEADS, ids=rotated_ids(_HEADS))
def test_every_head_on_bfloat16_scores_is_the_float32_head_on_their_values(
        case, backend, reduction, rng):
    head, spec = case
    S, target, opts = make_head_inputs(head, spec, 9, 5, np.float32, rng)
    S, target, opts = cast(BF16, S, target, options=opts)
    keep = [np.copy(a) for a in (S, target)]
    fn = getattr(fastbp, head)
    want_loss, want = fn(*cast(F32, S, target), backend="numpy", reduction=reduction,
                         **cast(F32, options=opts)[0])
    loss, dS = fn(S, target, backend=backend, reduction=reduction, grad_dtype=np.float32,
                  **opts)
    assert dS.dtype == F32
    assert_close(loss, want_loss, F32)
    assert_close(dS, want, F32)
    loss16, dS16 = fn(S, target, backend=backend, reduction=reduction, **opts)
    assert_close(loss16, want_loss, F32)
    assert_rounded_once(dS16, want)
    for a, k in zip((S, target), keep):
        np.testing.assert_array_equal(a, k)


_LINEAR = rotated(CASES, BACKENDS, ["mean", "sum", "none"])


@pytest.mark.parametrize("case, backend, reduction", _LINEAR, ids=rotated_ids(_LINEAR))
def test_every_head_of_linear_head_in_bfloat16_is_float32_on_the_values(
        case, backend, reduction, rng):
    head, spec = case
    X, W, b, target, opts = make_linear(head, spec, 11, 7, 5, np.float32, rng)
    X, W, b, target, opts = cast(BF16, X, W, b, target, options=opts)
    keep = [np.copy(a) for a in (X, W, b)]
    want = fastbp.linear_head(*cast(F32, X, W, b, target), head, backend="numpy",
                              reduction=reduction, **cast(F32, options=opts)[0])
    g = fastbp.linear_head(X, W, b, target, head, backend=backend, reduction=reduction,
                           grad_dtype=np.float32, **opts)
    assert_close(g.loss, want.loss, F32)
    terms = {"dW": np.abs(W).max() * np.abs(X).sum(0).max(), "dX": np.abs(W).sum(0).max()}
    for k in ("dW", "db", "dX"):
        assert getattr(g, k).dtype == F32
        assert_close(getattr(g, k), getattr(want, k), F32, k, scale=terms.get(k))
    g16 = fastbp.linear_head(X, W, b, target, head, backend=backend, reduction=reduction,
                             **opts)
    assert_close(g16.loss, want.loss, F32)
    for k in ("dW", "db", "dX"):
        assert_rounded_once(getattr(g16, k), getattr(want, k), terms.get(k))
    for a, k in zip((X, W, b), keep):
        np.testing.assert_array_equal(a, k)


@pytest.mark.parametrize("name", VARIANTS)
def test_every_path_runs_bfloat16_calls_across_blocks(name, rng):
    """Several row blocks, column blocks, threads: the float32 kernels on the bfloat16 values,
    every gradient rounded once at the end."""
    for n, head in ((10, "softmax_nll"), (300, "softmax_nll"), (7, "sigmoid_bce")):
        X = rng.standard_normal((70, 33)).astype(BF16)
        W = (0.3 * rng.standard_normal((n, 33))).astype(BF16)
        b = (0.1 * rng.standard_normal(n)).astype(BF16)
        y = rng.integers(0, n, 70) if head == "softmax_nll" else rng.random((70, n)) > 0.5
        y = y if head == "softmax_nll" else y.astype(np.float32)
        want = fastbp.linear_head(*cast(F32, X, W, b), y, head, backend="numpy", chunk_rows=16)
        with variant(name) as backend:
            g = fastbp.linear_head(X, W, b, y, head, backend=backend, grad_dtype=np.float32)
            g16 = fastbp.linear_head(X, W, b, y, head, backend=backend)
        assert_close(g.loss, want.loss, F32)
        for k in ("dW", "db", "dX"):
            assert_close(getattr(g, k), getattr(want, k), F32, k,
                         scale=70 * np.abs(getattr(want, k)).max())
            assert_rounded_once(getattr(g16, k), getattr(want, k),
                                70 * np.abs(getattr(want, k)).max())


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_operands_of_a_bfloat16_call_are_rounded_as_autocast_does(backend, rng):
    """X bfloat16 with W, b float32 (master weights): the products take W and b rounded to
    bfloat16; dW and db come back float32, not rounded; dX bfloat16."""
    X = rng.standard_normal((40, 24)).astype(BF16)
    W = rng.standard_normal((6, 24)).astype(F32)
    b = rng.standard_normal(6).astype(F32)
    y = rng.integers(0, 6, 40)
    g = fastbp.linear_head(X, W, b, y, backend=backend)
    assert (g.dW.dtype, g.db.dtype, g.dX.dtype) == (F32, F32, BF16)
    same = fastbp.linear_head(X, W.astype(BF16), b.astype(BF16), y, backend=backend,
                              grad_dtype=np.float32)
    np.testing.assert_array_equal(g.dW, same.dW)      # the same float32 kernel, the same bits
    np.testing.assert_array_equal(g.db, same.db)
    np.testing.assert_array_equal(g.dX, same.dX.astype(BF16))
    assert g.loss == same.loss
    # float32 arrays with grad_dtype=bfloat16: a float32 call, its gradients rounded once
    g32 = fastbp.linear_head(*cast(F32, X), W, b, y, backend=backend)
    r = fastbp.linear_head(*cast(F32, X), W, b, y, backend=backend, grad_dtype=BF16)
    np.testing.assert_array_equal(r.dW, g32.dW.astype(BF16))
    assert r.loss == g32.loss


@pytest.mark.parametrize("backend", BACKENDS)
def test_bfloat16_out_arrays_are_written(backend, rng):
    X = rng.standard_normal((20, 8)).astype(BF16)
    W = rng.standard_normal((3, 8)).astype(F32)
    y = rng.integers(0, 3, 20)
    out = fastbp.Grads(None, np.empty((3, 8), F32), None, np.empty((20, 8), BF16))
    g = fastbp.linear_head(X, W, None, y, out=out, backend=backend)
    assert g.dW is out.dW and g.dX is out.dX
    want = fastbp.linear_head(X, W, None, y, backend=backend)
    np.testing.assert_array_equal(out.dW, want.dW)
    np.testing.assert_array_equal(out.dX, want.dX)
    S = rng.standard_normal((4, 3)).astype(BF16)
    dS = np.empty((4, 3), BF16)
    loss, got = fastbp.softmax_nll(S, [0, 1, 2, 0], out=dS, backend=backend)
    assert got is dS
    with pytest.raises(TypeError, match="out.dX must have dtype bfloat16 in this call, got "
                                        "float32"):
        fastbp.linear_head(X, W, None, y, backend=backend,
                           out=fastbp.Grads(None, None, None, np.empty((20, 8), F32)))
    with pytest.raises(ValueError, match=r"out.dX must be a writeable array of shape \(20, 8\), "
                                         r"got shape \(10, 8\)"):
        fastbp.linear_head(X, W, None, y, backend=backend,
                           out=fastbp.Grads(None, None, None, np.empty((10, 8), BF16)))


def test_bfloat16_calls_refuse_float64_and_bad_grad_dtypes(rng):
    X = rng.standard_normal((5, 4)).astype(BF16)
    W = rng.standard_normal((3, 4))
    with pytest.raises(TypeError, match="W has dtype float64 but X is bfloat16"):
        fastbp.linear_head(X, W, None, [0, 1, 2, 0, 1])
    with pytest.raises(TypeError, match="weight has dtype float64 but X is bfloat16"):
        fastbp.linear_head(X, W.astype(F32), None, [0, 1, 2, 0, 1], weight=np.ones(3))
    with pytest.raises(TypeError, match="grad_dtype must be None, ml_dtypes.bfloat16, "
                                        "np.float32 or np.float64, got 'int8'"):
        fastbp.linear_head(X, W.astype(F32), None, [0, 1, 2, 0, 1], grad_dtype="int8")
    with pytest.raises(TypeError, match="grad_dtype must be"):
        fastbp.softmax_nll(X, [0, 1, 2, 0, 1], grad_dtype=np.float16)


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 40), d=st.integers(1, 40), n=st.integers(1, 20),
       seed=st.integers(0, 2 ** 16), backend=st.sampled_from(BACKENDS))
def test_property_a_bfloat16_call_is_float32_on_its_values(B, d, n, seed, backend):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, d)).astype(BF16)
    W = rng.standard_normal((n, d)).astype(BF16)
    y = rng.integers(0, n, B)
    g = fastbp.linear_head(X, W, None, y, backend=backend, grad_dtype=np.float32)
    want = fastbp.linear_head(*cast(F32, X, W), None, y, backend=backend)
    assert_close(g.loss, want.loss, F32)
    assert_close(g.dW, want.dW, F32, scale=np.abs(X).sum(0).max())
    assert_close(g.dX, want.dX, F32, scale=np.abs(W).sum(0).max())


@pytest.mark.parametrize("size", [0, 1, 7, 64 * 1024 + 3, 3 * 64 * 1024 + 17])
@pytest.mark.parametrize("fallback", [False, True])
def test_conversions_are_ml_dtypes_bit_for_bit(size, fallback, monkeypatch, rng):
    """fastbp's conversions (the C backend's, on its threads for large arrays, or NumPy's):
    widening exact, narrowing to nearest even (ties included), infinities kept, a NaN a NaN."""
    from fastbp import _bf16
    if fallback:
        monkeypatch.setattr(_bf16, "_c", lambda: None)
    elif _bf16._c() is None:
        pytest.skip("the C backend is not built here")
    bits = rng.integers(0, 2 ** 32, size, dtype=np.uint32)
    bits[: min(size, 6)] = [0x3F808000, 0x3F818000, 0x7F800000, 0xFF800000, 0x00000001,
                            0x7F7FFFFF][: min(size, 6)]       # ties to even, inf, tiny, max
    a = bits.view(np.float32)
    with np.errstate(invalid="ignore"):
        want = a.astype(BF16)
    got = _bf16.convert(a, BF16)
    nan = np.isnan(a)
    assert got.dtype == BF16 and np.isnan(got.astype(F32)[nan]).all()
    np.testing.assert_array_equal(got.view(np.uint16)[~nan], want.view(np.uint16)[~nan])
    np.testing.assert_array_equal(_bf16.convert(got, F32).view(np.uint32),
                                  got.astype(F32).view(np.uint32))
    held = _bf16.convert(a, F32, operand=True)
    np.testing.assert_array_equal(held.view(np.uint32)[~nan],
                                  want.astype(F32).view(np.uint32)[~nan])


@pytest.mark.parametrize("activation", fastbp.ACTIVATIONS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_layers_and_networks_in_bfloat16_are_float32_on_the_values(activation, backend, rng):
    """linear_act_forward / _backward, mlp_forward and mlp_loss_grad: bfloat16 X with a float32
    and a bfloat16 layer; the float32 functions on the same values, the outputs in X's dtype,
    each gradient in its argument's, rounded once."""
    k = 2 if activation == "maxout" else 1
    X = rng.standard_normal((13, 6)).astype(BF16)
    params = [(rng.standard_normal((5 * k, 6)).astype(F32), rng.standard_normal(5 * k).astype(F32)),
              (rng.standard_normal((3, 5)).astype(BF16), rng.standard_normal(3).astype(BF16))]
    values = [tuple(a.astype(BF16).astype(F32) for a in layer) for layer in params]
    y = rng.integers(0, 3, 13)
    X32 = X.astype(F32)
    loss, grads = fastbp.mlp_loss_grad(X, params, y, activation=activation, backend=backend)
    want_loss, want = fastbp.mlp_loss_grad(X32, values, y, activation=activation,
                                           backend="numpy")
    assert_close(loss, want_loss, F32)
    for (dW, db), (wW, wb), (W, b) in zip(grads, want, params):
        assert (dW.dtype, db.dtype) == (W.dtype, b.dtype)
        for got, w in ((dW, wW), (db, wb)):
            if got.dtype == BF16:
                assert_rounded_once(got, w, np.abs(w).max() * 13)
            else:
                assert_close(got, w, F32, scale=np.abs(w).max() * 13)
    _, grads32 = fastbp.mlp_loss_grad(X, params, y, activation=activation, backend=backend,
                                      grad_dtype=np.float32)
    assert all(g.dtype == F32 for pair in grads32 for g in pair)
    S = fastbp.mlp_forward(X, params, activation=activation, backend=backend)
    assert_rounded_once(S, fastbp.mlp_forward(X32, values, activation=activation,
                                              backend="numpy"))
    W, b = params[0]
    A, cache = fastbp.linear_act_forward(X, W, b, activation, backend=backend)
    A32, cache32 = fastbp.linear_act_forward(X32, *values[0], activation, backend="numpy")
    assert_rounded_once(A, A32, np.abs(A32).max())
    dA = rng.standard_normal(A.shape).astype(BF16)
    dX, dW, db = fastbp.linear_act_backward(dA, cache, backend=backend)
    wX, wW, wb = fastbp.linear_act_backward(dA.astype(F32), cache32, backend="numpy")
    assert (dX.dtype, dW.dtype, db.dtype) == (BF16, F32, F32)
    assert_rounded_once(dX, wX, np.abs(wX).max() * 6)
    assert_close(dW, wW, F32, scale=np.abs(wW).max() * 13)
    assert_close(db, wb, F32, scale=np.abs(wb).max() * 13)


@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
def test_an_mlp_trains_float32_parameters_on_bfloat16_batches(optimizer, rng):
    """MLP.step / epoch / loss_grad on a bfloat16 batch: the step of the float32 network on
    the batch's and the parameters' bfloat16 values (the gradients float32, unrounded), the
    parameters float32 throughout."""
    X = rng.standard_normal((24, 5)).astype(BF16)
    y = rng.integers(0, 3, 24)
    sw = rng.random(24).astype(F32) + 0.5
    a, b = (fastbp.MLP([5, 4, 3], seed=1) for _ in range(2))
    oa, ob = (getattr(fastbp, optimizer)(lr=0.1) for _ in range(2))
    for _ in range(2):
        loss_a = a.epoch(X, y, optimizer=oa, batch_size=10, sample_weight=sw)
        total = 0.0
        for lo in range(0, 24, 10):               # the float32 steps on the same values
            rows = slice(lo, lo + 10)
            rounded = [tuple(p.astype(BF16).astype(F32) for p in layer) for layer in b.params]
            loss, grads = fastbp.mlp_loss_grad(X[rows].astype(F32), rounded, y[rows],
                                               sample_weight=sw[rows])
            ob.update(b.params, grads)
            total += len(y[rows]) * loss
        assert_close(loss_a, total / 24, F32)
    for pa, pb in zip((p for layer in a.params for p in layer),
                      (p for layer in b.params for p in layer)):
        assert pa.dtype == F32
        assert_close(pa, pb, F32)
    loss, grads = a.loss_grad(X, y)
    assert grads[0][0].dtype == F32 and grads[0][0] is a.grads[0][0]
    with pytest.raises(TypeError, match="dtype must be float32 or float64 .*bfloat16 batches"):
        fastbp.MLP([5, 3], dtype=BF16)


@pytest.mark.parametrize("tile", _tiles())
@pytest.mark.parametrize("B, d, n", [(9, 5, 3), (70, 33, 7), (300, 64, 10), (40, 48, 13)])
def test_every_kernel_set_reads_bfloat16_rows_in_its_blocks(tile, B, d, n, rng):
    """The C fused rows on a bfloat16 X (linear_head_bf16: rows widened a block at a time, dX
    rounded as a block ends): every kernel set, partial and whole vectors, several blocks and
    class groups; dX bfloat16 or float32 (grad_dtype), or not asked; the float32 reference on
    the same values."""
    X = rng.standard_normal((B, d)).astype(BF16)
    W = (0.3 * rng.standard_normal((n, d))).astype(F32)
    b = rng.standard_normal(n).astype(BF16)
    y = rng.integers(0, n, B)
    want = fastbp.linear_head(X.astype(F32), W.astype(BF16).astype(F32), b.astype(F32), y,
                              backend="numpy", label_smoothing=0.1)
    c = fastbp._dispatch.backend_module("c")
    calls = []
    real = c.linear_head_bf16

    def spy(*args):
        calls.append(args[0].dtype)
        return real(*args)
    with _tile(tile) as backend, pytest.MonkeyPatch.context() as mp:
        mp.setattr(c, "linear_head_bf16", spy)
        g16 = fastbp.linear_head(X, W, b, y, backend=backend, label_smoothing=0.1)
        g32 = fastbp.linear_head(X, W, b, y, backend=backend, label_smoothing=0.1,
                                 grad_dtype=np.float32)
        none = fastbp.linear_head(X, W, b, y, backend=backend, label_smoothing=0.1,
                                  need_dX=False)
    assert calls == [np.uint16] * 3                 # (the kernel read X as bfloat16 each time)
    assert (g16.dW.dtype, g16.db.dtype, g16.dX.dtype) == (F32, BF16, BF16)
    assert none.dX is None and g32.dX.dtype == F32
    for g in (g16, g32, none):
        assert_close(g.loss, want.loss, F32)
        assert_close(g.dW, want.dW, F32, scale=np.abs(want.dW).max() * B)
    assert_close(g32.dX, want.dX, F32, scale=np.abs(want.dX).max() * n)
    assert_rounded_once(g16.dX, want.dX, np.abs(want.dX).max() * n)
    assert_rounded_once(g16.db, want.db, np.abs(want.db).max() * B)



@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_dtype_converts_the_gradients_of_any_call(dtype, backend, rng):
    """grad_dtype on a float32 or float64 call (no bfloat16 array): the call as it is, its
    gradients converted once at the end."""
    S = rng.standard_normal((6, 4)).astype(dtype)
    y = rng.integers(0, 4, 6)
    loss, dS = fastbp.softmax_nll(S, y, backend=backend)
    for want in (BF16, F32, np.float64):
        got_loss, got = fastbp.softmax_nll(S, y, backend=backend, grad_dtype=want)
        assert got_loss == loss and got.dtype == np.dtype(want)
        np.testing.assert_array_equal(got, dS.astype(want))
    X, W = rng.standard_normal((6, 5)).astype(dtype), rng.standard_normal((4, 5)).astype(dtype)
    g = fastbp.linear_head(X, W, None, y, backend=backend, label_smoothing=0.1)
    r = fastbp.linear_head(X, W, None, y, backend=backend, label_smoothing=0.1,
                           grad_dtype=BF16)
    assert r.loss == g.loss and (r.dW.dtype, r.dX.dtype) == (BF16, BF16)
    np.testing.assert_array_equal(r.dX, g.dX.astype(BF16))

# ---------------------------------------------------------------- the bfloat16 products (C)
def _dot_modes():
    """The C backend's bfloat16 product sets this host runs: their arithmetic emulated
    everywhere, vdpbf16ps itself where the CPU has AVX512-BF16."""
    from fastbp.backends import c_kernels
    return ["emulate"] + (["auto"] if c_kernels._DOT16_BUILT else [])


def _dot_call(mode, monkeypatch, X, W, *args, **kw):
    """linear_head on the C backend with tuning.C.BF16_DOT = mode, and the bfloat16 product
    set its plan takes (0: none)."""
    from fastbp.backends import c_kernels, tuning
    monkeypatch.setattr(tuning.C, "BF16_DOT", mode)
    g = fastbp.linear_head(X, W, *args, backend="c", **kw)
    p = c_kernels.call_plan(F32, *X.shape, W.shape[0], args[2] if len(args) > 2 else
                            "softmax_nll", {}, kw.get("chunk_rows"))
    return g, tuning.bf16_dot("c", p, X.shape[1], c_kernels._DOT16_BUILT)


_DOT_CASES = [(c, r) for i, c in enumerate(c for c in CASES if c[0] != "binary_hinge")
              for r in (["mean", "sum"][i % 2],)]


@pytest.mark.skipif("c" not in BACKENDS, reason="the C backend's kernels")
@pytest.mark.parametrize("mode", _dot_modes())
@pytest.mark.parametrize("case, reduction", _DOT_CASES, ids=[f"{c[0]}-{i}" for i, (c, _) in
                                                            enumerate(_DOT_CASES)])
def test_bfloat16_products_are_the_float32_call_with_the_score_gradient_rounded(
        case, reduction, mode, monkeypatch, rng):
    """The chunked path's bfloat16 products (csrc/dot16.h), every head and option: the loss and
    db those of the float32 kernels on the same values; dW and dX theirs with G rounded to
    bfloat16 for the backward products: within 2^-8 |G|^T |X| and 2^-8 |G| |W| (a rounding
    of each G entry is within 2^-9 of it), beyond float32's 1e-5 of those terms."""
    head, spec = case
    X, W, b, target, opts = make_linear(head, spec, 45, 24, 301, F32, rng)
    X, W, b, target, opts = cast(BF16, X, W, b, target, options=opts)
    kw = dict(head=head, reduction=reduction, chunk_rows=16, grad_dtype=np.float32, **opts)
    want, off = _dot_call("off", monkeypatch, X, W, b, target, **kw)
    got, dot = _dot_call(mode, monkeypatch, X, W, b, target, **kw)
    assert (off, dot) == (0, 2 if mode == "emulate" else 1)
    Xf, Wf, bf = cast(F32, X, W, b)
    o32 = cast(F32, options=opts)[0]
    _, G = getattr(fastbp, head)(Xf @ Wf.T + bf, cast(F32, target)[0], backend="numpy",
                                 reduction=reduction, **o32)
    assert_close(got.loss, want.loss, F32)
    assert_close(got.db, want.db, F32, "db", scale=np.abs(G).sum(0).max())
    for k, terms in (("dW", np.abs(G).T @ np.abs(Xf)), ("dX", np.abs(G) @ np.abs(Wf))):
        err = np.abs(getattr(got, k).astype(np.float64) - getattr(want, k))
        assert np.all(err <= 2.0 ** -8 * terms + 1e-5 * terms.max()), k
    if not np.array_equal(G, G.astype(BF16).astype(F32)):     # (G rounded: this path ran)
        assert not np.array_equal(got.dW, want.dW)


@pytest.mark.skipif("c" not in BACKENDS, reason="the C backend's kernels")
@pytest.mark.parametrize("mode", _dot_modes())
def test_bfloat16_products_give_the_same_bits_run_to_run_and_on_any_team(mode, monkeypatch,
                                                                         rng):
    """dW, db and the loss sum in an order the team does not change (dX's tree of partials
    depends on it, as in float32); d odd takes the conversion path."""
    X = rng.standard_normal((77, 40)).astype(BF16)
    W = (0.3 * rng.standard_normal((700, 40))).astype(BF16)
    y = rng.integers(0, 700, 77)
    runs, before = [], fastbp.get_num_threads()
    try:
        for threads in (1, 2, 2, 3):      # (OpenMP runs 3 threads on any core count)
            fastbp.set_num_threads(threads)
            g, dot = _dot_call(mode, monkeypatch, X, W, None, y, chunk_rows=32)
            assert dot
            runs.append(g)
    finally:
        fastbp.set_num_threads(before)
    for g in runs[1:]:
        assert g.loss == runs[0].loss
        np.testing.assert_array_equal(g.dW, runs[0].dW)
    np.testing.assert_array_equal(runs[2].dX, runs[1].dX)
    assert _dot_call(mode, monkeypatch, X[:, :39], W[:, :39], None, y, chunk_rows=32)[1] == 0


@pytest.mark.skipif("c" not in BACKENDS, reason="the C backend's kernels")
@pytest.mark.parametrize("mode", _dot_modes())
def test_bfloat16_products_with_filter_eps_skip_the_inactive_classes(mode, monkeypatch, rng):
    """filter_eps on the bfloat16 products: the float32 kernels' filtered call (the same active
    classes per block) with G rounded, as above; the loss and db those of the exact call, bit
    for bit; classes were skipped."""
    from test_linear_head import _peaked
    X, W, b, y, _ = _peaked(F32, rng, B=45, d=24, n=301)
    X, W, b = cast(BF16, X, W, b)
    kw = dict(chunk_rows=16, grad_dtype=np.float32)
    want, off = _dot_call("off", monkeypatch, X, W, b, y, filter_eps=1e-4, **kw)
    got, dot = _dot_call(mode, monkeypatch, X, W, b, y, filter_eps=1e-4, **kw)
    exact, _ = _dot_call(mode, monkeypatch, X, W, b, y, **kw)
    assert (off, dot) == (0, 2 if mode == "emulate" else 1)
    Xf, Wf, bf = cast(F32, X, W, b)
    _, G = fastbp.softmax_nll(Xf @ Wf.T + bf, y, backend="numpy")
    for k, terms in (("dW", np.abs(G).T @ np.abs(Xf)), ("dX", np.abs(G) @ np.abs(Wf))):
        err = np.abs(getattr(got, k).astype(np.float64) - getattr(want, k))
        assert np.all(err <= 2.0 ** -8 * terms + 1e-5 * terms.max()), k
    assert got.loss == exact.loss and np.array_equal(got.db, exact.db)
    assert not np.array_equal(got.dW, exact.dW)


@pytest.mark.skipif("c" not in BACKENDS, reason="the C backend's kernels")
@settings(max_examples=25, deadline=None)
@given(B=st.integers(0, 70), d=st.integers(1, 40), n=st.integers(256, 330),
       chunk=st.integers(1, 40), threads=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_property_the_bfloat16_products_are_float32_with_G_rounded(B, d, n, chunk, threads,
                                                                    seed):
    """Any rows (odd, one, none), any even d (an odd one the conversion path), any block and
    team: within G's rounding of the float32 kernels on the same values."""
    from fastbp.backends import tuning
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, d)).astype(BF16)
    W = (0.3 * rng.standard_normal((n, d))).astype(BF16)
    y = rng.integers(0, n, B)
    kw = dict(chunk_rows=chunk, grad_dtype=np.float32)
    before, threads_before = tuning.C.BF16_DOT, fastbp.get_num_threads()
    try:
        fastbp.set_num_threads(threads)
        tuning.C.BF16_DOT = "off"
        want = fastbp.linear_head(X, W, None, y, backend="c", **kw)
        tuning.C.BF16_DOT = "emulate"
        got = fastbp.linear_head(X, W, None, y, backend="c", **kw)
    finally:
        tuning.C.BF16_DOT = before
        fastbp.set_num_threads(threads_before)
    Xf, Wf = cast(F32, X, W)
    _, G = fastbp.softmax_nll(Xf @ Wf.T, y, backend="numpy")
    assert_close(got.loss, want.loss, F32)
    for k, terms in (("dW", np.abs(G).T @ np.abs(Xf)), ("dX", np.abs(G) @ np.abs(Wf))):
        err = np.abs(getattr(got, k).astype(np.float64) - getattr(want, k))
        assert np.all(err <= 2.0 ** -8 * terms + 1e-5 * np.max(terms, initial=0) + 1e-30), k
