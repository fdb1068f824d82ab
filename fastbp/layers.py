"""Public layer and network functions (docs/api.md sections 2-3). check -> dispatch."""
from typing import NamedTuple, Optional, Union

import numpy as np

from . import _bf16, _checks
from ._dispatch import backend_module


class Grads(NamedTuple):
    """``linear_head``'s result: the loss and the gradients of W, b and X (None when not asked)."""
    loss: Union[float, None]
    dW: np.ndarray
    db: Optional[np.ndarray]
    dX: Optional[np.ndarray]


_new_grads = tuple.__new__


def _buffer(given, like, wanted=True):
    if not wanted or like is None:
        return None
    return given if given is not None else np.empty_like(like)


def linear_head(X, W, b, target, head="softmax_nll", *, need_dX=True, chunk_rows=None, out=None,
                backend=None, grad_dtype=None, **head_options):
    """Fused ``S = X W^T + b`` -> ``head`` -> backward, one block of rows at a time.

    Returns ``Grads(loss, dW, db, dX)``. Never builds a Jacobian, and never holds more than
    ``chunk_rows x n`` scores (default: ``fastbp.config.score_block_bytes`` worth), so peak extra
    memory does not grow with the batch. ``head_options``: the head's keyword options, with
    ``reduction`` "mean" (default), "sum" or "none" (the (B,) row losses, and the gradients of
    their sum). bfloat16 arrays: products in float32 on their values, each gradient in its
    argument's dtype unless ``grad_dtype`` (docs/api.md, "bfloat16").
    """
    module = backend_module(backend)
    if (module.fast_linear_head is not None and not head_options and chunk_rows is None
            and grad_dtype is None):
        # the backend's whole tiny call in compiled code: (loss, dW, db, dX), or None (nothing
        # written; a bfloat16 call among them)
        got = module.fast_linear_head(X, W, b, target, head, need_dX, out)
        if got is not None:
            return _new_grads(Grads, got)
    if grad_dtype is not None or _bf16.involved(X, W, b, target, *head_options.values()):
        if module.linear_head_bf16 is not None and _bf16.involved(X):
            g = _in_kernel(module, X, W, b, target, head, need_dX, chunk_rows, out, grad_dtype,
                           head_options)
            if g is not None:
                return g
        X, W, b, target, head_options, dtypes = _bf16.linear_call(X, W, b, target, head_options)
        g = linear_head(X, W, b, target, head, need_dX=need_dX, chunk_rows=chunk_rows,
                        backend=backend, **head_options)
        return _in_dtypes(g, dtypes, grad_dtype, out)
    (X, W, b, target, head, opts, reduction, need_dX, chunk_rows, bufs,
     filter_eps) = _checks.check_linear_head(X, W, b, target, head, head_options, need_dX,
                                             chunk_rows, out)
    # _buffer inlined: this is the hot path of every tiny call
    dW = np.empty_like(W) if bufs["dW"] is None else bufs["dW"]
    db = None if b is None else (np.empty_like(b) if bufs["db"] is None else bufs["db"])
    dX = None if not need_dX else (np.empty_like(X) if bufs["dX"] is None else bufs["dX"])
    if reduction == "none":
        module.linear_head(X, W, b, target, head, opts, "sum", chunk_rows, dW, db, dX,
                           filter_eps=filter_eps)
        loss = module.linear_loss(X, W, b, target, head, opts, "none", chunk_rows)
    else:
        loss = module.linear_head(X, W, b, target, head, opts, reduction, chunk_rows, dW, db, dX,
                                  filter_eps=filter_eps)
    return _new_grads(Grads, (loss, dW, db, dX))      # Grads(...) without its Python __new__


def _in_kernel(module, X, W, b, target, head, need_dX, chunk_rows, out, grad_dtype, options):
    """A bfloat16 X read as bfloat16 by the backend's kernel (linear_head_bf16: the C fused
    rows widen it a block at a time), W and b converted (small); None where that kernel does
    not run the call (the caller converts X)."""
    if not (isinstance(X, np.ndarray) and X.ndim == 2 and X.flags.c_contiguous):
        return None
    W = _bf16.checked_operand("W", W, "X")       # (the kernel reads or rounds it)
    a, dtypes = _bf16.operands({"b": b}, "X")
    dtypes["W"] = W.dtype
    options = {k: _bf16.head_array(k, v, "X") for k, v in options.items()}
    # every check of the float32 call, on stand-ins of X's and W's shapes (never written or
    # read)
    (_, _, b, target, head, opts, reduction, need_dX, chunk_rows, _,
     filter_eps) = _checks.check_linear_head(np.empty(X.shape, np.float32),
                                             np.empty(W.shape, np.float32), a["b"],
                                             _bf16.head_array("target", target, "X"), head,
                                             options, need_dX, chunk_rows, None)
    want = _bf16.grad_dtype(grad_dtype)
    dX_dtype = want or X.dtype
    if reduction == "none" or (need_dX and dX_dtype not in (X.dtype, np.float32)):
        return None
    dW, db = np.empty(W.shape, np.float32), None if b is None else np.empty(b.shape, np.float32)
    dX = None
    if need_dX:
        given = getattr(out, "dX", None)      # (written by the kernel only if it fits exactly)
        fits = (isinstance(given, np.ndarray) and given.dtype == dX_dtype
                and given.shape == X.shape and given.flags.c_contiguous and given.flags.writeable)
        dX = given if fits else np.empty(X.shape, dX_dtype)
    loss = module.linear_head_bf16(X.view(np.uint16), W, b, target, head, opts, reduction,
                                   chunk_rows, dW, db,
                                   None if dX is None else dX.view(np.uint16)
                                   if dX.dtype == X.dtype else dX, filter_eps)
    if loss is None:
        return None
    got = Grads(loss, dW, db, dX)
    return _in_dtypes(got, {"W": dtypes["W"], "b": dtypes["b"], "X": dX_dtype}, grad_dtype,
                      out)


def _in_dtypes(g, dtypes, grad_dtype, out):
    """A linear_head result with each gradient in ``grad_dtype``, else its argument's dtype
    (``dtypes`` by name; the kernels' where absent), rounded once (into ``out``'s arrays)."""
    want = _bf16.grad_dtype(grad_dtype)
    return Grads(g.loss, *(_bf16.result(a, want or dtypes.get(k) or a.dtype,
                                        getattr(out, "d" + k, None), "out.d" + k)
                           if a is not None else None
                           for k, a in (("W", g.dW), ("b", g.db), ("X", g.dX))))


def linear_act_forward(X, W, b, activation, *, alpha=None, backend=None):
    """``A = f(X W^T + b)`` and the cache ``linear_act_backward`` needs (cs231n style).

    For maxout, ``W`` is ``(k*n, d)`` piece-major (rows ``p*n .. p*n+n-1`` are piece ``p``) and
    ``alpha`` is ``k`` (default 2).
    """
    if _bf16.involved(X, W, b):    # (A in X's dtype; the cache keeps A in float32)
        a, dtypes = _bf16.operands({"X": X, "W": W, "b": b})
        A, cache = linear_act_forward(a["X"], a["W"], a["b"], activation, alpha=alpha,
                                      backend=backend)
        return _bf16.result(A, dtypes["X"]), cache._replace(X=X, W=W, b=b)
    X, W, b, activation, alpha = _checks.check_linear_act_forward(X, W, b, activation, alpha)
    A, argmax = backend_module(backend).linear_act_forward(X, W, b, activation, alpha)
    return A, _checks.LayerCache(X, W, b, activation, alpha, A, argmax)


def linear_act_backward(dA, cache, *, need_dX=True, backend=None):
    """``(dX, dW, db)`` from the upstream gradient ``dA`` and ``linear_act_forward``'s cache."""
    if isinstance(cache, tuple) and _bf16.involved(dA, *cache[:3], getattr(cache, "A", None)):
        a, dtypes = _bf16.operands({"X": cache.X, "W": cache.W, "b": cache.b})
        dX, dW, db = linear_act_backward(
            _bf16.head_array("dA", dA, "cache.X"),
            cache._replace(X=a["X"], W=a["W"], b=a["b"],
                           A=_bf16.head_array("cache.A", cache.A, "cache.X")),
            need_dX=need_dX, backend=backend)
        return tuple(_bf16.result(g, dtypes[k]) for g, k in ((dX, "X"), (dW, "W"), (db, "b")))
    dA, cache, need_dX = _checks.check_linear_act_backward(dA, cache, need_dX)
    dW, db, dX = _buffer(None, cache.W), _buffer(None, cache.b), _buffer(None, cache.X, need_dX)
    backend_module(backend).linear_act_backward(dA, cache, dX, dW, db)
    return dX, dW, db


def mlp_forward(X, params, *, activation="relu", alpha=None, backend=None):
    """Scores of the network ``params`` = [(W1, b1), ..., (WL, bL)]; hidden layers use
    ``activation``, the last layer is linear."""
    if _bf16.involved(X, *_flat(params)):       # (the scores in X's dtype)
        a, dtypes = _bf16.operands({"X": X, **_named(params)})
        S = mlp_forward(a["X"], _pairs(a, len(params)), activation=activation, alpha=alpha,
                        backend=backend)
        return _bf16.result(S, dtypes["X"])
    X, params, activation, alpha = _checks.check_params(X, params, activation, alpha)
    return backend_module(backend).mlp_forward(X, params, activation, alpha)


def _flat(params):
    return [a for layer in params if isinstance(layer, (tuple, list)) for a in layer]


def _named(params):
    """{"W1": W1, "b1": b1, ...} of a network's params."""
    return {f"{k}{i}": a for i, layer in enumerate(params, start=1)
            for k, a in zip("Wb", layer)}


def _pairs(named, layers):
    return [(named[f"W{i}"], named[f"b{i}"]) for i in range(1, layers + 1)]


def mlp_loss_grad(X, params, target, *, activation="relu", alpha=None, head="softmax_nll",
                  out=None, backend=None, grad_dtype=None, **head_options):
    """Loss and ``[(dW1, db1), ...]`` of the network on ``(X, target)``: forward, the last layer
    fused with ``head``, backward. ``out``: a list of preallocated ``(dW, db)`` pairs.
    bfloat16 arrays: docs/api.md, "bfloat16" (the hidden activations stay float32)."""
    if grad_dtype is not None or _bf16.involved(X, *_flat(params), target,
                                                *head_options.values()):
        want = _bf16.grad_dtype(grad_dtype)
        dtypes = {}
        arrays = {"X": X, **_named(params), "target": target, **head_options}
        partner = next((k for k, a in arrays.items() if _bf16.involved(a)), None)
        if partner:
            a, dtypes = _bf16.operands({"X": X, **_named(params)}, partner)
            X, params = a["X"], _pairs(a, len(params))
            target = _bf16.head_array("target", target, partner)
            head_options = {k: _bf16.head_array(k, v, partner) for k, v in head_options.items()}
        loss, grads = _mlp_loss_grad(X, params, target, activation, alpha, head, head_options,
                                     None, backend)
        return loss, [tuple(_bf16.result(g, want or dtypes.get(f"{k}{i}") or g.dtype,
                                         out[i - 1][j] if out else None, f"out[{i - 1}][{j}]")
                            if g is not None else None
                            for j, (k, g) in enumerate(zip("Wb", pair)))
                      for i, pair in enumerate(grads, start=1)]
    return _mlp_loss_grad(X, params, target, activation, alpha, head, head_options, out, backend)


def _mlp_loss_grad(X, params, target, activation, alpha, head, head_options, out, backend):
    """mlp_loss_grad with the head's options as a dict (MLP.loss_grad: sigmoid_focal's alpha is
    not the activation's)."""
    (X, params, target, activation, alpha, head, opts, reduction,
     bufs) = _checks.check_mlp_loss_grad(X, params, target, activation, alpha, head,
                                         head_options, out)
    grads = [(_buffer(dW, W), _buffer(db, b)) for (W, b), (dW, db) in zip(params, bufs)]
    loss = backend_module(backend).mlp_loss_grad(X, params, target, activation, alpha, head,
                                                 opts, reduction, grads)
    return loss, grads
