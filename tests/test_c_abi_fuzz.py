"""The C ABI under fire: every exported kernel of csrc/fastbp.h called through cffi directly,
past every Python check, with random shapes, buffers of exactly the size the shape implies
(from C's malloc, so AddressSanitizer sees a read one element past them), extreme values and
random head structs. Each call must return a status; where the arguments meet the header's
documented preconditions it must be FBP_OK with the NumPy reference's numbers (for finite data
of ordinary size; extreme data must only stay memory-safe). A broken precondition must be
FBP_EBADARG with no output written.

``make test`` runs a few examples per kernel; ``make fuzz`` runs many under ASan + UBSan
(FASTBP_FUZZ_EXAMPLES)."""
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastbp
from cases import (assert_close, assert_linear_grads_close, cast_floats, head_cases,
                   make_head_inputs)

pytestmark = [pytest.mark.asan, pytest.mark.skipif("c" not in fastbp.available_backends(),
                                reason="the C backend is not built")]
EXAMPLES = int(os.environ.get("FASTBP_FUZZ_EXAMPLES", "25"))
fuzz = settings(max_examples=EXAMPLES, deadline=None)

if "c" in fastbp.available_backends():
    from cffi import FFI

    from fastbp.backends import c_kernels, reference
    ffi, lib = c_kernels.ffi, c_kernels.lib
    _libc_ffi = FFI()
    _libc_ffi.cdef("void *malloc(size_t size); void free(void *p);")
    _libc = _libc_ffi.dlopen(None)


class Exact:
    """Arrays copied into buffers of exactly their size from C's malloc (ASan's redzones sit
    right after them); freed on exit."""

    def __enter__(self):
        self.blocks = []
        return self

    def __call__(self, a):
        if a is None:
            return None
        a = np.ascontiguousarray(a)
        ptr = _libc.malloc(max(a.nbytes, 1))
        self.blocks.append(ptr)
        view = np.frombuffer(_libc_ffi.buffer(ptr, max(a.nbytes, 1)), np.uint8)[:a.nbytes]
        out = view.view(a.dtype).reshape(a.shape)
        out[...] = a
        return out

    def __exit__(self, *exc):
        for ptr in self.blocks:
            _libc.free(ptr)


def p(t, a):
    """A typed pointer to a's data, NULL for None."""
    return ffi.NULL if a is None else ffi.from_buffer(t.ty, a)


def extreme(rng, shape, dtype):
    """Values across the whole range: huge, tiny, subnormal, +-inf, NaN, ordinary."""
    pool = np.array([0.0, -0.0, 1.0, -1.0, 1e-310, 1e30, -1e30, 1e300, -1e300, np.inf, -np.inf,
                     np.nan, 3.5, -7.25], np.float64)
    with np.errstate(over="ignore"):
        return rng.choice(pool, size=shape).astype(dtype)


def _close_to_terms(got, want, dtype, terms):
    """float64: 1e-10 relative; float32: within 1e-4 of the size of the terms that were summed
    (a loss that cancels, such as a hinge just past its margin, keeps float32's absolute error)."""
    rtol = 1e-10 if np.dtype(dtype) == np.float64 else 1e-4
    want = np.asarray(want, np.float64)
    scale = max(float(np.abs(want).max(initial=0.0)), 1e-30)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol,
                               atol=rtol * max(scale, terms))


CASES = head_cases()
dtypes = st.sampled_from([np.float32, np.float64])
seeds = st.integers(0, 2 ** 32 - 1)


def random_head(rng, t, case, B, n, dtype, ex, values):
    """(fbp_head, scores, target, options) for a case; values "extreme" fills the scores and
    float targets with extreme values and the scalar options with random ones."""
    head, spec = case
    S, target, opts = make_head_inputs(head, spec, B, n, dtype, rng)
    S = S.reshape(B, 1) if S.ndim == 1 else S           # binary_hinge: s (B,)
    if values == "extreme":
        S = extreme(rng, S.shape, dtype)
        if np.asarray(target).dtype.kind == "f":
            target = extreme(rng, target.shape, dtype)
    target = ex(np.asarray(target if np.asarray(target).dtype.kind == "f"
                           else np.asarray(target, np.intp)))
    opts = {k: ex(v) if isinstance(v, np.ndarray) else v for k, v in opts.items()}
    h = c_kernels._head(t, head, target, {**fastbp._checks.HEAD_OPTIONS[head], **opts})
    if values == "extreme":         # any scalar the struct can hold: memory-safe all the same
        for field in ("label_smoothing", "margin", "delta", "alpha", "gamma"):
            setattr(h, field, float(rng.choice([-1e300, -1.0, 0.0, 0.5, 2.0, 1e300, np.nan])))
        h.p = int(rng.choice([-1, 0, 1, 2, 3]))
    return h, ex(S), target, opts


@fuzz
@given(case=st.sampled_from(CASES), B=st.integers(0, 9), n=st.integers(1, 9), dtype=dtypes,
       values=st.sampled_from(["ordinary", "extreme"]), mean=st.booleans(), seed=seeds)
def test_heads_kernel(case, B, n, dtype, values, mean, seed):
    rng, t = np.random.default_rng(seed), c_kernels._T[np.dtype(dtype)]
    with Exact() as ex:
        h, S, target, opts = random_head(rng, t, case, B, n, dtype, ex, values)
        n = S.shape[1]
        dS, rows, sums = ex(np.empty_like(S)), ex(np.empty(B)), ffi.new("double[2]")
        status = t.heads(p(t, dS), p(c_kernels._F64, rows), sums, p(t, S), h, mean, B, n)
        assert status == lib.FBP_OK
        if values == "ordinary":        # against float64, to the rounding of float32's terms
            head = case[0]
            S64, t64, o64 = cast_floats(np.float64, S, target, options=opts)
            with np.errstate(all="ignore"):
                want = getattr(fastbp, head)(S64.reshape(-1) if head == "binary_hinge" else S64,
                                             t64, reduction="none", backend="numpy", **o64)
            _close_to_terms(rows, want[0], dtype, n * max(1.0, float(np.abs(S64).max(initial=0))))


@fuzz
@given(kind=st.integers(0, 2), M=st.integers(0, 40), N=st.integers(0, 40), K=st.integers(0, 9),
       dtype=dtypes, seed=seeds)
def test_own_products_kernel(kind, M, N, K, dtype, seed):
    """own_products_* on exactly-sized buffers: C = A B^T, A B or A^T B."""
    rng, t = np.random.default_rng(seed), c_kernels._T[np.dtype(dtype)]
    shapes = [((M, K), (N, K)), ((M, K), (K, N)), ((K, M), (K, N))][kind]
    with Exact() as ex:
        A, B = (ex(rng.standard_normal(s).astype(dtype)) for s in shapes)
        C = ex(np.full((M, N), 7, dtype))
        status = getattr(lib, f"own_products_{'f64' if dtype == np.float64 else 'f32'}")(
            kind, p(t, C), p(t, A), p(t, B), M, N, K)
        assert status == lib.FBP_OK
        want = [lambda: A @ B.T, lambda: A @ B, lambda: A.T @ B][kind]()
        np.testing.assert_allclose(C, want, rtol=1e-4, atol=1e-4 * max(K, 1))


@fuzz
@given(case=st.sampled_from(CASES), B=st.integers(0, 9), d=st.integers(0, 7),
       n=st.integers(1, 9), dtype=dtypes, values=st.sampled_from(["ordinary", "extreme"]),
       path=st.sampled_from(["fused", "chunked", "columns", "filtered", "own", "own filtered"]),
       nblocks=st.integers(1, 5),
       chunk=st.integers(1, 6), bias=st.booleans(), need_dX=st.booleans(), seed=seeds)
def test_linear_kernels(case, B, d, n, dtype, values, path, nblocks, chunk, bias, need_dX, seed):
    rng, t = np.random.default_rng(seed), c_kernels._T[np.dtype(dtype)]
    head = case[0]
    # column blocks: softmax_nll without softcap / z_loss (whose rows need all their scores)
    cols = (max(1, n // 2) if path == "columns" and head == "softmax_nll"
            and not case[1].get("softcap") and not case[1].get("z_loss") else None)
    with Exact() as ex:
        h, S, target, opts = random_head(rng, t, case, B, n, dtype, ex, values)
        n = S.shape[1]
        X = ex(rng.standard_normal((B, d)).astype(dtype) if values == "ordinary"
               else extreme(rng, (B, d), dtype))
        W = ex(rng.standard_normal((n, d)).astype(dtype))
        b = ex(rng.standard_normal(n).astype(dtype)) if bias else None
        dW, db = ex(np.empty((n, d), dtype)), ex(np.empty(n, dtype)) if bias else None
        dX = ex(np.empty((B, d), dtype)) if need_dX else None
        sums = ffi.new("double[2]")
        args = (p(t, dW), p(t, db), p(t, dX), sums, p(t, X), p(t, W), p(t, b), h, 1)
        # filter_eps: on softmax_nll's row blocks, 1e30 skips every finite gradient entry
        filter_eps = 1e30 if path.endswith("filtered") and head == "softmax_nll" else 0.0
        if path == "fused":
            status = t.linear_fused(*args, nblocks, B, d, n)
        else:
            own = seed % 4 if path.startswith("own") else 0   # FBP_OWN_* bits (products.h)
            # any team (at most the thread count runs), by rows where exact
            team, by_rows = 1 + seed % 3, int(not filter_eps and seed % 5 < 2)
            status = t.linear_chunked(*args, chunk, cols or n, filter_eps, own, team, by_rows,
                                      B, d, n)
        assert status == lib.FBP_OK
        if filter_eps and values == "ordinary":
            assert not dW.any() and (dX is None or not dX.any())
        elif values == "ordinary" and B:
            # against float64 on the same inputs, to the rounding of float32's terms
            X64, W64, b64, t64, o64 = cast_floats(np.float64, X, W, b, target, options=opts)
            S64 = X64 @ W64.T + (0 if b64 is None else b64)
            with np.errstate(all="ignore"):     # nll on raw scores: log of a negative is NaN
                loss, dS = getattr(fastbp, head)(S64.reshape(-1) if head == "binary_hinge"
                                                 else S64, t64, backend="numpy", **o64)
            g = fastbp.Grads(sums[0] / sums[1] if sums[1] else np.nan, dW, db, dX)
            _close_to_terms(g.loss, loss, dtype, n * max(1.0, float(np.abs(S64).max())))
            if path != "fused" and not cols:     # the loss alone, rows into an exact buffer
                rows, alone = ex(np.full(B, 7.0)), ffi.new("double[2]")
                assert t.linear_loss(p(c_kernels._F64, rows), alone, p(t, X), p(t, W), p(t, b),
                                     h, chunk, own, team, by_rows, B, d, n) == lib.FBP_OK
                assert alone[0] == pytest.approx(sums[0], rel=1e-12, nan_ok=True)
                assert alone[1] == sums[1]
                assert rows.sum() == pytest.approx(alone[0], rel=1e-9, nan_ok=True)
            # (the gradients against dS's terms; the loss was checked above)
            assert_linear_grads_close(g._replace(loss=loss), loss, dS.reshape(B, -1), X64, W64,
                                      dtype)


@fuzz
@given(case=st.sampled_from(CASES), B=st.integers(0, 9), half_d=st.integers(0, 5),
       n=st.integers(1, 9), values=st.sampled_from(["ordinary", "extreme"]),
       chunk=st.integers(1, 6), bias=st.booleans(), need_dX=st.booleans(),
       filtered=st.booleans(), hw=st.booleans(), seed=seeds)
def test_bfloat16_products_kernel(case, B, half_d, n, values, chunk, bias, need_dX, filtered, hw,
                                  seed):
    """linear_chunked_bf16 (csrc/dot16.h; vdpbf16ps where built and the CPU has it, else its
    arithmetic emulated): exact buffers of bfloat16 bits, any head, team and block; against
    float64 on the bfloat16 values within the rounding of G (2^-8 of the terms |G|^T |X| and
    |G| |W|) and float32's 1e-4 of them; an odd d, a misaligned X or a filter on another head
    is FBP_EBADARG with nothing written."""
    import ml_dtypes
    rng, t, d = np.random.default_rng(seed), c_kernels._T[np.dtype(np.float32)], 2 * half_d
    head, bits = case[0], np.dtype(ml_dtypes.bfloat16)
    dot = 1 if hw and c_kernels._DOT16_BUILT else 2
    with Exact() as ex:
        h, S, target, opts = random_head(rng, t, case, B, n, np.float32, ex, values)
        n = S.shape[1]
        Xv = (rng.standard_normal((B, d)) if values == "ordinary"
              else extreme(rng, (B, d), np.float32)).astype(bits)
        Wv = rng.standard_normal((n, d)).astype(bits)
        X16, W16 = ex(Xv.view(np.uint16)), ex(Wv.view(np.uint16))
        b = ex(rng.standard_normal(n).astype(bits).astype(np.float32)) if bias else None
        dW, db = ex(np.full((n, d), 7, np.float32)), ex(np.empty(n, np.float32)) if bias else None
        dX = ex(np.empty((B, d), np.float32)) if need_dX else None
        sums, u16 = ffi.new("double[2]"), ffi.typeof("uint16_t[]")
        filter_eps = 1e30 if filtered and head == "softmax_nll" else 0.0
        team = 1 + seed % 3

        def call(X, dd, eps):
            return lib.linear_chunked_bf16(p(t, dW), p(t, db), p(t, dX), sums,
                                           ffi.from_buffer(u16, X), ffi.from_buffer(u16, W16),
                                           p(t, b), h, 1, chunk, eps, team, dot, B, dd, n)
        refused = [call(X16, d + 1, 0.0)] if d else []            # an odd d
        if head != "softmax_nll":
            refused.append(call(X16, d, 1e-3))                      # a filter on another head
        if B and d > 2:
            refused.append(call(X16.reshape(-1)[1:1 + B * (d - 2)], d - 2, 0.0))   # misaligned
        assert all(r == lib.FBP_EBADARG for r in refused) and (dW == 7).all()
        assert call(X16, d, filter_eps) == lib.FBP_OK
        if filter_eps and values == "ordinary":
            assert not dW.any() and (dX is None or not dX.any())
        elif values == "ordinary" and B:
            X64, W64 = Xv.astype(np.float64), Wv.astype(np.float64)
            b64, t64, o64 = cast_floats(np.float64, b, target, options=opts)[0:3]
            S64 = X64 @ W64.T + (0 if b64 is None else b64)
            with np.errstate(all="ignore"):
                loss, dS = getattr(fastbp, head)(S64.reshape(-1) if head == "binary_hinge"
                                                 else S64, t64, backend="numpy", **o64)
            dS = np.asarray(dS).reshape(B, -1)
            if np.isfinite(dS).all() and np.isfinite(loss):
                _close_to_terms(sums[0] / sums[1], loss, np.float32,
                                n * max(1.0, float(np.abs(S64).max())))
                for got, want, terms in ((dW, dS.T @ X64, np.abs(dS).T @ np.abs(X64)),
                                         (dX, dS @ W64, np.abs(dS) @ np.abs(W64))):
                    if got is not None:
                        slack = 2.0 ** -8 * terms + 1e-4 * max(terms.max(initial=0), 1e-30)
                        assert np.all(np.abs(got - want) <= slack)


@fuzz
@given(bad=st.sampled_from(["B", "n", "d", "nblocks", "chunk", "cols", "code", "NULL head",
                            "columns of a non-softmax head", "columns with softcap",
                            "filter_eps", "filter_eps of a non-softmax head", "team",
                            "by_rows", "filter_eps by rows"]),
       value=st.integers(-3, 0), dtype=dtypes, seed=seeds)
def test_broken_preconditions_are_refused_before_writing(bad, value, dtype, seed):
    rng, t = np.random.default_rng(seed), c_kernels._T[np.dtype(dtype)]
    B, d, n = 4, 3, 5
    non_softmax = bad in ("columns of a non-softmax head", "filter_eps of a non-softmax head")
    case = ("multiclass_hinge" if non_softmax else "softmax_nll",
            {"target": "labels", "weight": None, "sample_weight": None, "ignore_index": -100,
             "label_smoothing": 0.0, "margin": 1.0, "p": 1})
    case = (case[0], {k: v for k, v in case[1].items()
                      if k == "target" or k in fastbp._checks.HEAD_OPTIONS[case[0]]})
    with Exact() as ex:
        h, S, target, _ = random_head(rng, t, case, B, n, dtype, ex, "ordinary")
        X, W = ex(rng.standard_normal((B, d)).astype(dtype)), ex(np.ones((n, d), dtype))
        dW, dX = ex(np.full((n, d), 7, dtype)), ex(np.full((B, d), 7, dtype))
        dims = {"B": B, "n": n, "d": d, "nblocks": 1, "chunk": 2, "cols": n}
        if bad in dims:
            dims[bad] = value if bad != "n" else min(value, 0)
            if bad in ("d", "B") and value == 0:
                dims[bad] = -1
        if bad == "code":
            h.code = int(rng.choice([-1, lib.FBP_NUM_HEADS, 1 << 40]))
        if bad in ("columns of a non-softmax head", "columns with softcap"):
            dims["cols"] = 2
        if bad == "columns with softcap":
            h.softcap = 5.0
        # negative, NaN, or any filter on a hinge
        filter_eps = {"filter_eps": [-1e-3, float("nan")][value % 2],
                      "filter_eps of a non-softmax head": 1e-3,
                      "filter_eps by rows": 1e-3}.get(bad, 0.0)
        team = value if bad == "team" else 1                  # team < 1
        by_rows = {"by_rows": value - 1, "filter_eps by rows": 1}.get(bad, 0)   # not 0 / 1
        head = ffi.NULL if bad == "NULL head" else h
        common = (p(t, dW), ffi.NULL, p(t, dX), ffi.new("double[2]"), p(t, X), p(t, W),
                  ffi.NULL, head, 1)
        statuses = []
        if bad != "nblocks":
            statuses.append(t.linear_chunked(*common, dims["chunk"], dims["cols"], filter_eps,
                                             value % 2, team, by_rows, dims["B"], dims["d"],
                                             dims["n"]))
        if bad not in ("chunk", "cols", "columns of a non-softmax head", "columns with softcap",
                       "filter_eps", "filter_eps of a non-softmax head", "team", "by_rows",
                       "filter_eps by rows"):
            statuses.append(t.linear_fused(*common, dims["nblocks"], dims["B"], dims["d"],
                                           dims["n"]))
        if bad in ("B", "n", "code", "NULL head"):
            statuses.append(t.heads(p(t, ex(np.full((B, n), 7, dtype))), ffi.NULL,
                                    ffi.new("double[2]"), p(t, S), head, 1, dims["B"],
                                    dims["n"]))
        assert all(s == lib.FBP_EBADARG for s in statuses), statuses
        assert (dW == 7).all() and (dX == 7).all()


@fuzz
@given(activation=st.sampled_from([a for a in fastbp.ACTIVATIONS]), B=st.integers(0, 8),
       d=st.integers(1, 7), m=st.integers(1, 8), dtype=dtypes,
       values=st.sampled_from(["ordinary", "extreme"]), bias=st.booleans(),
       need_dX=st.booleans(), seed=seeds)
def test_layer_kernels(activation, B, d, m, dtype, values, bias, need_dX, seed):
    rng, t = np.random.default_rng(seed), c_kernels._T[np.dtype(dtype)]
    k = 2 if activation == "maxout" else 1
    alpha = {"leaky_relu": 0.1, "elu": 1.0, "maxout": 2}.get(activation)
    code, a, k = c_kernels._act(activation, alpha)
    with Exact() as ex:
        X = ex(rng.standard_normal((B, d)).astype(dtype) if values == "ordinary"
               else extreme(rng, (B, d), dtype))
        W = ex(rng.standard_normal((m * k, d)).astype(dtype))
        b = ex(rng.standard_normal(m * k).astype(dtype)) if bias else None
        A = ex(np.empty((B, m), dtype))
        win = ex(np.empty((B, m), np.intp)) if activation == "maxout" else None
        status = t.linear_act_forward(p(t, A), c_kernels._labels(win), p(t, X), p(t, W),
                                      p(t, b), code, a, k, B, d, m * k)
        assert status == lib.FBP_OK
        dA = ex(rng.standard_normal((B, m)).astype(dtype))
        dX = ex(np.empty((B, d), dtype)) if need_dX else None
        dW, db = ex(np.empty((m * k, d), dtype)), ex(np.empty(m * k, dtype)) if bias else None
        status = t.linear_act_backward(p(t, dX), p(t, dW), p(t, db), p(t, dA), p(t, A),
                                       c_kernels._labels(win), p(t, X), p(t, W), code, a, k,
                                       B, d, m * k)
        assert status == lib.FBP_OK
        if values == "ordinary":
            want_A, want_win = reference.linear_act_forward(X, W, b, activation, alpha)
            assert_close(A, want_A, dtype)
            cache = fastbp._checks.LayerCache(X, W, b, activation, alpha, want_A, want_win)
            wdX = np.empty_like(X) if need_dX else None
            wdW, wdb = np.empty_like(W), np.empty_like(b) if bias else None
            reference.linear_act_backward(dA, cache, wdX, wdW, wdb)
            # f'(a) cancels near saturation (1 - a^2): the rounding is that of dA's terms
            aA = np.abs(dA.astype(np.float64))
            aW = np.abs(W.astype(np.float64)).reshape(k, m, d).max(axis=0)   # any piece
            terms = {"dX": (aA @ aW).max(initial=0),
                     "dW": (aA.T @ np.abs(X.astype(np.float64))).max(initial=0),
                     "db": aA.sum(axis=0).max(initial=0)}
            for name, got, exp in (("dX", dX, wdX), ("dW", dW, wdW), ("db", db, wdb)):
                if exp is not None:
                    _close_to_terms(got, exp, dtype, terms[name])


@fuzz
@given(case=st.sampled_from([c for c in CASES if c[0] != "nll"]), B=st.integers(1, 9),
       widths=st.lists(st.integers(1, 6), min_size=1, max_size=3), dtype=dtypes,
       activation=st.sampled_from([a for a in fastbp.ACTIVATIONS if a != "maxout"]),
       adam=st.booleans(), batch=st.integers(1, 9), seed=seeds)
def test_training_step_kernel(case, B, widths, dtype, activation, adam, batch, seed):
    """mlp_step: one call per epoch of `batch`-row steps; its first step's loss is the
    reference's loss on the first batch, with the parameters as they were."""
    rng, t = np.random.default_rng(seed), c_kernels._T[np.dtype(dtype)]
    head = case[0]
    n = 1 if head == "binary_hinge" else widths[-1]
    sizes = [widths[0]] + widths[1:-1] + [n] if len(widths) > 1 else [widths[0], n]
    with Exact() as ex:
        h, _, target, opts = random_head(rng, t, case, B, n, dtype, ex, "ordinary")
        X = ex(rng.standard_normal((B, sizes[0])).astype(dtype))
        params = [(ex((rng.standard_normal((o, i)) / np.sqrt(i)).astype(dtype)),
                   ex(np.zeros(o, dtype))) for i, o in zip(sizes, sizes[1:])]
        first = min(batch, B)
        first_opts = {k: v[:first] if k == "sample_weight" else v for k, v in opts.items()}
        want, _ = fastbp.layers._mlp_loss_grad(X[:first], [(W.copy(), b.copy()) for W, b in params],
                                               target[:first], activation, None, head,
                                               first_opts, None, "numpy")
        flat = [a for pair in params for a in pair]
        arrays = flat + [ex(np.zeros_like(a)) for a in flat] * 3
        ptrs = ffi.new(t.ptrs, [p(t, a) for a in arrays])
        widths_c = ffi.new("int64_t[]", sizes)
        steps = -(-B // batch)
        losses = ffi.new("double[]", steps)
        code, a, _ = c_kernels._act(activation, None if activation not in ("leaky_relu", "elu")
                                    else 0.1)
        status = t.mlp_step(losses, ptrs, widths_c, len(params), p(t, X), code, a, h, 1,
                            lib.FBP_ADAM if adam else lib.FBP_SGD, 0.01, 0.9, 0, 0.0, 0.9,
                            0.999, 1e-8, 1, batch, B)
        assert status == lib.FBP_OK
        if activation not in ("leaky_relu", "elu"):      # (their alpha differs above)
            _close_to_terms(losses[0], want, dtype, n * max(1.0, abs(want)))
