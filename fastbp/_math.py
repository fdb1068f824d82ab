"""The math that fastbp's product code shares with the NumPy reference, the oracle: the stable
pieces of docs/math.md, the rows' weights of a "mean", and the elementwise activations. One
definition, imported by both (``backends/reference.py``, ``fastbp.dask``, the adapters).
"""
import numpy as np


def sigmoid(x):
    """sigma(x) without overflow: 1/(1+e^-x) for x >= 0, e^x/(1+e^x) for x < 0."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def sigmoid_prime(x):
    """sigma'(x) = sigma(x) sigma(-x): no cancellation in 1 - sigma(x) when sigma(x) is near 1
    (in float32 that loses every digit of sigma' for x > ~9)."""
    return sigmoid(x) * sigmoid(-x)


def softplus(x):
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|), finite for any finite x."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def log_softmax(S):
    M = S.max(axis=1, keepdims=True)
    return S - (M + np.log(np.exp(S - M).sum(axis=1, keepdims=True)))


def row_weights_or_ones(B, dtype, sample_weight):
    return np.ones(B, dtype) if sample_weight is None else sample_weight


def label_weights(y, weight, ignore_index, dtype):
    """Each labelled row's class weight ``weight[y]`` (1 without one), 0 where ``y`` is
    ``ignore_index``: its share of the "mean" denominator before sample weights."""
    keep = np.ones(len(y), bool) if ignore_index is None else y != ignore_index
    if weight is None:
        return keep.astype(dtype)
    return (weight[np.where(keep, y, 0)] * keep).astype(dtype, copy=False)


def row_weights(head, target, options, dtype):
    """omega, the rows' weights whose sum divides under "mean", from the checked target and
    options alone (no scores): what a caller that sums chunks itself divides by."""
    omega = row_weights_or_ones(len(target), dtype, options.get("sample_weight"))
    if target.ndim == 1 and ("weight" in options or "ignore_index" in options):
        omega = omega * label_weights(target, options.get("weight"),
                                      options.get("ignore_index"), dtype)
    return omega


def mean_scale(total, omega_sum):
    """(loss, gradient factor) of "mean": sum(wl)/sum(omega); all weights 0 -> (nan, 0) as torch."""
    if omega_sum == 0:
        return float("nan"), 0.0
    return total / omega_sum, 1.0 / omega_sum


def activate(name, S, alpha):
    """a = f(s) for the elementwise activations."""
    if name == "sigmoid":
        return sigmoid(S)
    if name == "tanh":
        return np.tanh(S)
    if name == "relu":
        return np.maximum(S, 0)
    if name == "leaky_relu":
        return np.where(S > 0, S, alpha * S).astype(S.dtype, copy=False)
    if name == "elu":   # expm1 of min(s, 0): no overflow on the branch np.where discards
        return np.where(S > 0, S, alpha * np.expm1(np.minimum(S, 0))).astype(S.dtype, copy=False)
    if name == "identity":
        return S.copy()
    raise ValueError(f"activation {name!r} is not elementwise")


def activation_grad(name, A, alpha):
    """f'(s) read off the output a = f(s) (docs/math.md's cheap forms; alpha >= 0 keeps sign)."""
    if name == "sigmoid":
        return A * (1 - A)
    if name == "tanh":
        return 1 - A * A
    if name == "relu":
        return (A > 0).astype(A.dtype)
    if name == "leaky_relu":
        return np.where(A > 0, 1, alpha).astype(A.dtype)
    if name == "elu":
        return np.where(A > 0, 1, A + alpha).astype(A.dtype)
    if name == "identity":
        return np.ones_like(A)
    raise ValueError(f"activation {name!r} is not elementwise")
