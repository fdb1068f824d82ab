"""mlp_loss_grad: the notes' 2-layer net at CIFAR size (3072-100-10, B=256, sigmoid hidden,
softmax_nll head), per backend, in one group."""
import numpy as np
import pytest

import fastbp


def net(dtype="float64"):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 3072)).astype(dtype)
    params = [((rng.standard_normal((100, 3072)) / 55).astype(dtype), np.zeros(100, dtype)),
              ((rng.standard_normal((10, 100)) / 10).astype(dtype), np.zeros(10, dtype))]
    return X, params, rng.integers(0, 10, 256)


@pytest.mark.parametrize("backend", fastbp.available_backends())
def test_mlp_2layer(benchmark, backend):
    X, params, y = net()
    benchmark.group = "mlp_loss_grad 3072-100-10 B=256 sigmoid softmax_nll (float64)"
    out = [(np.empty_like(W), np.empty_like(b)) for W, b in params]

    def call():
        return fastbp.mlp_loss_grad(X, params, y, activation="sigmoid", out=out,
                                    backend=backend)

    loss, _ = call()
    benchmark(call)
    assert np.isfinite(loss)
