"""fastbp's own products (csrc/products.h) against OpenBLAS's, each product alone on every
thread: S = X W^T, dX = G W and dW = G^T X at V, K and L, in both dtypes.

Groups "products <shape> <dtype> <product>", two rows each: "own" (c_kernels.own_product) and
"OpenBLAS" (NumPy's matmul); both write into a preallocated output and are checked equal
first (make test's untimed pass checks them on a slice: _operands). report.py puts their
rates side by side ("fastbp's products vs OpenBLAS").
"""
import numpy as np
import pytest

import fastbp
from fastbp.presets import SHAPES

pytestmark = pytest.mark.skipif("c" not in fastbp.available_backends(),
                                reason="the C backend is not built")
PRODUCTS = {  # name: (own_product kind, its operands from X, W, G, OpenBLAS by NumPy)
    "X W^T": ("xwt", lambda X, W, G: (X, W), lambda A, B, out: np.matmul(A, B.T, out=out)),
    "G W": ("gw", lambda X, W, G: (G, W), lambda A, B, out: np.matmul(A, B, out=out)),
    "G^T X": ("gtx", lambda X, W, G: (G, X), lambda A, B, out: np.matmul(A.T, B, out=out))}


def group(shape, dtype, product):
    B, d, n, _ = SHAPES[shape]
    return f"products {shape} {dtype} {product} (B={B}, d={d}, n={n})"


def _operands(shape, dtype, product, untimed=False):
    """The product's operands at the shape; ``untimed`` (make test's --benchmark-disable pass,
    which only checks): its first 64 rows and 2048 classes (the own products' correctness at
    every shape is tests/test_own_products.py's; whole, V float64 took a minute on an AVX2 host
    whose ISA the own tile does not suit)."""
    B, d, n, _ = SHAPES[shape]
    if untimed:
        B, n = min(B, 64), min(n, 2048)
    rng = np.random.default_rng(0)
    X, W = (rng.standard_normal(s).astype(dtype) for s in ((B, d), (n, d)))
    G = (rng.standard_normal((B, n)) / n).astype(dtype) if product != "X W^T" else None
    return PRODUCTS[product][1](X, W, G)


@pytest.mark.parametrize("impl", ["own", "OpenBLAS"])
@pytest.mark.parametrize("product", list(PRODUCTS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", ["V", "K", "L"])
def test_product(benchmark, shape, dtype, product, impl):
    from fastbp.backends.c_kernels import own_product
    kind, _, blas = PRODUCTS[product]
    A, B = _operands(shape, dtype, product, benchmark.disabled)
    want = blas(A, B, None)
    out = np.empty_like(want)
    call = ((lambda: own_product(kind, A, B, out=out)) if impl == "own"
            else (lambda: blas(A, B, out)))
    call()
    tol = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol * np.abs(want).max())
    benchmark.group = group(shape, dtype, product)
    M, K = (A.shape[1], A.shape[0]) if kind == "gtx" else A.shape
    benchmark.extra_info["flops"] = 2 * M * K * want.shape[1]
    benchmark(call)
