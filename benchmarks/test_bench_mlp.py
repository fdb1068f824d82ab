"""mlp_loss_grad: the notes' 2-layer net at CIFAR size (3072-100-10, B=256, sigmoid hidden,
softmax_nll head), per backend, in one group, beside the two products no backend can skip; and
BLAS's rate on a large square product, the best these products could run at."""
import numpy as np
import pytest
from conftest import assert_matches_reference

import fastbp


def net(dtype="float64"):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 3072)).astype(dtype)
    params = [((rng.standard_normal((100, 3072)) / 55).astype(dtype), np.zeros(100, dtype)),
              ((rng.standard_normal((10, 100)) / 10).astype(dtype), np.zeros(10, dtype))]
    return X, params, rng.integers(0, 10, 256)


GROUP = "mlp_loss_grad 3072-100-10 B=256 sigmoid softmax_nll (float64)"
PEAK_N = 1024


@pytest.mark.parametrize("backend", fastbp.available_backends())
def test_mlp_2layer(benchmark, backend):
    X, params, y = net()
    benchmark.group = GROUP
    out = [(np.empty_like(W), np.empty_like(b)) for W, b in params]

    def call():
        return fastbp.mlp_loss_grad(X, params, y, activation="sigmoid", out=out,
                                    backend=backend)

    want = fastbp.mlp_loss_grad(X, params, y, activation="sigmoid", backend="numpy")
    assert_matches_reference(call(), want, X.dtype)
    benchmark(call)


def test_bare_blas(benchmark):
    """The floor: the first layer's products Z1 = X W1^T and dW1 = dZ1^T X (NumPy, outputs
    preallocated); the rest of the net is ~1% of the flops."""
    X, params, _ = net()
    W1 = params[0][0]
    dZ1 = np.full((X.shape[0], W1.shape[0]), 0.5)
    Z1, dW1 = np.empty_like(dZ1), np.empty_like(W1)
    benchmark.group = GROUP
    benchmark.extra_info["flops"] = 2 * 2 * X.shape[0] * X.shape[1] * W1.shape[0]

    def two_gemms():
        np.matmul(X, W1.T, out=Z1)
        np.matmul(dZ1.T, X, out=dW1)

    benchmark(two_gemms)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bare_blas_peak(benchmark, dtype):
    """BLAS's rate on a PEAK_N^3 product (RESULTS.md: the fastest the products of a group
    could run on this machine, in its dtype)."""
    A = np.random.default_rng(0).standard_normal((PEAK_N, PEAK_N)).astype(dtype)
    C = np.empty_like(A)
    benchmark.group = f"{'d' if dtype == 'float64' else 's'}gemm {PEAK_N}^3 ({dtype})"
    benchmark.extra_info["flops"] = 2 * PEAK_N ** 3
    benchmark(np.matmul, A, A, out=C)
