"""The naive path (docs/api.md s. 4): its memory guard, its byte predictions, its numbers."""
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import fastbp
from fastbp import naive


def test_notes_case_is_refused_at_once_with_its_size():
    tracemalloc.start()
    try:
        with pytest.raises(fastbp.JacobianTooLarge, match=r"1\.34 TB") as err:
            naive.elementwise_backward("sigmoid", np.ones((100, 4096)), np.zeros((100, 4096)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.needed_bytes == 409600 ** 2 * 8
    assert err.value.limit_bytes <= 2 << 30
    assert isinstance(err.value, MemoryError)
    assert peak < 50 << 20          # nothing Jacobian-sized was allocated


@pytest.mark.fresh_process
def test_notes_case_from_the_command_line():
    """The exact command of the issue: JacobianTooLarge mentioning 1.34 TB."""
    code = ("import fastbp, numpy as np; fastbp.naive.elementwise_backward('sigmoid', "
            "np.ones((100,4096)), np.zeros((100,4096)))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0
    assert "JacobianTooLarge" in run.stderr and "1.34 TB" in run.stderr


def test_float32_halves_the_bytes():
    assert naive.jacobian_bytes("elementwise", B=100, n=4096, dtype="float32") == 409600 ** 2 * 4
    with pytest.raises(fastbp.JacobianTooLarge, match="671 GB"):
        naive.elementwise_backward("tanh", np.ones((100, 4096), np.float32),
                                   np.zeros((100, 4096), np.float32))


@pytest.mark.parametrize("op,kw,entries", [
    # linear_head: dS/dW (Bn x nd) + dS/db (Bn x n) + dS/dX (Bn x Bd) + softmax's dp/ds (Bn)^2
    ("linear_head", dict(B=2, d=3, n=4), 8 * 12 + 8 * 4 + 8 * 6 + 8 * 8),
    ("linear_head", dict(B=2, d=3, n=4, head="l2", bias=False), 8 * 12 + 8 * 6),
    # mlp 3 -> 5 -> 4: layer 1 (dW, db, f'), layer 2 (dW, db, dh), softmax
    ("mlp", dict(B=2, d=3, n=4, h=5), 10 * 15 + 10 * 5 + 10 * 10 + 8 * 20 + 8 * 4 + 8 * 10 + 64),
    ("elementwise", dict(B=3, n=2), 36),
])
def test_jacobian_bytes_counts_every_dense_matrix(op, kw, entries):
    assert naive.jacobian_bytes(op, **kw) == 8 * entries
    assert naive.jacobian_bytes(op, dtype="float32", **kw) == 4 * entries


def test_max_bytes_is_respected_and_nothing_is_built():
    X, W, b, y = np.ones((20, 10)), np.ones((5, 10)), np.zeros(5), np.zeros(20, int)
    need = naive.jacobian_bytes("linear_head", B=20, d=10, n=5)
    with pytest.raises(fastbp.JacobianTooLarge) as err:
        naive.linear_head(X, W, b, y, max_bytes=need - 1)
    assert err.value.needed_bytes == need and err.value.limit_bytes == need - 1
    naive.linear_head(X, W, b, y, max_bytes=need)      # exactly at the limit: allowed
    with pytest.raises(fastbp.JacobianTooLarge):
        naive.mlp_loss_grad(X, [(np.ones((4, 10)), None), (W[:, :4], None)], y, activation="relu",
                            max_bytes=1000)


def test_measured_peak_matches_prediction():
    rng = np.random.default_rng(0)
    X, W, b = rng.standard_normal((64, 32)), rng.standard_normal((10, 32)), np.zeros(10)
    y = rng.integers(0, 10, 64)
    tracemalloc.start()
    try:
        naive.linear_head(X, W, b, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    predicted = naive.jacobian_bytes("linear_head", B=64, d=32, n=10)
    assert predicted <= peak <= 1.1 * predicted


@pytest.mark.parametrize("name", naive.ELEMENTWISE)
def test_elementwise_backward_equals_fused(name):
    rng = np.random.default_rng(1)
    S, dA = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    alpha = {"leaky_relu": 0.2, "elu": 0.5}.get(name)
    W = np.eye(3)
    A, cache = fastbp.linear_act_forward(S, W, None, name, alpha=alpha)
    dS, _, _ = fastbp.linear_act_backward(dA, cache)      # dX = dS W = dS for W = I
    np.testing.assert_allclose(naive.elementwise_backward(name, dA, S, alpha=alpha), dS,
                               rtol=1e-12)


def test_naive_refuses_maxout_and_bad_ops():
    with pytest.raises(ValueError, match="maxout"):
        naive.elementwise_backward("maxout", np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="op"):
        naive.jacobian_bytes("conv", B=1, d=1, n=1)
    with pytest.raises(ValueError, match="maxout"):
        naive.mlp_loss_grad(np.ones((2, 2)), [(np.ones((4, 2)), None), (np.ones((3, 2)), None)],
                            [0, 1], activation="maxout")
