"""The C kernels' binding (fastbp/backends/c_kernels.py): their GEMMs through NumPy's or
SciPy's OpenBLAS, the preconditions they re-check, the codes and struct checked against
csrc/fastbp.h at import, and their scratch memory counted exactly. (The build itself:
test_c_build.py.)"""
import numpy as np
import pytest

import fastbp
from cases import assert_close, cast_floats

# the C backend's tests, which `make test-asan` runs under the sanitizers
pytestmark = pytest.mark.asan


@pytest.mark.skipif("c" not in fastbp.available_backends(), reason="the C backend is not built")
@pytest.mark.parametrize("numpy_blas", [True, False])
def test_c_gemms_through_numpys_or_scipys_openblas(numpy_blas):
    """Both BLAS bindings (ILP64 NumPy, LP64 SciPy) give the reference's numbers."""
    from fastbp.backends import c_kernels
    rng = np.random.default_rng(0)
    X, W, b = rng.standard_normal((70, 33)), rng.standard_normal((40, 33)), np.zeros(40)
    y = rng.integers(0, 40, 70)
    params = [(rng.standard_normal((20, 33)), np.zeros(20)), (W[:, :20].copy(), b)]
    try:
        c_kernels.set_blas(numpy=numpy_blas)
        assert c_kernels.BLAS == "scipy" or numpy_blas   # NumPy's, where NumPy bundles it
        want = fastbp.linear_head(X, W, b, y, backend="numpy")
        for dtype in (np.dtype(np.float64), np.dtype(np.float32)):
            got = fastbp.linear_head(*cast_floats(dtype, X, W, b), y, chunk_rows=16, backend="c")
            for g, w in zip(got, want):
                assert_close(g, w, dtype)
        loss, grads = fastbp.mlp_loss_grad(X, params, y, backend="c")
        want_loss, want_grads = fastbp.mlp_loss_grad(X, params, y, backend="numpy")
        assert_close(loss, want_loss, X.dtype)
        for got_pair, want_pair in zip(grads, want_grads):
            for g, w in zip(got_pair, want_pair):
                assert_close(g, w, X.dtype)
    finally:
        c_kernels.set_blas()


@pytest.mark.skipif("c" not in fastbp.available_backends(), reason="the C backend is not built")
@pytest.mark.parametrize("bad", ["B < 0", "n < 1", "chunk < 1", "cols < 1", "head code",
                                 "negative head code", "no head", "columns of a hinge"])
def test_c_kernels_refuse_their_preconditions_without_writing(bad):
    """linear_chunked re-checks what is cheap and returns a status (c_kernels raises it as a
    ValueError) before touching any buffer, even when called past the Python checks."""
    from fastbp.backends import _args, c_kernels
    ffi, lib = c_kernels.ffi, c_kernels.lib
    B, d, n = 4, 3, 5
    X, W, b = np.ones((B, d)), np.ones((n, d)), np.zeros(n)
    dW, db, dX = np.full((n, d), 7.0), np.full(n, 7.0), np.full((B, d), 7.0)
    y, sums = np.zeros(B, np.int64), ffi.new("double[2]")
    args = {"head": _args.CODES["SOFTMAX"], "chunk": 2, "cols": n, "B": B, "n": n}
    args.update({"B < 0": {"B": -1}, "n < 1": {"n": 0}, "chunk < 1": {"chunk": 0},
                 "cols < 1": {"cols": 0}, "head code": {"head": lib.FBP_NUM_HEADS},
                 "negative head code": {"head": -1}, "no head": {"head": None},
                 "columns of a hinge": {"head": _args.CODES["MHINGE"], "cols": 2}}[bad])
    head = ffi.NULL if args["head"] is None else ffi.new(
        "fbp_head *", {"code": args["head"], "y": ffi.from_buffer("int64_t[]", y), "margin": 1.0,
                       "p": 1, "ignore_index": -100})
    p = lambda a: ffi.from_buffer("double[]", a)     # noqa: E731
    status = lib.linear_chunked_f64(p(dW), p(db), p(dX), sums, p(X), p(W), p(b), head, 1,
                                    args["chunk"], args["cols"], 0.0, 0, 1, 0, args["B"], d,
                                    args["n"])
    assert status == lib.FBP_EBADARG
    with pytest.raises(ValueError, match="precondition"):
        c_kernels._check(status, "linear_head")
    assert (dW == 7).all() and (db == 7).all() and (dX == 7).all()


@pytest.mark.skipif("c" not in fastbp.available_backends(), reason="the C backend is not built")
def test_head_codes_and_struct_are_checked_against_the_c_header(monkeypatch):
    """The registry's codes and fbp_head layout are csrc/fastbp.h's; a mismatch stops the C
    backend's import with an ImportError naming both sides."""
    import numpy as np

    from fastbp.backends import c_kernels
    c_kernels._check_abi()                      # as built: they agree
    monkeypatch.setitem(c_kernels.CODES, "L1", 99)
    with pytest.raises(ImportError, match=r"L1 = 99, csrc/fastbp.h has FBP_L1 = 7"):
        c_kernels._check_abi()
    monkeypatch.undo()
    fields = [(n, c_kernels.HEAD_DTYPE.fields[n][0]) for n in c_kernels.HEAD_DTYPE.names]
    monkeypatch.setattr(c_kernels, "HEAD_DTYPE", np.dtype(fields[::-1], align=True))
    with pytest.raises(ImportError, match="fbp_head layout mismatch"):
        c_kernels._check_abi()


@pytest.mark.skipif("c" not in fastbp.available_backends(), reason="the C backend is not built")
def test_c_scratch_is_counted_exactly():
    """The chunked path holds one (chunk, n) score block, two float64 n-vectors and one float64
    per row (n is too small here for a team and its dX partials), and on its own products X_c
    transposed: the kernels' allocator counts exactly that, and frees it all."""
    import numpy as np

    from fastbp.backends import c_kernels
    rng = np.random.default_rng(0)
    B, d, n, chunk = 64, 8, 5, 16
    X, W, b, y = (rng.standard_normal((B, d)), rng.standard_normal((n, d)),
                  rng.standard_normal(n), rng.integers(0, n, B))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(c_kernels.TUNING, "FUSED_ANY_N_WEIGHTS", 0)
        mp.setattr(c_kernels.TUNING, "FUSED_FEW_N", 0)
        for dtype, item in ((np.float64, 8), (np.float32, 4)):
            args = [a.astype(dtype) for a in (X, W, b)]
            c_kernels.scratch_bytes(reset=True)
            fastbp.linear_head(*args, y, chunk_rows=chunk, backend="c")
            assert c_kernels.scratch_bytes() == chunk * n * item + 2 * n * 8 + B * 8
            assert c_kernels.scratch_bytes(reset=True) == 0      # all of it was freed
            # on fastbp's own products: X_c^T too, its rows whole vectors of 64 bytes
            mp.setattr(c_kernels.TUNING, "OWN_SCORES_MIN_WEIGHTS", 0)
            mp.setattr(c_kernels.TUNING, "OWN_ROW_ALIGN", 1)
            mp.setattr(c_kernels.TUNING, "OWN_ISAS", c_kernels.tuning.ISAS)
            fastbp.linear_head(*args, y, chunk_rows=chunk, backend="c")
            xt = d * -(-chunk * item // 64) * 64
            assert c_kernels.scratch_bytes() == chunk * n * item + 2 * n * 8 + B * 8 + xt
            assert c_kernels.scratch_bytes(reset=True) == 0
            mp.setattr(c_kernels.TUNING, "OWN_SCORES_MIN_WEIGHTS", 1 << 62)
