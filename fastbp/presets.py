"""The shape presets of the benchmarks (and of ``fastbp bench``), with their data.

T: tiny, call overhead rules; D: small dense; C: CIFAR-10 linear classifier; V: a 32,000-word
vocabulary output layer (float32), GEMM-bound; L: a 65,536-word output layer at a small batch
(float32), where a block of whole score rows would hold only 48 of them.
"""
import numpy as np

# name: (B, d, n, dtype)
SHAPES = {
    "T": (5, 4, 3, "float64"),
    "D": (64, 64, 10, "float64"),
    "C": (256, 3072, 10, "float64"),
    "K": (256, 1024, 100, "float32"),
    "V": (1024, 512, 32000, "float32"),
    "L": (256, 256, 65536, "float32"),
}


def linear_data(shape, head="softmax_nll"):
    """X, W, b, target for a linear layer of the preset ``shape`` (fixed seed)."""
    B, d, n, dtype = SHAPES[shape]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((B, d)).astype(dtype)
    W = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(dtype)
    b = np.zeros(n, dtype)
    if head in ("softmax_nll", "multiclass_hinge"):
        target = rng.integers(0, n, B)
    else:
        target = rng.random((B, n)).astype(dtype)
    return X, W, b, target
