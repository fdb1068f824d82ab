"""fastbp.jax: the fused kernels as custom_vjp functions under jax.jit and jax.grad (docs/api.md
section 8). Skipped where JAX is not installed (`make test` installs it)."""
import numpy as np
import pytest

import fastbp
from cases import head_cases, make_head_inputs, rotated, rotated_ids

jax = pytest.importorskip("jax")
fbj = pytest.importorskip("fastbp.jax")
jnp = jax.numpy
jax.config.update("jax_enable_x64", True)      # float64 cases; float32 stays float32

REDUCTIONS = ("mean", "sum", "none")


def _close(got, want, dtype):
    rtol, atol = (1e-9, 1e-12) if np.dtype(dtype) == np.float64 else (2e-4, 1e-6)
    got, want = np.asarray(got), np.asarray(want, np.float64)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol + rtol * np.abs(want).max())


def _weights(loss_shape, rng):
    return rng.standard_normal(loss_shape) + 1.5


_HEAD_ROWS = rotated(head_cases(), list(REDUCTIONS), ["float64", "float32"])


@pytest.mark.parametrize("case, reduction, dtype", _HEAD_ROWS, ids=rotated_ids(_HEAD_ROWS))
def test_every_head_and_option_under_jit_and_grad(case, reduction, dtype, rng):
    """Every case with every reduction, the dtypes in turn."""
    dtype = np.dtype(dtype)
    head, spec = case
    S, target, opts = make_head_inputs(head, spec, 9, 4, dtype, rng)
    want_loss, want_dS = getattr(fastbp, head)(S, target, reduction=reduction, backend="numpy",
                                               **opts)
    g = _weights(np.shape(want_loss), rng).astype(dtype)

    def f(S):
        return jnp.sum(g * getattr(fbj, head)(S, target, reduction=reduction, **opts))

    value, dS = jax.jit(jax.value_and_grad(f))(S)
    _close(getattr(fbj, head)(S, target, reduction=reduction, **opts), want_loss, dtype)
    _close(value, np.sum(g * want_loss), dtype)
    scale = g.reshape((-1,) + (1,) * (S.ndim - 1)) if reduction == "none" else g
    _close(dS, scale * want_dS, dtype)


LINEAR = [c for c in head_cases() if c[0] != "nll" and c[1]["target"] != "pm1_col"
          and c[1].get("sample_weight") is None]


_LINEAR_ROWS = rotated(LINEAR, list(REDUCTIONS), ["float64", "float32"])


@pytest.mark.parametrize("case, reduction, dtype", _LINEAR_ROWS, ids=rotated_ids(_LINEAR_ROWS))
def test_linear_head_every_head(case, reduction, dtype, rng):
    """Every case with every reduction, the dtypes in turn."""
    dtype = np.dtype(dtype)
    head, spec = case
    n = 1 if head == "binary_hinge" else 4
    X = rng.standard_normal((10, 5)).astype(dtype)
    W = (0.5 * rng.standard_normal((n, 5))).astype(dtype)
    b = (0.1 * rng.standard_normal(n)).astype(dtype)
    _, target, opts = make_head_inputs(head, spec, 10, n, dtype, rng)
    X64, W64 = X.astype(np.float64), W.astype(np.float64)   # (float32 sgemv can flag a
    S = (X64 @ W64.T + b).astype(dtype)                     #  spurious FP warning)
    want_loss, dS = getattr(fastbp, head)(S[:, 0] if spec["target"] == "pm1" else S, target,
                                          reduction=reduction, backend="numpy", **opts)
    g = _weights(np.shape(want_loss), rng).astype(dtype)
    dS = dS.reshape(10, n).astype(np.float64) * (g.reshape(-1, 1) if reduction == "none" else g)

    def f(X, W, b):
        return jnp.sum(g * fbj.linear_head(X, W, b, target, head, reduction=reduction, **opts))

    value, grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(X, W, b)
    _close(value, np.sum(g * want_loss), dtype)
    for got, want in zip(grads, (dS @ W64, dS.T @ X64, dS.sum(axis=0))):
        _close(got, want, dtype)


def test_linear_head_without_bias_and_without_grad(rng):
    X, W = rng.standard_normal((7, 3)), rng.standard_normal((4, 3))
    y = rng.integers(0, 4, 7)
    want = fastbp.linear_head(X, W, None, y, backend="numpy")
    _close(jax.jit(lambda X, W: fbj.linear_head(X, W, None, y))(X, W), want.loss, np.float64)
    dX, dW = jax.grad(lambda X, W: fbj.linear_head(X, W, None, y), argnums=(0, 1))(X, W)
    _close(dX, want.dX, np.float64)
    _close(dW, want.dW, np.float64)


def test_bad_arguments_are_named(rng):
    X, W, y = np.ones((3, 2)), np.ones((4, 2)), np.zeros(3, np.intp)
    with pytest.raises(ValueError, match="reduction must be one of"):
        fbj.linear_head(X, W, None, y, reduction="avg")
    with pytest.raises(ValueError, match="head must be one of"):
        fbj.linear_head(X, W, None, y, "nope")
