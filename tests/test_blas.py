"""Which BLAS the compiled backends' products run in (fastbp/backends/_blas.py), and the Numba
backend's own GEMM binding (numba/runtime.py's gemm): NumPy's OpenBLAS where NumPy bundles one,
so the user's matmuls and fastbp's products share one thread pool (docs/performance.md)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from cases import assert_close
from fastbp.backends import _blas

pytestmark = pytest.mark.skipif("numba" not in fastbp.available_backends(),
                                reason="Numba is not installed")


def test_numba_products_run_in_the_same_blas_as_the_c_backend():
    from fastbp.backends.numba import runtime
    found = _blas.numpy_gemms()
    assert runtime.BLAS == ("scipy" if found is None else "numpy")
    assert (runtime._SGEMM, runtime._DGEMM) == (
        found or (_blas.capsule_address("sgemm"), _blas.capsule_address("dgemm")))
    if "c" in fastbp.available_backends():
        from fastbp.backends import c_kernels
        assert c_kernels.BLAS == runtime.BLAS


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (False, True), (True, False),
                                              (True, True)])
@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
@pytest.mark.parametrize("m, n, k", [(7, 5, 3), (1, 9, 4), (6, 1, 1), (5, 4, 0), (0, 3, 2)])
def test_numba_gemm_is_numpys_product(dtype, trans_a, trans_b, beta, m, n, k):
    """C = op(A) op(B) + beta C in place on C-ordered arrays and on row slices of larger ones
    (a leading dimension above the row length), every transpose, k = 0 and empty C."""
    from fastbp.backends.numba.runtime import gemm
    rng = np.random.default_rng(m * 100 + n * 10 + k)
    A = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    Bm = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    parent = rng.standard_normal((m + 2, n + 3)).astype(dtype)
    C = parent[1:m + 1, :n]                       # rows n + 3 apart
    before, around = C.copy(), parent.copy()
    want = (A.T if trans_a else A).astype(np.float64) @ (Bm.T if trans_b else Bm) + beta * before
    gemm(C, A, Bm, trans_a, trans_b, beta)
    assert_close(C, want, dtype)
    around[1:m + 1, :n] = C                   # the elements around C untouched
    np.testing.assert_array_equal(parent, around)


@pytest.mark.fresh_process
def test_numba_backend_through_scipys_32_bit_blas():
    """Where NumPy has no OpenBLAS of its own, the same compiled code calls SciPy's (LP64):
    linear_head's BLAS paths and a network step agree with the reference, both dtypes."""
    code = """
import numpy as np
import fastbp.backends._blas as b
b.numpy_gemms = lambda: None
import fastbp
import fastbp.backends.numba as numba_backend
assert numba_backend.BLAS == "scipy", numba_backend.BLAS
rng = np.random.default_rng(0)
X, W, b_ = rng.standard_normal((70, 33)), rng.standard_normal((40, 33)), np.zeros(40)
y = rng.integers(0, 40, 70)
params = [(rng.standard_normal((20, 33)), np.zeros(20)), (W[:, :20].copy(), b_)]
want = fastbp.linear_head(X, W, b_, y, backend="numpy")
for dt, tol in ((np.float64, 1e-10), (np.float32, 1e-4)):
    for chunk in (None, 16):
        got = fastbp.linear_head(X.astype(dt), W.astype(dt), b_.astype(dt), y, chunk_rows=chunk,
                                 backend="numba")
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol * np.abs(w).max())
loss, grads = fastbp.mlp_loss_grad(X, params, y, backend="numba")
want_loss, want_grads = fastbp.mlp_loss_grad(X, params, y, backend="numpy")
np.testing.assert_allclose(loss, want_loss, rtol=1e-10)
for g, w in zip(grads, want_grads):
    np.testing.assert_allclose(g[0], w[0], rtol=1e-10, atol=1e-12)
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ), timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
