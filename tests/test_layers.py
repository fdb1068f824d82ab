"""linear_act_forward/backward, mlp_forward and mlp_loss_grad (docs/api.md s. 3) for every
activation and depth: finite differences, the notes' worked examples, the naive path, backends."""
import numpy as np
import pytest

import fastbp
from cases import assert_close, cast_floats

# the C backend's tests, which `make test-asan` runs under the sanitizers
pytestmark = pytest.mark.asan

ACTS = fastbp.ACTIVATIONS


def make_net(sizes, activation, dtype, rng, k=2, bias=True):
    """params for widths sizes[0] -> ... -> sizes[-1]; maxout hidden layers get k pieces."""
    params = []
    for l in range(1, len(sizes)):
        rows = sizes[l] * (k if activation == "maxout" and l < len(sizes) - 1 else 1)
        W = (rng.standard_normal((rows, sizes[l - 1])) / np.sqrt(sizes[l - 1])).astype(dtype)
        b = (0.1 * rng.standard_normal(rows)).astype(dtype) if bias else None
        params.append((W, b))
    return params


def alpha_for(activation):
    return {"leaky_relu": 0.1, "elu": 0.7, "maxout": 3}.get(activation)


@pytest.mark.parametrize("activation", ACTS)
def test_linear_act_gradients_match_finite_differences(activation, backend, rng):
    alpha = alpha_for(activation)
    X = rng.standard_normal((5, 3))
    (W, b), = make_net([3, 4], activation, np.float64, rng, k=alpha or 1)
    if activation == "maxout":
        W = rng.standard_normal((12, 3))
        b = rng.standard_normal(12)
    dA = rng.standard_normal((5, 4))

    def f(X, W, b):   # loss = sum(dA * A): its gradient is the backward of dA
        A, cache = fastbp.linear_act_forward(X, W, b, activation, alpha=alpha, backend=backend)
        dX, dW, db = fastbp.linear_act_backward(dA, cache, backend=backend)
        return float(np.sum(dA * A)), dX, dW, db

    assert fastbp.gradcheck(f, X, W, b) <= 1e-5


def test_activation_values_by_hand():
    s = np.array([[-2.0, -0.5, 0.0, 0.5, 2.0]])
    eye = np.eye(5)
    values = {
        "sigmoid": 1 / (1 + np.exp(-s)), "tanh": np.tanh(s), "relu": np.maximum(s, 0),
        "leaky_relu": np.where(s > 0, s, 0.01 * s), "elu": np.where(s > 0, s, np.expm1(s)),
        "identity": s}
    for name, want in values.items():
        A, _ = fastbp.linear_act_forward(eye, s.T.repeat(5, 1) * eye, np.zeros(5), name)
        np.testing.assert_allclose(np.diag(A), want[0], rtol=1e-15, err_msg=name)


def test_maxout_picks_the_first_max_piece_and_routes_the_gradient():
    X = np.array([[1.0, 0.0]])
    W = np.array([[1.0, 0.0], [2.0, 0.0], [1.0, 0.0], [3.0, 0.0]])   # pieces: rows 0-1, 2-3
    A, cache = fastbp.linear_act_forward(X, W, None, "maxout", alpha=2)
    np.testing.assert_array_equal(A, [[1.0, 3.0]])                    # unit 0: tie -> piece 0
    _, dW, _ = fastbp.linear_act_backward(np.array([[1.0, 1.0]]), cache)
    np.testing.assert_array_equal(dW, [[1, 0], [0, 0], [0, 0], [1, 0]])


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_mlp_loss_grad_matches_finite_differences(activation, depth, linear_backend, rng):
    alpha = alpha_for(activation)
    sizes = [4, 5, 3, 3][:depth] + [3]
    params = make_net(sizes, activation, np.float64, rng, k=alpha or 2)
    X = rng.standard_normal((6, 4))
    y = rng.integers(0, 3, 6)
    flat = [a for W, b in params for a in (W, b)]

    def f(*flat):
        ps = list(zip(flat[::2], flat[1::2]))
        loss, grads = fastbp.mlp_loss_grad(X, ps, y, activation=activation, alpha=alpha,
                                           backend=linear_backend)
        return (loss, *[g for pair in grads for g in pair])

    assert fastbp.gradcheck(f, *flat) <= 1e-5


@pytest.mark.parametrize("activation", ACTS)
def test_mlp_layers_compose(activation, linear_backend, dtype, rng):
    """mlp_loss_grad = linear_act_* per hidden layer + linear_head on the last: same numbers."""
    alpha = alpha_for(activation)
    params = make_net([6, 5, 4, 3], activation, dtype, rng, k=alpha or 2)
    X = rng.standard_normal((7, 6)).astype(dtype)
    y = rng.integers(0, 3, 7)
    h, caches = X, []
    for W, b in params[:-1]:
        h, cache = fastbp.linear_act_forward(h, W, b, activation, alpha=alpha, backend="numpy")
        caches.append(cache)
    S = fastbp.mlp_forward(X, params, activation=activation, alpha=alpha, backend=linear_backend)
    assert_close(S, h @ params[-1][0].T + params[-1][1], dtype)
    g = fastbp.linear_head(h, *params[-1], y, backend="numpy")
    want, dh = [(g.dW, g.db)], g.dX
    for cache in caches[::-1]:
        dh, dW, db = fastbp.linear_act_backward(dh, cache, backend="numpy")
        want.insert(0, (dW, db))
    loss, grads = fastbp.mlp_loss_grad(X, params, y, activation=activation, alpha=alpha,
                                       backend=linear_backend)
    assert_close(loss, g.loss, dtype)
    for (dW, db), (eW, eb) in zip(grads, want):
        assert_close(dW, eW, dtype)
        assert_close(db, eb, dtype)


@pytest.mark.parametrize("activation", ACTS)
def test_backends_match_reference(activation, linear_backend, dtype, rng):
    alpha = alpha_for(activation)
    params = make_net([5, 6, 4, 3], activation, np.float64, rng, k=alpha or 2)
    X = rng.standard_normal((9, 5))
    Z = rng.random((9, 3))
    want = fastbp.mlp_loss_grad(X, params, Z, activation=activation, alpha=alpha,
                                head="sigmoid_bce", backend="numpy")
    X_d, Z_d = cast_floats(dtype, X, Z)
    p_d = [tuple(cast_floats(dtype, W, b)) for W, b in params]
    got = fastbp.mlp_loss_grad(X_d, p_d, Z_d, activation=activation, alpha=alpha,
                               head="sigmoid_bce", backend=linear_backend)
    assert_close(got[0], want[0], dtype)
    for (dW, db), (eW, eb) in zip(got[1], want[1]):
        assert_close(dW, eW, dtype)
        assert_close(db, eb, dtype)


@pytest.mark.parametrize("activation", [a for a in ACTS if a != "maxout"])
@pytest.mark.parametrize("head", ["softmax_nll", "sigmoid_l2", "multiclass_hinge", "huber",
                                  "sigmoid_focal"])
def test_naive_mlp_equals_fused(activation, head, rng):
    alpha = alpha_for(activation)
    params = make_net([4, 5, 3, 3], activation, np.float64, rng)
    X = rng.standard_normal((5, 4))
    float_target = fastbp._checks.TARGET_KIND[head] == "float"
    target = rng.random((5, 3)) if float_target else rng.integers(0, 3, 5)
    want = fastbp.mlp_loss_grad(X, params, target, activation=activation, alpha=alpha, head=head,
                                backend="numpy")
    got = fastbp.naive.mlp_loss_grad(X, params, target, activation=activation, alpha=alpha,
                                     head=head)
    assert_close(got[0], want[0], np.float64)
    for (dW, db), (eW, eb) in zip(got[1], want[1]):
        assert_close(dW, eW, np.float64)
        assert_close(db, eb, np.float64)


def test_mlp_out_buffers_and_no_bias(linear_backend, rng):
    params = make_net([4, 5, 3], "tanh", np.float64, rng, bias=False)
    X, y = rng.standard_normal((6, 4)), rng.integers(0, 3, 6)
    out = [(np.empty_like(W), None) for W, _ in params]
    loss, grads = fastbp.mlp_loss_grad(X, params, y, activation="tanh", out=out,
                                       backend=linear_backend)
    assert all(g[0] is o[0] and g[1] is None for g, o in zip(grads, out))
    loss2, grads2 = fastbp.mlp_loss_grad(X, params, y, activation="tanh", backend=linear_backend)
    assert loss == loss2
    np.testing.assert_array_equal(grads[0][0], grads2[0][0])


# ---------------------------------------------------------------- the notes' worked examples
def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_notes_one_layer_sigmoid_l2(linear_backend, rng):
    """dL/ds = -2 (z - p) sigma'(s); dL/dW = dL/ds x^T; dL/db = dL/ds; dL/dx = W^T dL/ds."""
    x, z = rng.standard_normal(4), rng.random(3)
    W, b = rng.standard_normal((3, 4)), rng.standard_normal(3)
    p = sigmoid(W @ x + b)
    ds = -2 * (z - p) * p * (1 - p)
    g = fastbp.linear_head(x[None], W, b, z[None], "sigmoid_l2", backend=linear_backend)
    assert g.loss == pytest.approx(((z - p) ** 2).sum(), rel=1e-13)
    np.testing.assert_allclose(g.dW, np.outer(ds, x), rtol=1e-12)
    np.testing.assert_allclose(g.db, ds, rtol=1e-12)
    np.testing.assert_allclose(g.dX[0], W.T @ ds, rtol=1e-12)


def test_notes_two_layer_sigmoid_l2(linear_backend, rng):
    x, z = rng.standard_normal(4), rng.random(3)
    W1, b1 = rng.standard_normal((5, 4)), rng.standard_normal(5)
    W2, b2 = rng.standard_normal((3, 5)), rng.standard_normal(3)
    p1 = sigmoid(W1 @ x + b1)
    p2 = sigmoid(W2 @ p1 + b2)
    ds2 = -2 * (z - p2) * p2 * (1 - p2)
    ds1 = (W2.T @ ds2) * p1 * (1 - p1)
    loss, grads = fastbp.mlp_loss_grad(x[None], [(W1, b1), (W2, b2)], z[None],
                                       activation="sigmoid", head="sigmoid_l2",
                                       backend=linear_backend)
    assert loss == pytest.approx(((z - p2) ** 2).sum(), rel=1e-13)
    for got, want in zip([g for pair in grads for g in pair],
                         [np.outer(ds1, x), ds1, np.outer(ds2, p1), ds2]):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_notes_softmax_classifiers(linear_backend, rng):
    """1-layer: dL/ds = p - e_y; 2-layer sigmoid hidden: dL/ds1 = (W2^T (p - e_y)) sigma'(s1)."""
    x, y = rng.standard_normal(4), 2
    W1, b1 = rng.standard_normal((5, 4)), rng.standard_normal(5)
    W2, b2 = rng.standard_normal((3, 5)), rng.standard_normal(3)
    def softmax(s):
        e = np.exp(s - s.max())
        return e / e.sum()
    p = softmax(W1[:3] @ x + b1[:3])
    g = fastbp.linear_head(x[None], W1[:3], b1[:3], [y], backend=linear_backend)
    np.testing.assert_allclose(g.dW, np.outer(p - np.eye(3)[y], x), rtol=1e-12)
    h = sigmoid(W1 @ x + b1)
    p = softmax(W2 @ h + b2)
    ds2 = p - np.eye(3)[y]
    ds1 = (W2.T @ ds2) * h * (1 - h)
    loss, grads = fastbp.mlp_loss_grad(x[None], [(W1, b1), (W2, b2)], [y], activation="sigmoid",
                                       backend=linear_backend)
    assert loss == pytest.approx(-np.log(p[y]), rel=1e-13)
    np.testing.assert_allclose(grads[0][0], np.outer(ds1, x), rtol=1e-12)
    np.testing.assert_allclose(grads[1][0], np.outer(ds2, h), rtol=1e-12)


def test_notes_norm_of_Wx(linear_backend, rng):
    """f(x, W) = ||W x||^2: df/dx = 2 W^T W x, df/dW = 2 W x x^T -- batched, the l2 head with
    zero targets on S = X W^T (sum reduction): df/dX = 2 X W^T W, df/dW = 2 W X^T X."""
    X, W = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    g = fastbp.linear_head(X, W, None, np.zeros((3, 5)), "l2", reduction="sum",
                           backend=linear_backend)
    assert g.loss == pytest.approx(np.sum((X @ W.T) ** 2), rel=1e-13)
    np.testing.assert_allclose(g.dX, 2 * X @ W.T @ W, rtol=1e-12)
    np.testing.assert_allclose(g.dW, 2 * W @ X.T @ X, rtol=1e-12)
    x = X[0]
    g1 = fastbp.linear_head(x[None], W, None, np.zeros((1, 5)), "l2", reduction="sum",
                            backend=linear_backend)
    np.testing.assert_allclose(g1.dX[0], 2 * W.T @ W @ x, rtol=1e-12)
    np.testing.assert_allclose(g1.dW, 2 * W @ np.outer(x, x), rtol=1e-12)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("activation", [a for a in ACTS if a != "maxout"])
def test_extreme_preactivations_match_the_reference(activation, backend, dtype):
    """Saturated, underflowing, infinite and NaN pre-activations (and rows longer than the
    compiled kernels' vector blocks) give the reference's outputs and gradients."""
    s = np.array([-800.0, -720.0, -100.0, -1.0, 0.0, 1e-300, 1.0, 40.0, 720.0, np.inf, -np.inf,
                  np.nan])
    X = np.tile(s, 30)[:, None].astype(dtype)             # 360 rows of one feature
    W, b = np.ones((300, 1), dtype), np.linspace(-1, 1, 300).astype(dtype)
    alpha = alpha_for(activation)
    want, cache_ref = fastbp.linear_act_forward(X, W, b, activation, alpha=alpha, backend="numpy")
    got, cache = fastbp.linear_act_forward(X, W, b, activation, alpha=alpha, backend=backend)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert_close(np.nan_to_num(got), np.nan_to_num(want), dtype)
    dA = np.ones_like(got)
    g_want = fastbp.linear_act_backward(dA, cache_ref, backend="numpy")[1:]
    g_got = fastbp.linear_act_backward(dA, cache, backend=backend)[1:]
    for a, w in zip(g_got, g_want):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(w))


@pytest.mark.parametrize("activation", ACTS)
def test_empty_batch_through_a_layer(activation, backend):
    """B = 0 (the last, empty slice of a dataset) is a valid batch for every activation."""
    alpha = alpha_for(activation)
    k = alpha if activation == "maxout" else 1
    X, W = np.zeros((0, 3)), np.ones((4 * k, 3))
    A, cache = fastbp.linear_act_forward(X, W, np.zeros(4 * k), activation, alpha=alpha,
                                         backend=backend)
    assert A.shape == (0, 4)
    dX, dW, db = fastbp.linear_act_backward(np.zeros((0, 4)), cache, backend=backend)
    assert dX.shape == (0, 3) and not dW.any() and not db.any()
