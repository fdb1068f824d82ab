"""What the framework adapters (``fastbp.torch``, ``fastbp.jax``) share, on NumPy arrays, so
each adapter only converts its arrays and wires its autograd.

- ``reduction="mean"`` / ``"sum"``: one fused call computes the loss and every wanted gradient
  in the forward; the backward scales them by the upstream scalar.
- ``reduction="none"`` (row losses): for linear_head the forward computes the losses alone and
  the backward the gradient of ``sum_i g_i L_i`` for the upstream vector ``g``, which is the
  fused ``"sum"`` call with the sample weights multiplied by ``g``; a head returns its rows'
  gradients in the forward, and the backward scales row i by ``g_i``.
- No gradient wanted: the loss alone, on the backend asked for (its ``linear_loss``: one
  product of linear_head's three per row block, then the head's losses; compiled in C and
  Numba).
"""
import numpy as np

from . import _bf16, _checks, heads, layers
from ._dispatch import backend_module
from ._registry import REDUCTIONS


def split_reduction(options):
    """``reduction`` out of the head options: ("mean" | "sum" | "none", the other options)."""
    options = dict(options)
    return _checks.choice("reduction", options.pop("reduction", "mean"), REDUCTIONS), options


# ---------------------------------------------------------------------------- linear_head
def linear_loss(X, W, b, target, head, options, reduction, backend=None):
    """The loss alone: a float, or the row losses (B,) for "none"."""
    module = backend_module(backend)
    if _bf16.involved(X, W, b, target, *options.values()):
        X, W, b, target, options, _ = _bf16.linear_call(X, W, b, target, options)
    if module.fast_linear_head is not None and not options and reduction == "mean":
        # a tiny call's compiled entry (loss and dW in ~1 µs) costs less than the checks of
        # the loss path; None where the call is not tiny
        got = module.fast_linear_head(X, W, b, target, head, False, None)
        if got is not None:
            return got[0]
    X, W, b, target, head, opts = _checks.check_linear_head(
        X, W, b, target, head, dict(options, reduction="sum"), False, None, None)[:6]
    return module.linear_loss(X, W, b, target, head, opts, reduction, None)


def linear_forward(X, W, b, target, head, options, reduction, need, backend, grad_dtype=None):
    """(loss, dX, dW, db) with ``need`` = (dX, dW, db) flags: gradients only where needed (None
    elsewhere), none at all for "none" (they come in ``linear_rows_backward``); in
    ``grad_dtype`` if given (linear_head's)."""
    if reduction == "none" or not any(need):
        return linear_loss(X, W, b, target, head, options, reduction, backend), None, None, None
    if reduction != "mean":             # (no options at all: the tiny call's compiled entry)
        options = dict(options, reduction=reduction)
    g = layers.linear_head(X, W, b, target, head, need_dX=bool(need[0]), backend=backend,
                           grad_dtype=grad_dtype, **options)
    return g.loss, g.dX, g.dW if need[1] else None, g.db if need[2] else None


def linear_rows_backward(X, W, b, target, head, options, g, need, backend, grad_dtype=None):
    """(dX, dW, db) of sum_i g_i L_i: the fused "sum" call with sample weights times g (in
    float32 for a bfloat16 call: the weights are the head's)."""
    low = _bf16.involved(X, W, b, g)
    options = _times_sample_weight(options, g, np.float32 if low else X.dtype)
    grads = layers.linear_head(X, W, b, target, head, need_dX=bool(need[0]), backend=backend,
                               reduction="sum", grad_dtype=grad_dtype, **options)
    return grads.dX, grads.dW, grads.db


# ---------------------------------------------------------------------------- heads
def head_forward(head, S, target, options, reduction, backend, grad_dtype=None):
    """(loss, dS); for "none" the row losses and the rows of the sum's gradient, which the
    backward scales by the upstream vector (``rows_times``); dS in ``grad_dtype`` if given."""
    return getattr(heads, head)(S, target, reduction=reduction, backend=backend,
                                grad_dtype=grad_dtype, **options)


def rows_times(dS, g):
    """dS of sum_i g_i L_i from the rows of the sum's gradient: row i times g_i."""
    return dS * g.reshape((-1,) + (1,) * (dS.ndim - 1))


def _times_sample_weight(options, g, dtype):
    g = np.asarray(g, dtype).reshape(-1)
    sw = options.get("sample_weight")
    return dict(options, sample_weight=g if sw is None else np.asarray(sw, dtype) * g)
