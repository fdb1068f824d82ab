"""MLP, SGD and Adam (api.md s. 3): initialisation, torch's update rules, buffers reused."""
import numpy as np
import pytest

import fastbp


def test_initialisation_is_he_or_xavier_and_seeded():
    relu = fastbp.MLP([400, 300, 10], activation="relu", seed=1)
    tanh = fastbp.MLP([400, 300, 10], activation="tanh", seed=1)
    assert relu.params[0][0].std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    assert tanh.params[0][0].std() == pytest.approx(np.sqrt(2 / 700), rel=0.02)
    assert relu.params[0][0].dtype == np.float32 and not relu.params[0][1].any()
    again = fastbp.MLP([400, 300, 10], activation="relu", seed=1)
    other = fastbp.MLP([400, 300, 10], activation="relu", seed=2)
    np.testing.assert_array_equal(relu.params[1][0], again.params[1][0])
    assert not np.array_equal(relu.params[1][0], other.params[1][0])
    maxout = fastbp.MLP([5, 4, 3], activation="maxout", alpha=3)
    assert maxout.params[0][0].shape == (12, 5) and maxout.params[1][0].shape == (3, 4)


def _numpy_sgd(p, g, v, lr, momentum, wd, nesterov, first):
    g = g + wd * p
    v = g.copy() if first else momentum * v + g
    return p - lr * (g + momentum * v if nesterov else v), v


@pytest.mark.parametrize("momentum,wd,nesterov", [(0.0, 0.0, False), (0.9, 0.0, False),
                                                  (0.9, 0.01, True), (0.5, 0.1, False)])
def test_sgd_is_torch_sgd(momentum, wd, nesterov):
    rng = np.random.default_rng(0)
    p, want = rng.standard_normal((3, 4)), None
    opt = fastbp.SGD(lr=0.1, momentum=momentum, weight_decay=wd, nesterov=nesterov)
    params = [(p.copy(), None)]
    q, v = p.copy(), np.zeros_like(p)
    for step in range(4):
        g = rng.standard_normal(p.shape)
        q, v = _numpy_sgd(q, g, v, 0.1, momentum, wd, nesterov, step == 0)
        opt.update(params, [(g.copy(), None)])
        want = q
    np.testing.assert_allclose(params[0][0], want, rtol=1e-12)


def test_adam_is_torch_adam():
    rng = np.random.default_rng(0)
    p = rng.standard_normal(5)
    params = [(p.copy(), None)]
    opt = fastbp.Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    m = v = np.zeros_like(p)
    for t in range(1, 5):
        g = rng.standard_normal(5)
        opt.update(params, [(g.copy(), None)])
        g = g + 0.1 * p
        m, v = 0.8 * m + 0.2 * g, 0.99 * v + 0.01 * g * g
        p = p - 0.01 / (1 - 0.8 ** t) * m / (np.sqrt(v / (1 - 0.99 ** t)) + 1e-6)
    np.testing.assert_allclose(params[0][0], p, rtol=1e-12)


def test_step_reuses_its_buffers_and_equals_loss_grad_plus_update(backend):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((16, 6)).astype(np.float32), rng.integers(0, 3, 16)
    a = fastbp.MLP([6, 5, 3], backend=backend, seed=3)
    b = fastbp.MLP([6, 5, 3], backend=backend, seed=3)
    opt_a, opt_b = fastbp.SGD(lr=0.1, momentum=0.9), fastbp.SGD(lr=0.1, momentum=0.9)
    grads_before = [g for pair in a.grads for g in pair]
    for _ in range(3):
        loss_a = a.step(X, y, optimizer=opt_a)
        loss_b, grads = b.loss_grad(X, y)
        opt_b.update(b.params, grads)
        assert loss_a == loss_b
    assert all(x is y for x, y in zip(grads_before, [g for pair in a.grads for g in pair]))
    for (Wa, ba), (Wb, bb) in zip(a.params, b.params):
        np.testing.assert_array_equal(Wa, Wb)
        np.testing.assert_array_equal(ba, bb)
    state = [id(s) for s in opt_a.state]
    a.step(X, y, optimizer=opt_a)
    assert [id(s) for s in opt_a.state] == state           # optimizer state allocated once


def test_predict_by_head():
    X = np.eye(4, dtype=np.float32)
    assert fastbp.MLP([4, 3], head="softmax_nll").predict(X).shape == (4,)
    assert set(fastbp.MLP([4, 1], head="binary_hinge").predict(X)) <= {-1, 1}
    assert fastbp.MLP([4, 2], head="l2").predict(X).shape == (4, 2)


@pytest.mark.parametrize("make,pattern", [
    (lambda: fastbp.SGD(lr=0), "lr must be > 0"),
    (lambda: fastbp.SGD(lr=0.1, nesterov=True), "nesterov"),
    (lambda: fastbp.Adam(betas=(0.9, 1.0)), "betas"),
    (lambda: fastbp.MLP([4]), "sizes"),
    (lambda: fastbp.MLP([4, 0]), "sizes"),
    (lambda: fastbp.MLP([4, 2], dtype="float16"), "dtype"),
    (lambda: fastbp.MLP([4, 2], activation="gelu"), "activation"),
])
def test_bad_settings(make, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        make()
