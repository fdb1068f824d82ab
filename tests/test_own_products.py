"""fastbp's own products (csrc/products.h) alone: equal to NumPy's to rounding at shapes with
every kind of tail (rows past a register tile, columns past a vector, d below a vector), the
same bits run to run and at any thread count (each element sums in one fixed order), and clear
errors for bad input. The chunked path on them is tested as the ``c:own`` variant (cases.py)."""
import numpy as np
import pytest

import fastbp
from cases import BACKENDS

pytestmark = [pytest.mark.asan,
              pytest.mark.skipif("c" not in BACKENDS, reason="the C backend is not under test")]

# (rows of A, inner, other): 1, below and past a register tile / vector / tile of vectors
SHAPES = [(1, 1, 1), (7, 5, 3), (6, 16, 24), (13, 17, 33), (64, 64, 130), (101, 40, 257),
          (129, 129, 65)]


def _operands(kind, m, k, n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((k, m) if kind == "gtx" else (m, k)).astype(dtype)
    B = rng.standard_normal((n, k) if kind == "xwt" else (k, n)).astype(dtype)
    return A, B, {"xwt": lambda: A @ B.T, "gw": lambda: A @ B, "gtx": lambda: A.T @ B}[kind]()


@pytest.fixture
def threads():
    before = fastbp.get_num_threads()
    yield
    fastbp.set_num_threads(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", ["xwt", "gw", "gtx"])
def test_own_products_equal_numpys(kind, shape, dtype, threads):
    from fastbp.backends.c_kernels import own_product
    A, B, want = _operands(kind, *shape, dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    first = None
    for count in (1, 2, 3):
        fastbp.set_num_threads(count)
        got = own_product(kind, A, B)
        assert got.shape == want.shape and got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.sqrt(shape[1]))
        assert np.array_equal(got, own_product(kind, A, B))          # run to run
        first = got if first is None else first
        assert np.array_equal(got, first), count                       # across thread counts


def test_own_products_leave_their_inputs_alone():
    from fastbp.backends.c_kernels import own_product
    for kind in ("xwt", "gw", "gtx"):
        A, B, _ = _operands(kind, 13, 17, 33, np.float32)
        a, b = A.copy(), B.copy()
        own_product(kind, A, B)
        assert np.array_equal(A, a) and np.array_equal(B, b)


def test_own_products_bad_input():
    from fastbp.backends.c_kernels import own_product
    A = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="kind: expected one of"):
        own_product("xw", A, A)
    with pytest.raises(TypeError, match="B: expected A's dtype float32, got float64"):
        own_product("xwt", A, A.astype(np.float64))
    with pytest.raises(TypeError, match="A: expected a C-contiguous 2-d"):
        own_product("gw", A.T, A)
    with pytest.raises(ValueError, match=r"B: shape \(4, 3\) does not fit A's \(4, 3\) for 'gw'"):
        own_product("gw", A, A)
