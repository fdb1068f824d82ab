"""MLP, SGD and Adam (docs/api.md s. 3): initialisation, torch's update rules, buffers reused."""
import numpy as np
import pytest

import fastbp
from cases import assert_close, make_target, target_kinds

# the C backend's tests, which `make test-asan` runs under the sanitizers
pytestmark = pytest.mark.asan


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


def test_step_reuses_its_buffers_and_state(backend):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((16, 6)).astype(np.float32), rng.integers(0, 3, 16)
    model = fastbp.MLP([6, 5, 3], backend=backend, seed=3)
    opt = fastbp.SGD(lr=0.1, momentum=0.9)
    buffers = [id(g) for pair in model.grads for g in pair] + [id(p) for pair in model.params
                                                                 for p in pair]
    model.step(X, y, optimizer=opt)
    state = [id(s) for s in opt.state]
    for _ in range(3):
        model.step(X, y, optimizer=opt)
    assert [id(s) for s in opt.state] == state and opt.t == 4     # allocated once
    assert [id(g) for pair in model.grads for g in pair] + [
        id(p) for pair in model.params for p in pair] == buffers  # updated in place


OPTIMIZERS = {
    "sgd": lambda: fastbp.SGD(lr=0.1),
    "momentum": lambda: fastbp.SGD(lr=0.1, momentum=0.9, weight_decay=0.01),
    "nesterov": lambda: fastbp.SGD(lr=0.05, momentum=0.8, nesterov=True),
    "adam": lambda: fastbp.Adam(lr=0.01, weight_decay=0.01),
}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("activation", fastbp.ACTIVATIONS)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_step_equals_loss_grad_then_update_on_every_backend(optimizer, activation, depth,
                                                            backend, dtype):
    """A backend's one-call step (Numba) against mlp_loss_grad + optimizer.update (NumPy)."""
    rng = np.random.default_rng(depth)
    X, y = rng.standard_normal((12, 5)).astype(dtype), rng.integers(0, 4, 12)
    alpha = {"maxout": 3, "leaky_relu": 0.1}.get(activation)
    sizes = [5, 6, 7, 4][:depth] + [4]
    fast = fastbp.MLP(sizes, activation=activation, alpha=alpha, dtype=dtype, backend=backend)
    ref = fastbp.MLP(sizes, activation=activation, alpha=alpha, dtype=dtype, backend="numpy")
    o_fast, o_ref = OPTIMIZERS[optimizer](), OPTIMIZERS[optimizer]()
    for _ in range(4):
        l_fast = fast.step(X, y, optimizer=o_fast, label_smoothing=0.1)
        loss, grads = fastbp.mlp_loss_grad(X, ref.params, y, activation=activation, alpha=alpha,
                                           label_smoothing=0.1, backend="numpy")
        o_ref.update(ref.params, grads)
        assert_close(l_fast, loss, dtype)
    for (Wf, bf), (Wr, br) in zip(fast.params, ref.params):
        assert_close(Wf, Wr, dtype)
        assert_close(bf, br, dtype)


# nll takes probabilities, which a linear last layer does not produce
@pytest.mark.parametrize("head", [h for h in fastbp.HEADS if h != "nll"])
def test_every_head_trains_the_same_on_every_backend(head, backend, dtype):
    """MLP.step (a backend's one-call step where it has one) with each head of the registry,
    against mlp_loss_grad + SGD on the NumPy reference."""
    rng = np.random.default_rng(3)
    n = 1 if head == "binary_hinge" else 3
    kind = target_kinds(head)[0]
    X = rng.standard_normal((10, 5)).astype(dtype)
    target = make_target(head, kind, 10, n, dtype, rng)
    fast = fastbp.MLP([5, 6, n], activation="tanh", head=head, dtype=dtype, backend=backend)
    ref = fastbp.MLP([5, 6, n], activation="tanh", head=head, dtype=dtype, backend="numpy")
    o_fast, o_ref = fastbp.SGD(lr=0.05, momentum=0.5), fastbp.SGD(lr=0.05, momentum=0.5)
    for _ in range(3):
        l_fast = fast.step(X, target, optimizer=o_fast)
        loss, grads = fastbp.mlp_loss_grad(X, ref.params, target, activation="tanh", head=head,
                                           backend="numpy")
        o_ref.update(ref.params, grads)
        assert_close(l_fast, loss, dtype)
    for (Wf, bf), (Wr, br) in zip(fast.params, ref.params):
        assert_close(Wf, Wr, dtype)
        assert_close(bf, br, dtype)
    assert fast.predict(X).shape[0] == 10


def test_predict_by_head():
    X = np.eye(4, dtype=np.float32)
    assert fastbp.MLP([4, 3], head="softmax_nll").predict(X).shape == (4,)
    assert set(fastbp.MLP([4, 1], head="binary_hinge").predict(X)) <= {-1, 1}
    assert fastbp.MLP([4, 2], head="l2").predict(X).shape == (4, 2)


@pytest.mark.parametrize("make,pattern", [
    (lambda: fastbp.SGD(lr=-0.1), r"lr must be in \[0.0, inf\], got -0.1"),
    (lambda: fastbp.Adam(lr=-1e-3), r"lr must be in \[0.0, inf\], got -0.001"),
    (lambda: fastbp.SGD(momentum=-0.5), "momentum must be in"),
    (lambda: fastbp.SGD(weight_decay=-1), "weight_decay must be in"),
    (lambda: fastbp.Adam(weight_decay=-1), "weight_decay must be in"),
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


def test_c_step_rebuilds_its_pointer_table_when_arrays_change():
    """The C backend caches the pointers of a model's arrays per optimizer; replacing a
    parameter array must not leave it writing into the old one."""
    if "c" not in fastbp.available_backends():
        pytest.skip("the C backend is not built here")
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    model = fastbp.MLP([4, 5, 3], dtype="float64", backend="c", seed=0)
    opt = fastbp.SGD(lr=0.1, momentum=0.9)
    model.step(X, y, optimizer=opt)
    W_old = model.params[0][0]
    model.params[0] = (W_old.copy(), model.params[0][1])
    frozen = W_old.copy()
    model.step(X, y, optimizer=opt)
    np.testing.assert_array_equal(W_old, frozen)             # the old array is left alone
    assert not np.array_equal(model.params[0][0], frozen)     # the new one is updated


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
@pytest.mark.parametrize("weighted", [False, True])
def test_epoch_equals_its_steps_bit_for_bit(optimizer, weighted, backend, dtype):
    """MLP.epoch validates once and steps through the batches in order: the same updates as
    step on each batch (the last one partial), including a per-row sample_weight."""
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((50, 6)).astype(dtype), rng.integers(0, 3, 50)
    opts = {"sample_weight": rng.random(50).astype(dtype)} if weighted else {}
    a, b = (fastbp.MLP([6, 8, 3], dtype=dtype, backend=backend, seed=1) for _ in range(2))
    oa, ob = OPTIMIZERS[optimizer](), OPTIMIZERS[optimizer]()
    losses = [a.step(X[lo:lo + 16], y[lo:lo + 16], optimizer=oa,
                     **{k: v[lo:lo + 16] for k, v in opts.items()}) for lo in range(0, 50, 16)]
    want = sum(l * len(X[lo:lo + 16]) for l, lo in zip(losses, range(0, 50, 16))) / 50
    assert b.epoch(X, y, optimizer=ob, batch_size=16, **opts) == want
    for (Wa, ba), (Wb, bb) in zip(a.params, b.params):
        np.testing.assert_array_equal(Wa, Wb)
        np.testing.assert_array_equal(ba, bb)


def test_focal_alpha_reaches_the_head_through_the_model(backend):
    """MLP.loss_grad / step take sigmoid_focal's alpha as a head option (the activation's
    alpha is the model's own, set at construction)."""
    rng = np.random.default_rng(0)
    X, Z = rng.standard_normal((6, 4)), rng.random((6, 3))
    net = fastbp.MLP([4, 5, 3], activation="leaky_relu", alpha=0.1, head="sigmoid_focal",
                     dtype="float64", backend=backend)
    loss, _ = net.loss_grad(X, Z, alpha=0.9, gamma=1.0)
    want, _ = fastbp.mlp_loss_grad(X, net.params, Z, activation="leaky_relu", alpha=0.1,
                                   head="sigmoid_focal", backend="numpy")
    assert loss != want     # alpha 0.9 (and gamma 1) is not the default
    S = fastbp.mlp_forward(X, net.params, activation="leaky_relu", alpha=0.1)
    assert_close(loss, fastbp.sigmoid_focal(S, Z, alpha=0.9, gamma=1.0)[0], np.float64)
    step_loss = net.step(X, Z, optimizer=fastbp.SGD(lr=0.01), alpha=0.9, gamma=1.0)
    assert_close(step_loss, loss, np.float64)


@pytest.mark.parametrize("make", [lambda: fastbp.SGD(lr=0.0, momentum=0.0, weight_decay=0.0),
                                  lambda: fastbp.SGD(lr=0.0, momentum=0.9, weight_decay=0.1),
                                  lambda: fastbp.Adam(lr=0.0, weight_decay=0.0)])
def test_zero_learning_rate_is_accepted_and_leaves_the_weights(make, backend):
    """A learning-rate warm-up starts at 0 (PyTorch accepts it): the step runs, the optimizer's
    state advances, the weights stay."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    net = fastbp.MLP([4, 5, 3], dtype="float64", backend=backend)
    before = [W.copy() for W, _ in net.params]
    opt = make()
    loss = net.step(X, y, optimizer=opt)
    assert np.isfinite(loss) and opt.t == 1
    for (W, _), W0 in zip(net.params, before):
        np.testing.assert_array_equal(W, W0)
