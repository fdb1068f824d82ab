"""The shape presets' data (fastbp/presets.py), P's recipe above all: its numbers are what the
filter_eps benchmark rests on."""
import numpy as np
import pytest

from fastbp import presets
from fastbp.backends.reference import active_classes


def _softmax(X, W, b):
    S = (X @ W.T + b).astype(np.float64)
    P = np.exp(S - S.max(axis=1, keepdims=True))
    return P / P.sum(axis=1, keepdims=True)


def test_p_is_peaked_like_a_trained_language_model():
    """P's recipe on 256 of its 1024 rows (the full vocabulary): median row entropy within
    0.5-1.5 nats, a Zipf-like bias spanning ~31 nats in random class order, labels from the
    model's own distribution (mean NLL near the mean entropy), and most (row, class) entries
    below float32's eps / 32."""
    B, d, n, dtype = presets.SHAPES["P"]
    X, W, b, y = presets.peaked_lm_data(256, d, n, dtype)
    P = _softmax(X, W, b)
    H = -(P * np.log(np.maximum(P, 1e-300))).sum(axis=1)
    assert 0.5 <= np.median(H) <= 1.5
    assert b.max() == 0 and b.min() == pytest.approx(-presets.ZIPF_SLOPE * np.log(n), rel=1e-6)
    assert np.argmax(b) != 0 and not (np.diff(b) <= 0).all()          # not in rank order
    nll = -np.log(P[np.arange(len(y)), y]).mean()
    assert abs(nll - H.mean()) < 0.25
    eps = np.finfo(np.float32).eps / 32
    assert (P >= eps).mean() < 0.05
    assert active_classes(P[:98], np.full(98, eps)).mean() < 0.25     # one default row block


def test_presets_are_deterministic_and_take_a_dtype():
    for a, c in ((presets.linear_data("D"), presets.linear_data("D")),
                 (presets.peaked_lm_data(64, 32, 1000, "float32"),
                  presets.peaked_lm_data(64, 32, 1000, "float32"))):
        for u, v in zip(a, c):
            np.testing.assert_array_equal(u, v)
    X, W, b, y = presets.linear_data("M", dtype="float64")
    assert X.dtype == W.dtype == b.dtype == np.float64 and X.shape == (512, 784)
    assert y.min() >= 0 and y.max() < 10
