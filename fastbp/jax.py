"""fastbp's fused kernels as differentiable JAX functions (docs/api.md section 8).

    import fastbp.jax as fbj
    loss, grads = jax.value_and_grad(fbj.linear_head, argnums=(0, 1, 2))(X, W, b, y)

Each function is a ``jax.custom_vjp`` whose forward calls the kernels through
``jax.pure_callback`` (so it runs under ``jax.jit`` and ``jax.grad``, on the CPU): the forward of
a "mean"/"sum" call runs the whole fused kernel and keeps the gradients, the backward scales
them by the upstream cotangent; a call that is not differentiated computes the loss alone.
``reduction="none"`` returns the row losses and computes the gradients in the backward
(fastbp/_frameworks.py). float32, and float64 with ``jax_enable_x64``. Needs the optional extra
``jax``; ``import fastbp`` does not import this module.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import _frameworks
from ._registry import SPECS

__all__ = ["linear_head", *SPECS]

_ARRAY_OPTIONS = ("weight", "sample_weight", "pos_weight")


def _callback(fn, shapes, *args):
    return jax.pure_callback(fn, shapes, *args, vmap_method="sequential")


def _np(args):
    return [None if a is None else np.asarray(a) for a in args]


def _labels(target, kind):
    t = np.asarray(target)
    return t.astype(np.intp) if t.dtype.kind in "iu" and kind != "float" else t


def _split(head_options):
    """(reduction, static scalar options (hashable), names of array options, their arrays)."""
    reduction, options = _frameworks.split_reduction(head_options)
    arrays = {k: v for k, v in options.items() if k in _ARRAY_OPTIONS and v is not None}
    static = tuple(sorted((k, v) for k, v in options.items() if k not in arrays))
    return reduction, static, tuple(arrays), tuple(arrays.values())


def _loss_shape(B, reduction, dtype):
    return jax.ShapeDtypeStruct((B,) if reduction == "none" else (), dtype)


def _zero_cotangent(a):
    """Targets and options are not differentiated: zeros (float0 for integer arrays)."""
    a = jnp.asarray(a)
    if jnp.issubdtype(a.dtype, jnp.inexact):
        return jnp.zeros_like(a)
    return np.zeros(a.shape, jax.dtypes.float0)


# ---------------------------------------------------------------------------- linear_head
@functools.lru_cache(maxsize=None)
def _linear_fn(head, reduction, static, names, has_b, backend):
    kind = SPECS[head].target

    def inputs(X, W, b, target, arrays):
        options = dict(static, **dict(zip(names, _np(arrays))))
        X, W = np.asarray(X), np.asarray(W)
        return X, W, np.asarray(b) if has_b else None, _labels(target, kind), options

    def host_loss(X, W, b, target, *arrays):
        X, W, b, target, options = inputs(X, W, b, target, arrays)
        loss = _frameworks.linear_loss(X, W, b, target, head, options, reduction, backend)
        return np.asarray(loss, X.dtype)

    def host_forward(X, W, b, target, *arrays):          # loss and every gradient, "mean"/"sum"
        X, W, b, target, options = inputs(X, W, b, target, arrays)
        loss, dX, dW, db = _frameworks.linear_forward(X, W, b, target, head, options,
                                                      reduction, (True, True, has_b), backend)
        return (np.asarray(loss, X.dtype), dX, dW) + ((db,) if has_b else ())

    def host_rows(X, W, b, target, *rest):               # "none": gradients of sum g_i L_i
        X, W, b, target, options = inputs(X, W, b, target, rest[:-1])
        dX, dW, db = _frameworks.linear_rows_backward(X, W, b, target, head, options,
                                                      np.asarray(rest[-1]),
                                                      (True, True, has_b), backend)
        return (dX, dW) + ((db,) if has_b else ())

    def shapes(X, W, b, with_loss):
        grads = [jax.ShapeDtypeStruct(X.shape, X.dtype), jax.ShapeDtypeStruct(W.shape, X.dtype)]
        if has_b:
            grads.append(jax.ShapeDtypeStruct(b.shape, X.dtype))
        loss = [_loss_shape(X.shape[0], reduction, X.dtype)] if with_loss else []
        return tuple(loss + grads)

    @jax.custom_vjp
    def f(X, W, b, target, arrays):
        return _callback(host_loss, _loss_shape(X.shape[0], reduction, X.dtype),
                         X, W, b, target, *arrays)

    def fwd(X, W, b, target, arrays):
        if reduction == "none":
            return f(X, W, b, target, arrays), (X, W, b, target, arrays)
        loss, dX, dW, *db = _callback(host_forward, shapes(X, W, b, True), X, W, b, target,
                                      *arrays)
        return loss, (dX, dW, db[0] if has_b else None, target, arrays)

    def bwd(res, g):
        if reduction == "none":
            X, W, b, target, arrays = res
            dX, dW, *db = _callback(host_rows, shapes(X, W, b, False), X, W, b, target,
                                    *arrays, g)
        else:
            dX, dW, db1, target, arrays = res
            dX, dW, db = g * dX, g * dW, [] if db1 is None else [g * db1]
        db = db[0] if has_b else jnp.zeros(0)
        return (dX, dW, db, _zero_cotangent(target),
                tuple(_zero_cotangent(a) for a in arrays))

    f.defvjp(fwd, bwd)
    return f


def linear_head(X, W, b, target, head="softmax_nll", *, backend=None, **head_options):
    """``head(X W^T + b, target)`` as one fused call, differentiable in X, W and b (``b`` may be
    None). ``head_options``: the head's options and ``reduction`` "mean" (default), "sum" or
    "none"."""
    if head not in SPECS:
        raise ValueError(f"head must be one of {tuple(SPECS)}, got {head!r}")
    reduction, static, names, arrays = _split(head_options)
    X, W, target = jnp.asarray(X), jnp.asarray(W), jnp.asarray(target)
    has_b = b is not None
    b = jnp.asarray(b) if has_b else jnp.zeros(0, X.dtype)
    f = _linear_fn(head, reduction, static, names, has_b, backend)
    return f(X, W, b, target, tuple(jnp.asarray(a) for a in arrays))


# ---------------------------------------------------------------------------- heads
@functools.lru_cache(maxsize=None)
def _head_fn(head, reduction, static, names, backend):
    kind = SPECS[head].target

    def inputs(S, target, arrays):
        options = dict(static, **dict(zip(names, _np(arrays))))
        return np.asarray(S), _labels(target, kind), options

    def host_loss(S, target, *arrays):
        S, target, options = inputs(S, target, arrays)
        loss, _ = _frameworks.head_forward(head, S, target, options, reduction, backend)
        return np.asarray(loss, S.dtype)

    def host_forward(S, target, *arrays):
        S, target, options = inputs(S, target, arrays)
        loss, dS = _frameworks.head_forward(head, S, target, options, reduction, backend)
        return np.asarray(loss, S.dtype), dS

    def loss_shape(S):
        return _loss_shape(S.shape[0], reduction, S.dtype)

    @jax.custom_vjp
    def f(S, target, arrays):
        return _callback(host_loss, loss_shape(S), S, target, *arrays)

    def fwd(S, target, arrays):
        loss, dS = _callback(host_forward, (loss_shape(S), jax.ShapeDtypeStruct(S.shape,
                                                                                S.dtype)),
                             S, target, *arrays)
        return loss, (dS, target, arrays)

    def bwd(res, g):
        dS, target, arrays = res
        dS = g.reshape(g.shape + (1,) * (dS.ndim - g.ndim)) * dS     # "none": row i times g_i
        return dS, _zero_cotangent(target), tuple(_zero_cotangent(a) for a in arrays)

    f.defvjp(fwd, bwd)
    return f


def _head_function(name, spec):
    def head(S, target, *, backend=None, **head_options):
        reduction, static, names, arrays = _split(head_options)
        f = _head_fn(name, reduction, static, names, backend)
        return f(jnp.asarray(S), jnp.asarray(target), tuple(jnp.asarray(a) for a in arrays))

    head.__name__ = head.__qualname__ = name
    head.__doc__ = (spec.doc + "\n\n    A differentiable JAX function: the loss (a scalar, or "
                    "(B,) for reduction=\"none\"); options as fastbp." + name + ".\n")
    return head


for _name, _spec in SPECS.items():
    globals()[_name] = _head_function(_name, _spec)
