"""linear_head forward+backward per backend, at the issue's shape presets, beside bare BLAS.

``make bench`` runs this with timing; ``make test`` runs it once with --benchmark-disable so it
keeps working. Compare within a group: the rows are measured side by side in one run.
"""
import numpy as np
import pytest

import fastbp

SHAPES = {"T": (5, 4, 3), "D": (64, 64, 10), "C": (256, 3072, 10)}


def data(shape, dtype=np.float64):
    B, d, n = SHAPES[shape]
    rng = np.random.default_rng(0)
    return (rng.standard_normal((B, d)).astype(dtype),
            (rng.standard_normal((n, d)) / np.sqrt(d)).astype(dtype),
            np.zeros(n, dtype), rng.integers(0, n, B))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("backend", fastbp.available_backends())
def test_linear_head_softmax_nll(benchmark, backend, shape):
    X, W, b, y = data(shape)
    benchmark.group = f"linear_head softmax_nll {shape}={SHAPES[shape]}"
    fastbp.linear_head(X, W, b, y, backend=backend)       # warm-up / compile
    g = benchmark(fastbp.linear_head, X, W, b, y, backend=backend)
    assert np.isfinite(g.loss)


@pytest.mark.parametrize("shape", SHAPES)
def test_bare_blas(benchmark, shape):
    """The physical floor: the three matrix products X W^T, dS^T X, dS W."""
    X, W, _, _ = data(shape)
    dS = np.ones((X.shape[0], W.shape[0]))
    benchmark.group = f"linear_head softmax_nll {shape}={SHAPES[shape]}"

    def three_gemms():
        return X @ W.T, dS.T @ X, dS @ W

    benchmark(three_gemms)
