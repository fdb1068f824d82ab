"""fastbp.gradcheck (docs/api.md s. 5) catches wrong gradients and says where."""
import numpy as np
import pytest

import fastbp


def quadratic(A, x):
    """f = x^T A x; df/dx = (A + A^T) x, df/dA = x x^T."""
    return float(x @ A @ x), np.outer(x, x), (A + A.T) @ x


def test_correct_gradient_passes_with_small_error():
    rng = np.random.default_rng(0)
    err = fastbp.gradcheck(quadratic, rng.standard_normal((3, 3)), rng.standard_normal(3))
    assert 0 <= err <= 1e-5


def test_wrong_entry_is_named():
    def wrong(A, x):
        loss, dA, dx = quadratic(A, x)
        dx = dx.copy()
        dx[2] += 0.5
        return loss, dA, dx

    with pytest.raises(fastbp.GradcheckError, match=r"arrays\[1\] at index \(2,\)"):
        fastbp.gradcheck(wrong, np.eye(3), np.ones(3))


def test_nan_gradient_fails():
    def nan_grad(x):
        return float(np.sum(x ** 2)), np.full_like(x, np.nan)

    with pytest.raises(fastbp.GradcheckError):
        fastbp.gradcheck(nan_grad, np.ones(2))


def test_labels_pass_through_and_none_skips():
    S, y = np.random.default_rng(1).standard_normal((3, 4)), np.array([0, 3, 1])
    assert fastbp.gradcheck(lambda S, y: (*fastbp.softmax_nll(S, y), None), S, y) <= 1e-5


def test_float32_inputs_are_checked_in_float64():
    seen = []

    def f(x):
        seen.append(x.dtype)
        return float(np.sum(x ** 3)), 3 * x ** 2

    fastbp.gradcheck(f, np.ones(3, np.float32))
    assert set(seen) == {np.dtype(np.float64)}


def test_bad_use_is_reported():
    with pytest.raises(ValueError, match="1 gradients for 2 arrays"):
        fastbp.gradcheck(lambda a, b: (0.0, a), np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match="scalar loss"):
        fastbp.gradcheck(lambda a: (a, a), np.ones(2))
    with pytest.raises(ValueError, match="eps"):
        fastbp.gradcheck(quadratic, np.eye(2), np.ones(2), eps=0)
