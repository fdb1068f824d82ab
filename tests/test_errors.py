"""Bad input (docs/api.md s. 0): the documented exception, a message naming the argument, nothing
written. Every case runs on every backend: checks happen before a backend sees an array."""
import numpy as np
import pytest

import fastbp

# the C backend's tests, which `make test-asan` runs under the sanitizers
pytestmark = pytest.mark.asan

S = np.zeros((4, 3))
y = np.array([0, 1, 2, 1])
Z = np.zeros((4, 3))
X, W, b = np.ones((4, 5)), np.ones((3, 5)), np.zeros(3)
P = np.full((4, 3), 1 / 3)
G35 = np.empty((3, 5))
H = fastbp.softmax_nll

BAD = [
    # (id, call, exception, message pattern)
    ("S-1d", lambda be: H(np.zeros(4), y, backend=be), ValueError, r"S must be a 2-D"),
    ("S-no-columns", lambda be: H(np.zeros((4, 0)), y, backend=be), ValueError, r"S must have"),
    ("S-float16", lambda be: H(S.astype(np.float16), y, backend=be), TypeError, r"S .*float16"),
    ("S-complex", lambda be: H(S.astype(complex), y, backend=be), TypeError, r"S .*complex"),
    ("S-object", lambda be: H(S.astype(object), y, backend=be), TypeError, r"S .*object"),
    ("S-int", lambda be: H(np.zeros((4, 3), int), y, backend=be), TypeError, r"S .*int64"),
    ("S-ragged", lambda be: H([[1.0, 2.0], [1.0]], [0, 1], backend=be), ValueError, r"^S "),
    ("y-shape", lambda be: H(S, y[:3], backend=be), ValueError, r"target must have shape \(4,\)"),
    # a batch mismatch names the batch's rows (X's), not W's; float labels are not probabilities
    ("y-batch-linear", lambda be: fastbp.linear_head(X, W, b, y[:3], backend=be), ValueError,
     r"target must have shape \(4,\) \(one label per row of X, in \[0, 3\)\), got \(3,\)"),
    ("y-batch-mlp", lambda be: fastbp.mlp_loss_grad(X, [(W, b)], y[:3], backend=be), ValueError,
     r"one label per row of X"),
    ("y-float-labels", lambda be: fastbp.linear_head(X, W, b, y.astype(float), backend=be),
     TypeError, r"target must hold integer class labels \(or \(4, 3\) class probabilities\), "
     r"got dtype float64 of shape \(4,\); convert labels with target.astype\(int\)"),
    ("y-float-labels-head", lambda be: H(S, y.astype(np.float32), backend=be), TypeError,
     r"target must hold integer class labels"),
    ("y-float", lambda be: fastbp.multiclass_hinge(S, y.astype(float), backend=be), TypeError,
     r"y must hold integer"),
    ("y-bool", lambda be: fastbp.nll(P, y > 0, backend=be), TypeError, r"y must hold integer"),
    ("y-too-big", lambda be: H(S, [0, 1, 3, 0], backend=be), ValueError,
     r"target has label 3, outside \[0, 3\) for S with 3 columns"),
    ("y-negative", lambda be: fastbp.multiclass_hinge(S, [0, -1, 0, 0], backend=be), ValueError,
     r"y has label -1, outside \[0, 3\)"),
    ("y-uint64-huge", lambda be: H(S, np.array([0, 2**63 + 5, 0, 0], np.uint64), backend=be),
     ValueError, r"label 9223372036854775813"),
    ("y-ignore-other", lambda be: H(S, [0, -7, 0, 0], ignore_index=-100, backend=be), ValueError,
     r"label -7"),
    ("binary-labels", lambda be: fastbp.binary_hinge(np.zeros(4), [1, 0, -1, 1], backend=be),
     ValueError, r"y must hold labels in \{-1, \+1\}, got 0 at index 1"),
    ("binary-shape", lambda be: fastbp.binary_hinge(S, [1, 1, 1, 1], backend=be), ValueError,
     r"s must have shape \(B,\) or \(B, 1\)"),
    ("Z-shape", lambda be: fastbp.l2(S, Z[:, :2], backend=be), ValueError, r"Z must have shape"),
    ("Z-dtype-mix", lambda be: fastbp.l1(S, Z.astype(np.float32), backend=be), TypeError,
     r"Z has dtype float32 .* float64"),
    ("probs-shape", lambda be: H(S, Z[:, :2], backend=be), ValueError, r"target must have shape"),
    ("weight-shape", lambda be: H(S, y, weight=np.ones(4), backend=be), ValueError,
     r"weight must have shape \(3,\)"),
    ("weight-dtype", lambda be: H(S, y, weight=np.ones(3, np.float32), backend=be), TypeError,
     r"weight has dtype float32"),
    ("sample-weight-shape", lambda be: fastbp.l2(S, Z, sample_weight=np.ones(3), backend=be),
     ValueError, r"sample_weight must have shape \(4,\)"),
    ("pos-weight-shape", lambda be: fastbp.sigmoid_bce(S, Z, pos_weight=np.ones(2), backend=be),
     ValueError, r"pos_weight must have shape \(3,\)"),
    ("smoothing-range", lambda be: H(S, y, label_smoothing=1.5, backend=be), ValueError,
     r"label_smoothing must be in \[0.0, 1.0\]"),
    ("smoothing-type", lambda be: H(S, y, label_smoothing="a", backend=be), TypeError,
     r"label_smoothing must be a real"),
    ("ignore-type", lambda be: H(S, y, ignore_index=1.5, backend=be), TypeError,
     r"ignore_index must be an int"),
    ("margin-nan", lambda be: fastbp.multiclass_hinge(S, y, margin=float("nan"), backend=be),
     ValueError, r"margin"),
    ("p-3", lambda be: fastbp.multiclass_hinge(S, y, p=3, backend=be), ValueError,
     r"p must be 1 or 2, got 3"),
    ("reduction-typo", lambda be: H(S, y, reduction="meen", backend=be), ValueError,
     r"reduction must be one of 'mean', 'sum', 'none', got 'meen'"),
    ("out-shape", lambda be: H(S, y, out=np.empty((4, 2)), backend=be), ValueError,
     r"out must have shape \(4, 3\)"),
    ("out-dtype", lambda be: H(S, y, out=np.empty((4, 3), np.float32), backend=be), TypeError,
     r"out must have dtype float64"),
    ("out-list", lambda be: H(S, y, out=[[0.0] * 3] * 4, backend=be), TypeError,
     r"out must be a numpy.ndarray"),
    ("out-strided", lambda be: H(S, y, out=np.empty((4, 6))[:, ::2], backend=be), ValueError,
     r"out must be C-contiguous"),
    ("out-readonly", lambda be: H(S, y, out=np.broadcast_to(np.empty(3), (4, 3)), backend=be),
     ValueError, r"out must be"),
    ("out-overlaps-target", lambda be: fastbp.l2(S, Z, out=Z, backend=be), ValueError,
     r"out overlaps Z"),
    ("head-unknown", lambda be: fastbp.linear_head(X, W, b, y, "softmax", backend=be),
     ValueError, r"head must be one of .*got 'softmax'"),
    ("head-option-unknown", lambda be: fastbp.linear_head(X, W, b, y, margin=2.0, backend=be),
     TypeError, r"head 'softmax_nll' got unexpected option\(s\) \['margin'\]"),
    ("mlp-reduction-none", lambda be: fastbp.mlp_loss_grad(X, [(W, b)], y, reduction="none",
                                                          backend=be),
     ValueError, r"reduction must be one of 'mean', 'sum', got 'none'"),
    ("linear-reduction-typo", lambda be: fastbp.linear_head(X, W, b, y, reduction="meen",
                                                            backend=be),
     ValueError, r"reduction must be one of 'mean', 'sum', 'none', got 'meen'"),
    ("z-loss-class-weight", lambda be: fastbp.linear_head(X, W, b, y, z_loss=0.1,
                                                          weight=np.ones(3), backend=be),
     ValueError, r"z_loss cannot be combined with class weights or probability targets"),
    ("z-loss-probs", lambda be: fastbp.softmax_nll(S, np.full((4, 3), 1 / 3), z_loss=0.1,
                                                   backend=be),
     ValueError, r"z_loss cannot be combined"),
    ("z-loss-negative", lambda be: H(S, y, z_loss=-1.0, backend=be), ValueError,
     r"z_loss must be >= 0, got -1.0"),
    ("softcap-zero", lambda be: H(S, y, softcap=0.0, backend=be), ValueError,
     r"softcap must be > 0, got 0.0"),
    ("softcap-type", lambda be: H(S, y, softcap="big", backend=be), TypeError,
     r"softcap must be a real number, got str"),
    ("filter-eps-head", lambda be: fastbp.linear_head(X, W, b, y, "multiclass_hinge",
                                                      filter_eps=1e-3, backend=be),
     ValueError, r"filter_eps applies to head 'softmax_nll' only, got head 'multiclass_hinge'"),
    ("filter-eps-word", lambda be: fastbp.linear_head(X, W, b, y, filter_eps="fast",
                                                      backend=be),
     ValueError, r"filter_eps must be None, a float >= 0 or 'auto', got 'fast'"),
    ("filter-eps-negative", lambda be: fastbp.linear_head(X, W, b, y, filter_eps=-1e-3,
                                                          backend=be),
     ValueError, r"filter_eps must be in \[0.0, inf\], got -0.001"),
    ("filter-eps-type", lambda be: fastbp.linear_head(X, W, b, y, filter_eps=[1e-3],
                                                      backend=be),
     TypeError, r"filter_eps must be a real number, got list"),
    ("W-columns", lambda be: fastbp.linear_head(X, W[:, :4], b, y, backend=be), ValueError,
     r"W must have shape \(n, 5\)"),
    ("b-shape", lambda be: fastbp.linear_head(X, W, np.zeros(4), y, backend=be), ValueError,
     r"b must have shape \(3,\)"),
    ("linear-label", lambda be: fastbp.linear_head(X, W, b, [0, 0, 3, 0], backend=be),
     ValueError, r"target has label 3, outside \[0, 3\) for W with 3 rows"),
    ("binary-W", lambda be: fastbp.linear_head(X, W, b, [1, 1, 1, 1], "binary_hinge",
                                               backend=be),
     ValueError, r"W must have shape \(1, d\)"),
    ("chunk-rows", lambda be: fastbp.linear_head(X, W, b, y, chunk_rows=0, backend=be),
     ValueError, r"chunk_rows must be >= 1"),
    ("need-dX", lambda be: fastbp.linear_head(X, W, b, y, need_dX="yes", backend=be), TypeError,
     r"need_dX must be True or False"),
    ("grads-out-shape", lambda be: fastbp.linear_head(
        X, W, b, y, out=fastbp.Grads(None, np.empty((3, 4)), None, None), backend=be),
     ValueError, r"out.dW must have shape \(3, 5\)"),
    ("grads-out-same-array", lambda be: fastbp.linear_head(
        np.ones((3, 5)), W, b, [0, 1, 2], out=fastbp.Grads(None, G35, None, G35), backend=be),
     ValueError, r"out's gradient arrays overlap each other"),
    ("grads-out-overlap", lambda be: fastbp.linear_head(
        X, W, b, y, out=fastbp.Grads(None, W, None, None), backend=be),
     ValueError, r"out.dW overlaps W"),
    ("activation-unknown", lambda be: fastbp.linear_act_forward(X, W, b, "gelu", backend=be),
     ValueError, r"activation must be one of .*got 'gelu'"),
    ("alpha-unused", lambda be: fastbp.linear_act_forward(X, W, b, "relu", alpha=0.1,
                                                          backend=be),
     ValueError, r"alpha must be None for activation 'relu'"),
    ("alpha-negative", lambda be: fastbp.linear_act_forward(X, W, b, "elu", alpha=-1.0,
                                                            backend=be),
     ValueError, r"alpha \(alpha of elu\) must be in"),
    ("maxout-rows", lambda be: fastbp.linear_act_forward(X, W, b, "maxout", backend=be),
     ValueError, r"W must have a multiple of 2 rows"),
    ("cache-type", lambda be: fastbp.linear_act_backward(S, (X, W), backend=be), TypeError,
     r"cache must be the cache returned by linear_act_forward"),
    ("dA-shape", lambda be: fastbp.linear_act_backward(
        np.ones((4, 2)), fastbp.linear_act_forward(X, W, b, "tanh")[1], backend=be),
     ValueError, r"dA must have shape \(4, 3\)"),
    ("params-empty", lambda be: fastbp.mlp_forward(X, [], backend=be), TypeError,
     r"params must be a non-empty list"),
    ("params-chain", lambda be: fastbp.mlp_loss_grad(X, [(W, b), (W, b)], y, backend=be),
     ValueError, r"W2 must have 3 columns"),
    ("params-pair", lambda be: fastbp.mlp_forward(X, [W], backend=be), TypeError,
     r"params\[0\] must be a \(W, b\) pair"),
    ("mlp-label", lambda be: fastbp.mlp_loss_grad(X, [(W, b)], [0, 9, 0, 0], backend=be),
     ValueError, r"target has label 9, outside \[0, 3\)"),
    ("mlp-out", lambda be: fastbp.mlp_loss_grad(X, [(W, b)], y, out=[], backend=be), TypeError,
     r"out must be a list of 1"),
    ("backend-unknown", lambda be: H(S, y, backend="cuda"), ValueError,
     r"backend must be one of .*got 'cuda'"),
]


@pytest.mark.parametrize("call,exc,pattern", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_gets_a_clear_error(call, exc, pattern, backend):
    with pytest.raises(exc, match=pattern):
        call(backend)


def test_nothing_is_written_on_error(backend):
    out = np.full((4, 3), 7.0)
    with pytest.raises(ValueError):
        fastbp.softmax_nll(S, [0, 5, 0, 0], out=out, backend=backend)
    np.testing.assert_array_equal(out, 7.0)
    dW = np.full((3, 5), 7.0)
    with pytest.raises(ValueError):
        fastbp.linear_head(X, W, b, [0, 5, 0, 0], out=fastbp.Grads(None, dW, None, None),
                           backend=backend)
    np.testing.assert_array_equal(dW, 7.0)


@pytest.mark.parametrize("name", ["dW", "db", "dX"])
def test_read_only_out_buffers_are_refused(name, backend):
    bufs = {"dW": np.zeros(W.shape), "db": np.zeros(b.shape), "dX": np.zeros(X.shape)}
    bufs[name].flags.writeable = False
    with pytest.raises(ValueError, match=f"out.{name} must be writeable"):
        fastbp.linear_head(X, W, b, y, out=fastbp.Grads(None, *bufs.values()), backend=backend)
    np.testing.assert_array_equal(bufs[name], 0.0)


def test_array_likes_read_only_and_strided_inputs_are_accepted(backend):
    base = np.arange(24, dtype=float).reshape(4, 6) / 10
    strided = base[:, ::2]
    readonly = strided.copy()
    readonly.flags.writeable = False
    want = fastbp.softmax_nll(strided.copy(), y, backend=backend)
    for S_like in (strided, readonly, strided.tolist()):
        loss, dS = fastbp.softmax_nll(S_like, list(y), backend=backend)
        assert loss == want[0]
        np.testing.assert_array_equal(dS, want[1])


@pytest.mark.parametrize("bad", [-1, 3])
def test_a_long_batch_of_labels_is_range_checked(bad, backend):
    """The quick checks take a long label array's min and max in NumPy (a short one's in
    Python): one label out of range at the end of 100 still gets the clear error, from
    linear_head and from a model's step, with nothing updated."""
    rng = np.random.default_rng(0)
    X, W = rng.standard_normal((100, 5)), rng.standard_normal((3, 5))
    y = rng.integers(0, 3, 100)
    y[-1] = bad
    pattern = rf"target has label {bad}, outside \[0, 3\)"
    with pytest.raises(ValueError, match=pattern):
        fastbp.linear_head(X, W, np.zeros(3), y, backend=backend)
    model = fastbp.MLP([5, 4, 3], dtype="float64", backend=backend)
    before = [np.array(a) for pair in model.params for a in pair]
    with pytest.raises(ValueError, match=pattern):
        model.step(X, y, optimizer=fastbp.SGD(0.1))
    for a, was in zip((a for pair in model.params for a in pair), before):
        np.testing.assert_array_equal(a, was)
