"""fastbp.jax: the fused kernels as custom_vjp functions under jax.jit and jax.grad (docs/api.md
section 8). Skipped where JAX is not installed (`make test` installs it)."""
import numpy as np
import pytest

import fastbp
from cases import head_cases, make_head_inputs, rotated, rotated_ids

# the C backend's tests, which `make test-asan` runs under the sanitizers
pytestmark = pytest.mark.asan

jax = pytest.importorskip("jax")
jax_core = pytest.importorskip("jax.extend.core")
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


@pytest.fixture(params=["xla_ffi", "callback"])
def path(request, monkeypatch):
    """Both ways into the kernels: the C targets inside XLA, and the host callback (which
    every backend but "c", and a jaxlib of another FFI version, take)."""
    if request.param == "xla_ffi" and fbj.PATH != "xla_ffi":
        pytest.skip(f"the XLA targets are not registered here: {fbj.PATH_REASON}")
    monkeypatch.setattr(fbj, "PATH", request.param)
    return request.param


_HEAD_ROWS = rotated(head_cases(), list(REDUCTIONS), ["float64", "float32"])


@pytest.mark.parametrize("case, reduction, dtype", _HEAD_ROWS, ids=rotated_ids(_HEAD_ROWS))
def test_every_head_and_option_under_jit_and_grad(case, reduction, dtype, rng, path):
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


LINEAR = [c for c in head_cases() if c[0] != "nll" and c[1]["target"] != "pm1_col"]


_LINEAR_ROWS = rotated(LINEAR, list(REDUCTIONS), ["float64", "float32"])


@pytest.mark.parametrize("case, reduction, dtype", _LINEAR_ROWS, ids=rotated_ids(_LINEAR_ROWS))
def test_linear_head_every_head(case, reduction, dtype, rng, path):
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


def test_linear_head_without_bias_and_without_grad(rng, path):
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


# ---------------------------------------------------------------------------- the XLA targets
def _inputs(rng, B=7, d=3, n=4, dtype=np.float64):
    X, W = rng.standard_normal((B, d)).astype(dtype), rng.standard_normal((n, d)).astype(dtype)
    return X, W, rng.standard_normal(n).astype(dtype), rng.integers(0, n, B)


def _ffi_calls(fn, *args):
    """The ffi_call equations of fn's jaxpr, nested ones included: (target, operand avals,
    result avals)."""
    calls = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "ffi_call":
                calls.append((eqn.params["target_name"], [v.aval for v in eqn.invars],
                              list(eqn.params["result_avals"])))
            for sub in jax_core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return calls


needs_ffi = pytest.mark.skipif(fbj.PATH != "xla_ffi", reason=f"no XLA targets: {fbj.PATH_REASON}")


@needs_ffi
def test_jitted_programs_call_the_targets_and_no_host_callback(rng):
    X, W, b, y = _inputs(rng)
    programs = {
        "fastbp_linear_forward": jax.value_and_grad(lambda W: fbj.linear_head(X, W, b, y)),
        "fastbp_linear_loss": lambda W: fbj.linear_head(X, W, b, y),
        "fastbp_linear_rows": jax.grad(lambda W: fbj.linear_head(X, W, b, y,
                                                                  reduction="none").sum()),
        "fastbp_head": jax.grad(lambda W: fbj.softmax_nll(X @ W.T, y)),
    }
    for target, fn in programs.items():
        text = jax.jit(fn).lower(W).as_text()
        assert f"custom_call @{target}(" in text
        assert "callback" not in text
    text = jax.jit(lambda W: fbj.linear_head(X, W, b, y, backend="numba")).lower(W).as_text()
    assert "callback" in text and "fastbp_linear" not in text     # other backends: the callback


@needs_ffi
@pytest.mark.parametrize("argnums, results", [((1,), ["loss", "dW"]), ((0,), ["loss", "dX"]),
                                              ((0, 1, 2), ["loss", "dX", "dW", "db"])])
def test_only_the_differentiated_arguments_get_gradients(argnums, results, rng):
    X, W, b, y = _inputs(rng)
    fn = jax.grad(lambda *a: fbj.linear_head(*a, y), argnums=argnums)
    (target, _, avals), = _ffi_calls(fn, X, W, b)
    shapes = {"loss": (), "dX": X.shape, "dW": W.shape, "db": b.shape}
    assert target == "fastbp_linear_forward"
    assert [a.shape for a in avals] == [shapes[r] for r in results]
    want = fastbp.linear_head(X, W, b, y, backend="numpy")
    for got, i in zip(fn(X, W, b), argnums):
        _close(got, (want.dX, want.dW, want.db)[i], np.float64)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_vmap_merges_rows_where_it_can_and_equals_a_loop(reduction, rng, path):
    """vmap over X (W shared): "none" and "sum" are one call on every row (a batching rule);
    "mean" and the gradients run the calls in sequence inside XLA. Both equal a loop."""
    X, W, b, y = _inputs(rng)
    Xs = np.stack([X, 2 * X, -X])
    loss = jax.jit(jax.vmap(lambda X: fbj.linear_head(X, W, b, y, reduction=reduction)))(Xs)
    grads = jax.jit(jax.vmap(jax.grad(lambda X: fbj.linear_head(X, W, b, y).sum())))(Xs)
    for k, Xk in enumerate(Xs):
        want = fastbp.linear_head(Xk, W, b, y, reduction=reduction, backend="numpy")
        _close(loss[k], want.loss, np.float64)
        _close(grads[k], fastbp.linear_head(Xk, W, b, y, backend="numpy").dX, np.float64)
    if path == "xla_ffi":
        calls = _ffi_calls(jax.vmap(lambda X: fbj.linear_head(X, W, b, y, reduction=reduction)),
                           Xs)
        merged = [c for c in calls if c[1][0].shape == (3 * len(X), X.shape[1])]
        assert bool(merged) == (reduction != "mean")


def test_labels_out_of_range_are_errors_when_the_program_runs(rng, path):
    X, W, b, y = _inputs(rng)
    f = jax.jit(lambda X, y: fbj.linear_head(X, W, b, y))
    with pytest.raises(Exception, match=r"label 4.*outside \[0, 4\)"):
        jax.block_until_ready(f(X, np.where(np.arange(len(y)) == 2, 4, y)))
    _close(f(X, y.astype(np.int32)), fastbp.linear_head(X, W, b, y).loss, np.float64)


def test_half_precision_is_a_type_error_naming_the_fix(rng):
    X, W, b, y = _inputs(rng)
    with pytest.raises(TypeError, match=r"X must be float32, float64 or bfloat16, got "
                                        r"float16; .*astype\(jnp.float32\)"):
        fbj.linear_head(jnp.asarray(X, jnp.float16), W, b, y)
    with pytest.raises(TypeError, match="got float16"):
        fbj.softmax_nll(jnp.asarray(X, jnp.float16), y % 3)


def test_forward_mode_and_second_derivatives_are_clear_errors(rng, path):
    X, W, b, y = _inputs(rng)
    f = lambda W: fbj.linear_head(X, W, b, y)      # noqa: E731
    with pytest.raises(TypeError, match="forward-mode autodiff"):
        jax.jvp(f, (W,), (W,))
    with pytest.raises(TypeError, match="first derivatives only"):
        jax.hessian(f)(W)


def test_a_jaxlib_of_another_ffi_version_falls_back_with_a_warning(monkeypatch):
    monkeypatch.setattr(fbj, "_jaxlib_ffi_version", lambda: (0, 1))
    with pytest.warns(UserWarning, match=r"XLA FFI API 0\.1; fastbp's targets were written "
                                         r"for 0\.3.*pure_callback"):
        path, why = fbj._choose_path()
    assert path == "callback" and "0.1" in why


def test_without_the_c_backend_the_callback_path_is_taken(monkeypatch):
    def unavailable(name=None):
        raise fastbp.BackendUnavailable("backend 'c' is unavailable on this machine: test")

    monkeypatch.setattr(fbj._dispatch, "backend_module", unavailable)
    path, why = fbj._choose_path()
    assert path == "callback" and "not available" in why


def test_info_says_which_path_is_in_use():
    assert fastbp.info()["jax_path"] == {"path": fbj.PATH, "why": fbj.PATH_REASON}


@needs_ffi
def test_a_target_called_with_operands_its_attributes_do_not_name_is_an_error(rng):
    """The handlers check counts and ranks before reading a buffer (a call made by hand)."""
    X, W, b, y = _inputs(rng)
    loss = jax.ffi.ffi_call("fastbp_linear_loss", jax.ShapeDtypeStruct((), X.dtype))
    with pytest.raises(Exception, match="operands or results its attributes do not name"):
        jax.block_until_ready(loss(X, W, y, has_b=np.int64(1)))      # b named, not given
    with pytest.raises(Exception, match="labels must be a vector of int32 or int64"):
        jax.block_until_ready(loss(X, W, y.astype(np.float64), labels=np.int64(1)))
    with pytest.raises(Exception, match="attribute it does not know"):
        jax.block_until_ready(loss(X, W, y, labels=np.int64(1), colour=np.int64(3)))


# ---------------------------------------------------------------------------- bfloat16
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bfloat16_arrays_are_a_bfloat16_call_on_both_paths(path, reduction, rng):
    """X bfloat16 with W, b float32 (master weights): the products on bfloat16 values, the loss
    float32, dX bfloat16 and dW, db float32 (not rounded); equal to fastbp's NumPy call on the
    same arrays."""
    import ml_dtypes
    X = rng.standard_normal((30, 12)).astype(ml_dtypes.bfloat16)
    W, b = rng.standard_normal((4, 12)).astype(np.float32), rng.standard_normal(4).astype(
        np.float32)
    y = rng.integers(0, 4, 30)
    w = _weights((30,) if reduction == "none" else (), rng).astype(np.float32)

    def loss(X, W, b):
        return (fbj.linear_head(X, W, b, y, reduction=reduction) * w).sum()

    value, (dX, dW, db) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(
        jnp.asarray(X), jnp.asarray(W), jnp.asarray(b))
    assert (dX.dtype, dW.dtype, db.dtype) == (jnp.bfloat16, jnp.float32, jnp.float32)
    want = fastbp.linear_head(X, W, b, y, backend="numpy", grad_dtype=np.float32,
                              reduction="sum" if reduction == "none" else reduction,
                              sample_weight=w if reduction == "none" else None)
    scale = 1.0 if reduction == "none" else float(w)
    _close(value, want.loss * scale, np.float32)
    _close(dW, want.dW * scale, np.float32)
    _close(db, want.db * scale, np.float32)
    np.testing.assert_allclose(np.asarray(dX).astype(np.float32), want.dX * scale,
                               rtol=2 ** -8, atol=1e-6)


def test_a_jitted_bfloat16_call_goes_through_the_targets_without_a_callback(rng):
    if fbj.PATH != "xla_ffi":
        pytest.skip(f"the XLA targets are not registered here: {fbj.PATH_REASON}")
    X = jnp.asarray(rng.standard_normal((8, 5)), jnp.bfloat16)
    W = jnp.asarray(rng.standard_normal((3, 5)), jnp.bfloat16)
    S = jnp.asarray(rng.standard_normal((8, 3)), jnp.bfloat16)
    y = jnp.asarray(rng.integers(0, 3, 8))
    text = jax.jit(jax.grad(lambda X, W: fbj.linear_head(X, W, None, y), argnums=(0, 1))).lower(
        X, W).as_text()
    assert "custom_call @fastbp_linear_forward(" in text and "callback" not in text
    assert "bf16" in text                      # (the arguments, converted inside the program)
    dS = jax.grad(lambda S: fbj.softmax_nll(S, y))(S)
    assert dS.dtype == jnp.bfloat16
    with pytest.raises(TypeError, match="W has dtype float64 but X is bfloat16"):
        fbj.linear_head(X, jnp.asarray(np.ones((3, 5))), None, y)
