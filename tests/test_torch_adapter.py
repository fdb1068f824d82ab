"""fastbp.torch: the fused kernels inside PyTorch's autograd (docs/api.md section 8). Skipped
where PyTorch is not installed (`make test` installs it)."""
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from cases import head_cases, make_head_inputs, rotated, rotated_ids

torch = pytest.importorskip("torch")
fbt = pytest.importorskip("fastbp.torch")
F = torch.nn.functional

REDUCTIONS = ("mean", "sum", "none")


def _tol(dtype):
    return dict(rtol=1e-9, atol=1e-12) if np.dtype(dtype) == np.float64 else \
        dict(rtol=2e-4, atol=1e-6)


def _close(got, want, dtype):
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else got
    want = np.asarray(want, np.float64)
    tol = _tol(dtype)
    np.testing.assert_allclose(got, want, rtol=tol["rtol"],
                               atol=tol["atol"] + tol["rtol"] * np.abs(want).max(initial=0))


def _t(a):
    return a if a is None or not isinstance(a, np.ndarray) else torch.from_numpy(a.copy())


def _upstream(loss, rng):
    g = rng.standard_normal(loss.shape) + 1.5
    return torch.as_tensor(g, dtype=loss.dtype), g


_HEAD_ROWS = rotated(head_cases(), list(REDUCTIONS), ["float64", "float32"])


@pytest.mark.parametrize("case, reduction, dtype", _HEAD_ROWS, ids=rotated_ids(_HEAD_ROWS))
def test_every_head_and_option_matches_the_kernels(case, reduction, dtype, rng):
    """loss and dS under an upstream gradient g: g dS ("mean"/"sum") or row i times g_i
    ("none"), against fastbp's NumPy reference. Every case with every
    reduction, the dtypes in turn."""
    dtype = np.dtype(dtype)
    head, spec = case
    S, target, opts = make_head_inputs(head, spec, 9, 4, dtype, rng)
    S_t = _t(S).requires_grad_()
    loss = getattr(fbt, head)(S_t, _t(target), reduction=reduction,
                              **{k: _t(v) for k, v in opts.items()})
    g_t, g = _upstream(loss, rng)
    loss.backward(g_t)
    want_loss, want_dS = getattr(fastbp, head)(S, target, reduction=reduction, backend="numpy",
                                               **opts)
    _close(loss, want_loss, dtype)
    scale = g.reshape((-1,) + (1,) * (S.ndim - 1)) if reduction == "none" else g
    _close(S_t.grad, scale * want_dS, dtype)
    assert S_t.grad.dtype == S_t.dtype


def _linear_inputs(head, spec, dtype, rng, B=11, d=6, n=4):
    n = 1 if head == "binary_hinge" else n
    X = rng.standard_normal((B, d)).astype(dtype)
    W = (0.5 * rng.standard_normal((n, d))).astype(dtype)
    b = (0.1 * rng.standard_normal(n)).astype(dtype)
    _, target, opts = make_head_inputs(head, dict(spec, target=spec["target"].replace(
        "pm1_col", "pm1")), B, n, dtype, rng)
    if head == "nll":                           # probabilities: a softmax layer's output
        X = np.abs(X)
    return X, W, b, target, opts


def _linear_reference(X, W, b, target, head, opts, reduction, g):
    """Loss and (dX, dW, db) of sum(g * loss) from the reference head on S = X W^T + b."""
    S = X @ W.T + b
    if head == "binary_hinge":
        S = S[:, 0]
    loss, dS = getattr(fastbp, head)(S, target, reduction=reduction, backend="numpy", **opts)
    dS = dS.reshape(len(X), -1)
    dS = dS * (g.reshape(-1, 1) if reduction == "none" else g)
    return loss, dS @ W, dS.T @ X, dS.sum(axis=0)


LINEAR_CASES = [c for c in head_cases() if c[0] != "nll" and c[1]["target"] != "pm1_col"]


_LINEAR_ROWS = rotated(LINEAR_CASES, list(REDUCTIONS), ["float64", "float32"])


@pytest.mark.parametrize("case, reduction, dtype", _LINEAR_ROWS, ids=rotated_ids(_LINEAR_ROWS))
def test_linear_head_every_head_and_option(case, reduction, dtype, rng):
    """Every case with every reduction, the dtypes in turn."""
    dtype = np.dtype(dtype)
    head, spec = case
    X, W, b, target, opts = _linear_inputs(head, spec, dtype, rng)
    Xt, Wt, bt = (_t(a).requires_grad_() for a in (X, W, b))
    loss = fbt.linear_head(Xt, Wt, bt, _t(target), head, reduction=reduction,
                           **{k: _t(v) for k, v in opts.items()})
    g_t, g = _upstream(loss, rng)
    loss.backward(g_t)
    want = _linear_reference(X, W, b, target, head, opts, reduction, g)
    _close(loss, want[0], dtype)
    for got, w in zip((Xt.grad, Wt.grad, bt.grad), want[1:]):
        _close(got, w, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1}, {"ignore_index": 2},
                                     {"weight": "on"}])
def test_linear_head_is_torch_linear_plus_cross_entropy(options, reduction, dtype, rng):
    """PyTorch's own autograd as the oracle, for every reduction."""
    X, W, b, y, _ = _linear_inputs("softmax_nll", {"target": "labels"}, dtype, rng)
    if options.get("weight") == "on":
        options = {"weight": torch.from_numpy(rng.random(4).astype(dtype) + 0.5)}
    ours = [_t(a).requires_grad_() for a in (X, W, b)]
    theirs = [_t(a).requires_grad_() for a in (X, W, b)]
    loss = fbt.linear_head(*ours, torch.from_numpy(y), reduction=reduction, **options)
    want = F.cross_entropy(F.linear(*theirs), torch.from_numpy(y), reduction=reduction,
                           **options)
    g = torch.linspace(0.5, 2.0, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
    loss.backward(g)
    want.backward(g)
    _close(loss, want.detach().numpy(), dtype)
    for a, c in zip(ours, theirs):
        _close(a.grad, c.grad.numpy(), dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("head", ["softmax_nll", "multiclass_hinge", "sigmoid_bce", "huber",
                                  "sigmoid_focal", "l2"])
def test_gradcheck_float64(head, reduction, rng):
    spec = {"target": "labels" if head in ("softmax_nll", "multiclass_hinge") else "float"}
    X, W, b, target, _ = _linear_inputs(head, spec, np.float64, rng, B=5, d=3, n=3)
    args = tuple(_t(a).requires_grad_() for a in (X, W, b))
    tt = _t(target)
    assert torch.autograd.gradcheck(
        lambda X, W, b: fbt.linear_head(X, W, b, tt, head, reduction=reduction), args)
    S = args[0] @ args[1].T
    S = S.detach().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda S: getattr(fbt, head)(S, tt, reduction=reduction), (S,))


def test_gradients_only_for_what_requires_grad(monkeypatch, rng):
    """A first layer's X needs no dX: the kernel is asked for none; under torch.no_grad() (or
    nothing requiring grad) no gradient is computed at all."""
    X, W, b, y, _ = _linear_inputs("softmax_nll", {"target": "labels"}, np.float64, rng)
    calls = []
    real = fastbp.layers.linear_head

    def spy(*args, **kwargs):
        calls.append(kwargs["need_dX"])
        return real(*args, **kwargs)

    monkeypatch.setattr(fastbp.layers, "linear_head", spy)
    Wt, bt = _t(W).requires_grad_(), _t(b).requires_grad_()
    loss = fbt.linear_head(_t(X), Wt, bt, _t(y))
    loss.backward()
    assert calls == [False] and Wt.grad is not None and bt.grad is not None
    want = fastbp.linear_head(X, W, b, y, backend="numpy")
    with torch.no_grad():
        quiet = fbt.linear_head(_t(X), Wt, bt, _t(y))
    frozen = fbt.linear_head(_t(X), _t(W), None, _t(y))
    assert calls == [False]                   # neither called the gradient kernel
    _close(quiet, want.loss, np.float64)
    _close(frozen, fastbp.linear_head(X, W, None, y, backend="numpy").loss, np.float64)
    assert not quiet.requires_grad


def test_non_contiguous_inputs_are_read_correctly_and_left_alone(rng):
    """Transposed and sliced tensors (the known failure of other fused losses)."""
    A = rng.standard_normal((6, 13))                # X = A^T: (13, 6), column-major
    Wbig = rng.standard_normal((4, 12))
    y = rng.integers(0, 4, 13)
    Xt = torch.from_numpy(A).T.requires_grad_()
    Wt = torch.from_numpy(Wbig)[:, ::2].requires_grad_()      # every other column
    bt = torch.zeros(8, dtype=torch.float64)[::2].requires_grad_()
    before = (A.copy(), Wbig.copy())
    loss = fbt.linear_head(Xt, Wt, bt, torch.from_numpy(y))
    loss.backward()
    X, W = A.T.copy(), Wbig[:, ::2].copy()
    want = fastbp.linear_head(X, W, np.zeros(4), y, backend="numpy")
    _close(loss, want.loss, np.float64)
    for got, w in zip((Xt.grad, Wt.grad, bt.grad), (want.dX, want.dW, want.db)):
        _close(got, w, np.float64)
    np.testing.assert_array_equal(A, before[0])
    np.testing.assert_array_equal(Wbig, before[1])


def test_upstream_scalar_scales_and_retain_graph_repeats(rng):
    X, W, b, y, _ = _linear_inputs("softmax_nll", {"target": "labels"}, np.float64, rng)
    Wt = _t(W).requires_grad_()
    loss = fbt.linear_head(_t(X), Wt, _t(b), _t(y))
    (first,) = torch.autograd.grad(3.0 * loss, Wt, retain_graph=True)
    (again,) = torch.autograd.grad(3.0 * loss, Wt)
    want = fastbp.linear_head(X, W, b, y, backend="numpy").dW
    _close(first, 3 * want, np.float64)
    _close(again, 3 * want, np.float64)


@pytest.mark.parametrize("bad, match", [
    (lambda X: X.half(), r"X must be float32, float64 or bfloat16, got torch.float16; "
                         r".*X.float\(\)"),
    (lambda X: X.to(torch.complex64), r"X must be float32, float64 or bfloat16, got "
                                      r"torch.complex64"),
    (lambda X: X.to("meta"), r"X must be a CPU tensor, got one on meta.*X.cpu\(\)")])
def test_other_devices_and_dtypes_are_type_errors(bad, match):
    X, W, y = torch.ones(3, 2), torch.ones(4, 2), torch.zeros(3, dtype=torch.int64)
    with pytest.raises(TypeError, match=match):
        fbt.linear_head(bad(X), W, None, y)


def test_bad_options_name_the_option():
    X, W, y = torch.ones(3, 2), torch.ones(4, 2), torch.zeros(3, dtype=torch.int64)
    with pytest.raises(ValueError, match="reduction must be one of"):
        fbt.linear_head(X, W, None, y, reduction="avg")
    with pytest.raises(ValueError, match="head must be one of"):
        fbt.linear_head(X, W, None, y, "nope")
    with pytest.raises(ValueError, match="label_smoothing"):
        fbt.linear_head(X, W, None, y, label_smoothing=2.0)


def test_linear_head_module_is_initialised_as_nn_linear():
    torch.manual_seed(3)
    ours = fbt.LinearHead(7, 5, dtype=torch.float64)
    torch.manual_seed(3)
    theirs = torch.nn.Linear(7, 5, dtype=torch.float64)
    assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)
    assert [n for n, _ in ours.named_parameters()] == ["weight", "bias"]
    X = torch.randn(4, 7, dtype=torch.float64)
    assert torch.allclose(ours.logits(X), theirs(X))
    y = torch.tensor([0, 1, 2, 4])
    assert torch.allclose(ours(X, y), F.cross_entropy(theirs(X), y))
    assert fbt.LinearHead(3, 2, bias=False).bias is None


def test_import_fastbp_imports_neither_torch_nor_jax():
    code = "import sys, fastbp; print(sorted(m for m in ('torch', 'jax') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------- torch.compile
def _op_args(rng, dtype=torch.float64):
    X, W, b, y, _ = _linear_inputs("softmax_nll", {"target": "labels"}, np.float64, rng)
    X, W, b = (torch.from_numpy(a).to(dtype) for a in (X, W, b))
    w = torch.rand(W.shape[0], dtype=dtype) + 0.5
    return X, W, b, torch.from_numpy(y), w


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("need", [[True, True, True], [False, True, False], [False] * 3])
def test_operators_pass_torch_library_opcheck(reduction, need, rng):
    """Schema, fake (shape) implementations and the compiler's dispatch of every operator
    agree with the real ones."""
    X, W, b, y, w = _op_args(rng)
    torch.library.opcheck(torch.ops.fastbp.linear_head.default,
                          (X, W, b, y, [w, None, None], "softmax_nll", "[]", None, reduction,
                           need))
    torch.library.opcheck(torch.ops.fastbp.linear_rows_backward.default,
                          (X, W, None, y, [None] * 3, "softmax_nll",
                           "[('label_smoothing', 0.1)]", "c", torch.rand(len(X),
                                                                        dtype=X.dtype),
                           need[:2] + [False]))
    torch.library.opcheck(torch.ops.fastbp.head.default,
                          (X @ W.T, y, [None, None, None], "softmax_nll", "[]", None, reduction,
                           need[0]))


@pytest.fixture
def fresh_dynamo():
    """Each test's functions compiled afresh (one code object compiled for many parameters
    would meet dynamo's recompile limit)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _train(step_fn, params, steps=3):
    """``steps`` SGD steps of ``step_fn`` (returns the loss); the losses and final parameters."""
    opt = torch.optim.SGD(params, lr=0.1)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = step_fn()
        (loss.sum() if loss.ndim else loss).backward()
        opt.step()
        losses.append(loss.detach().clone())
    return losses, [p.detach().clone() for p in params]


def _eager_and_compiled(make, backend, dtype, reduction, options, X, y):
    """Three SGD steps of ``make(body, head)`` (a function of X, y) on a fresh model, eager and
    then compiled with ``fullgraph=True`` (dynamo's explain finds 0 graph breaks first): each
    run's (losses, parameters)."""
    results = []
    for compiled in (False, True):
        body, head = _model(dtype, reduction, options)
        f = make(body, head)
        if compiled:
            explain = torch._dynamo.explain(f)(X, y)
            assert explain.graph_break_count == 0, explain.break_reasons
            f = torch.compile(f, fullgraph=True, backend=backend)
        results.append(_train(lambda: f(X, y), [*body.parameters(), *head.parameters()]))
    return results


def _model(dtype, reduction, options):
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Linear(6, 8, dtype=dtype), torch.nn.Tanh())
    head = fbt.LinearHead(8, 5, dtype=dtype, reduction=reduction, **options)
    return body, head


# aot_eager traces what inductor does (dynamo, the fake implementations, AOTAutograd's forward
# and backward graphs) without compiling C++; inductor itself on two cases
_COMPILED = [("aot_eager", r, d) for r in REDUCTIONS for d in (torch.float32, torch.float64)] \
    + [("inductor", "mean", torch.float32), ("inductor", "none", torch.float64)]


@pytest.mark.parametrize("backend, reduction, dtype", _COMPILED)
def test_compiled_model_has_no_graph_break_and_trains_as_eager(backend, reduction, dtype, rng,
                                                               fresh_dynamo):
    """A model body + LinearHead under torch.compile(fullgraph=True): dynamo's explain finds 0
    graph breaks, and three SGD steps give eager's losses and parameters."""
    X = torch.from_numpy(rng.standard_normal((12, 6))).to(dtype)
    y = torch.from_numpy(rng.integers(0, 5, 12))
    opts = {"label_smoothing": 0.1, "weight": torch.linspace(0.5, 1.5, 5, dtype=dtype)}
    def make(body, head):
        def f(X, y):
            return head(body(X), y)
        return f

    results = _eager_and_compiled(make, backend, dtype, reduction, opts, X, y)
    tol = _tol(np.float64 if dtype == torch.float64 else np.float32)
    for a, c in zip(*(r[0] + r[1] for r in results)):
        torch.testing.assert_close(a, c, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)


@pytest.mark.parametrize("head", ["softmax_nll", "sigmoid_bce", "huber", "multiclass_hinge"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_compiled_head_functions_equal_eager(head, reduction, rng, fresh_dynamo):
    S = torch.from_numpy(rng.standard_normal((7, 3)))
    if head in ("softmax_nll", "multiclass_hinge"):
        target = torch.from_numpy(rng.integers(0, 3, 7))
    else:
        target = torch.from_numpy(rng.random((7, 3)).round())
    fn = getattr(fbt, head)

    def f(S):
        loss = fn(S, target, reduction=reduction)
        return loss.sum() if loss.ndim else loss

    grads = []
    for g in (f, torch.compile(f, fullgraph=True, backend="aot_eager")):
        St = S.clone().requires_grad_()
        loss = g(St)
        loss.backward()
        grads.append((loss.detach(), St.grad))
    torch.testing.assert_close(grads[0], grads[1])


def test_torch_func_transforms_and_second_derivatives_are_clear_errors(rng):
    X, W, b, y, _ = _op_args(rng)
    with pytest.raises(NotImplementedError, match="torch.func transforms"):
        torch.func.grad(lambda W: fbt.linear_head(X, W, b, y))(W)
    with pytest.raises(NotImplementedError, match="torch.func transforms"):
        torch.vmap(lambda S: fbt.softmax_nll(S, y))(torch.ones(2, *y.shape, 3,
                                                              dtype=torch.float64))
    Wt = W.clone().requires_grad_()
    loss = fbt.linear_head(X, Wt, b, y)
    with pytest.raises(RuntimeError, match="first derivatives only"):
        torch.autograd.grad(loss, Wt, create_graph=True)


# ---------------------------------------------------------------------------- bfloat16
def _bf16_numpy(t):
    import ml_dtypes
    return t.detach().view(torch.int16).numpy().view(ml_dtypes.bfloat16)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_linear_head_under_autocast_is_autocast_linear_plus_cross_entropy(reduction, rng):
    """Inside torch.autocast("cpu", bfloat16): the products on bfloat16 values (X, W, b
    rounded, as nn.Linear there), the loss float32, each gradient in its tensor's dtype; equal
    to autocast's nn.Linear + F.cross_entropy within bfloat16 rounding, and to fastbp's NumPy
    call on the rounded values within float32's (dW is not rounded to bfloat16 on the way)."""
    torch.manual_seed(0)
    X = torch.from_numpy(rng.standard_normal((48, 40)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 7, 48))
    lin, head = torch.nn.Linear(40, 7), fbt.LinearHead(40, 7, reduction=reduction)
    head.load_state_dict(lin.state_dict())
    Xa, Xb = X.clone().requires_grad_(), X.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = F.cross_entropy(lin(Xa), y, reduction=reduction)
        got = head(Xb, y)
    assert got.dtype == want.dtype == torch.float32 and got.shape == want.shape
    g = torch.rand(got.shape) + 0.5 if reduction == "none" else torch.tensor(1.0)
    (want * g).sum().backward()
    (got * g).sum().backward()
    for a, b in ((lin.weight.grad, head.weight.grad), (lin.bias.grad, head.bias.grad),
                 (Xa.grad, Xb.grad)):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(b, a, rtol=0, atol=2e-2 * a.abs().max().item())
    torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-2)
    ref = fastbp.linear_head(*(_bf16_numpy(t.detach().bfloat16()) for t in
                               (X, lin.weight, lin.bias)), y.numpy(), backend="numpy",
                             reduction="sum" if reduction == "none" else reduction,
                             sample_weight=g.numpy() if reduction == "none" else None,
                             grad_dtype=np.float32)
    for got_grad, want_grad in ((head.weight.grad, ref.dW), (head.bias.grad, ref.db),
                                (Xb.grad, ref.dX)):
        _close(got_grad, want_grad, np.float32)


@pytest.mark.skipif("c" not in fastbp.available_backends(), reason="the C backend's kernels")
def test_many_classes_under_autocast_take_the_bfloat16_products(rng, monkeypatch):
    """300 classes under autocast on the C backend: its chunked path's bfloat16 products
    (their arithmetic emulated, so on any CPU; G rounded as autocast's backward does): equal to
    autocast's nn.Linear + F.cross_entropy within bfloat16 rounding, the parameters' gradients
    float32."""
    from fastbp.backends import tuning
    monkeypatch.setattr(tuning.C, "BF16_DOT", "emulate")
    sets, real = [], tuning.bf16_dot
    monkeypatch.setattr(tuning, "bf16_dot", lambda *a: sets.append(real(*a)) or sets[-1])
    X = torch.from_numpy(rng.standard_normal((70, 40)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 300, 70))
    lin, head = torch.nn.Linear(40, 300), fbt.LinearHead(40, 300, backend="c")
    head.load_state_dict(lin.state_dict())
    Xa, Xb = X.clone().requires_grad_(), X.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = F.cross_entropy(lin(Xa), y)
        got = head(Xb, y)
    want.backward()
    got.backward()
    assert sets and set(sets) == {2}                # (the products this test is about ran)
    torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-2)
    for a, b in ((lin.weight.grad, head.weight.grad), (lin.bias.grad, head.bias.grad),
                 (Xa.grad, Xb.grad)):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(b, a, rtol=0, atol=2e-2 * a.abs().max().item())


def test_bfloat16_tensors_give_bfloat16_gradients_and_a_float32_loss(rng):
    X = torch.from_numpy(rng.standard_normal((20, 9))).bfloat16().requires_grad_()
    W = torch.from_numpy(rng.standard_normal((4, 9))).bfloat16().requires_grad_()
    b = torch.zeros(4, dtype=torch.float32, requires_grad=True)     # a float32 bias mixes in
    y = torch.from_numpy(rng.integers(0, 4, 20))
    loss = fbt.linear_head(X, W, b, y)
    assert loss.dtype == torch.float32
    loss.backward()
    assert (X.grad.dtype, W.grad.dtype, b.grad.dtype) == (torch.bfloat16,) * 2 + (torch.float32,)
    want = fastbp.linear_head(_bf16_numpy(X), _bf16_numpy(W), b.detach().numpy(), y.numpy(),
                              backend="numpy")
    assert abs(loss.item() - want.loss) <= 1e-5 * abs(want.loss)
    np.testing.assert_array_equal(_bf16_numpy(W.grad).astype(np.float32),
                                  want.dW.astype(np.float32))
    S = torch.from_numpy(rng.standard_normal((6, 3))).bfloat16().requires_grad_()
    loss = fbt.softmax_nll(S, torch.tensor([0, 1, 2, 0, 1, 2]))
    loss.backward()
    assert loss.dtype == torch.float32 and S.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_autocast_model_has_no_graph_break_and_equals_eager(backend, rng,
                                                                     fresh_dynamo):
    X = torch.from_numpy(rng.standard_normal((12, 6)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 5, 12))
    def make(body, head):
        def f(X, y):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return head(body(X), y)
        return f

    results = _eager_and_compiled(make, backend, torch.float32, "mean", {}, X, y)
    assert all(a.dtype == torch.float32 for a in results[1][0] + results[1][1])
    for a, c in zip(*(r[0] + r[1] for r in results)):
        torch.testing.assert_close(a, c, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_operators_pass_opcheck_in_bfloat16_and_under_autocast(reduction, rng):
    X, W, b, y, w = _op_args(rng, torch.bfloat16)
    torch.library.opcheck(torch.ops.fastbp.linear_head.default,
                          (X, W.float(), b, y, [None] * 3, "softmax_nll", "[]", None,
                           reduction, [True, True, True]))
    torch.library.opcheck(torch.ops.fastbp.linear_head.default,
                          (X.float(), W.float(), b.float(), y, [None] * 3, "softmax_nll",
                           "[('__autocast__', 'bfloat16')]", None, reduction,
                           [True, True, False]))
    torch.library.opcheck(torch.ops.fastbp.head.default,
                          (X @ W.T, y, [None] * 3, "softmax_nll", "[]", None, reduction, True))


def test_a_bfloat16_gradient_is_rounded_once_after_the_upstream_scale(rng):
    """The operators return float32 gradients in a bfloat16 call; the backward scales them and
    autograd casts to bfloat16 once: X.grad is (g dX) rounded, bit for bit."""
    import ml_dtypes
    X = torch.from_numpy(rng.standard_normal((16, 7))).bfloat16().requires_grad_()
    W = torch.from_numpy(rng.standard_normal((3, 7)).astype(np.float32))
    y = rng.integers(0, 3, 16)
    (fbt.linear_head(X, W, None, torch.from_numpy(y), backend="numpy") * 3.7).backward()
    want = fastbp.linear_head(_bf16_numpy(X), W.numpy(), None, y, backend="numpy",
                              grad_dtype=np.float32).dX
    np.testing.assert_array_equal(_bf16_numpy(X.grad),
                                  (want * np.float32(3.7)).astype(ml_dtypes.bfloat16))
    S = torch.from_numpy(rng.standard_normal((5, 3))).bfloat16().requires_grad_()
    (fbt.softmax_nll(S, torch.tensor([0, 1, 2, 0, 1]), backend="numpy") * 3.7).backward()
    _, dS = fastbp.softmax_nll(_bf16_numpy(S), [0, 1, 2, 0, 1], backend="numpy",
                               grad_dtype=np.float32)
    np.testing.assert_array_equal(_bf16_numpy(S.grad),
                                  (dS * np.float32(3.7)).astype(ml_dtypes.bfloat16))
