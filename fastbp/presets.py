"""The shape presets of the benchmarks (and of ``fastbp bench``), with their data.

T: tiny, call overhead rules; D: small dense; C: CIFAR-10 linear classifier (C1k: a batch of
1024), M: MNIST-like, K: 100 classes -- the few-classes shapes; V: a 32,000-word
vocabulary output layer (float32), GEMM-bound, random weights; P: V's shape with logits like a
trained language model's (``peaked_lm_data``); L: a 65,536-word output layer at a small batch
(float32), where a block of whole score rows would hold only 48 of them.
"""
import numpy as np

# name: (B, d, n, dtype)
SHAPES = {
    "T": (5, 4, 3, "float64"),
    "D": (64, 64, 10, "float64"),
    "C": (256, 3072, 10, "float64"),
    "C1k": (1024, 3072, 10, "float32"),
    "M": (512, 784, 10, "float32"),
    "K": (256, 1024, 100, "float32"),
    "V": (1024, 512, 32000, "float32"),
    "P": (1024, 512, 32000, "float32"),
    "L": (256, 256, 65536, "float32"),
}


def linear_data(shape, head="softmax_nll", dtype=None):
    """X, W, b, target for a linear layer of the preset ``shape`` (fixed seed), in the preset's
    dtype or ``dtype``."""
    B, d, n, preset_dtype = SHAPES[shape]
    dtype = dtype or preset_dtype
    if shape == "P":
        return peaked_lm_data(B, d, n, dtype)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((B, d)).astype(dtype)
    W = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(dtype)
    b = np.zeros(n, dtype)
    if head in ("softmax_nll", "multiclass_hinge"):
        target = rng.integers(0, n, B)
    else:
        target = rng.random((B, n)).astype(dtype)
    return X, W, b, target


# P's recipe: a class of frequency rank r gets the bias -ZIPF_SLOPE log r (Zipf-like: rank 10
# is 6.9 nats below rank 1, rank 32000 31 nats), ranks in random class order; scores x_i.w_j
# of standard deviation SCORE_STD around it. Median row entropy 0.86 nats (test_presets).
ZIPF_SLOPE, SCORE_STD = 3.0, 2.0


def peaked_lm_data(B, d, n, dtype, seed=0):
    """X, W, b, labels whose softmax is peaked like a trained language model's: the Zipf bias
    above, and labels drawn from the model's own distribution (so the loss is its entropy on
    average). Most p_ij are then far below float32's resolution, which filter_eps skips."""
    rng = np.random.default_rng(seed)
    b = (-ZIPF_SLOPE * np.log(rng.permutation(n) + 1.0)).astype(dtype)
    X = rng.standard_normal((B, d)).astype(dtype)
    W = (rng.standard_normal((n, d)) * (SCORE_STD / np.sqrt(d))).astype(dtype)
    u = rng.random(B)
    y = np.empty(B, np.intp)
    for lo in range(0, B, 128):               # a block of score rows at a time
        S = (X[lo:lo + 128] @ W.T + b).astype(np.float64)
        P = np.exp(S - S.max(axis=1, keepdims=True))
        cdf = np.cumsum(P, axis=1)
        y[lo:lo + 128] = [np.searchsorted(c, ui * c[-1], side="right")
                          for c, ui in zip(cdf, u[lo:lo + 128])]
    return X, W, b, np.minimum(y, n - 1)
