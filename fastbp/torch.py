"""fastbp's fused kernels inside PyTorch's autograd (docs/api.md section 8).

    import fastbp.torch as fbt
    loss = fbt.linear_head(X, W, b, y)            # = F.cross_entropy(F.linear(X, W, b), y)
    loss.backward()
    head = fbt.LinearHead(512, 32000)             # an nn.Module, initialised as nn.Linear

CPU tensors of float32 or float64 cross to NumPy without copies (a non-contiguous one is
copied once, never modified). The forward of a "mean"/"sum" call runs the whole fused kernel --
loss and the gradients of the arguments that require grad -- and the backward scales them by
the upstream gradient; with nothing requiring grad (``torch.no_grad()``) only the loss is
computed. ``reduction="none"`` returns the row losses and computes the gradients in the
backward (fastbp/_frameworks.py). Needs the optional extra ``torch``; ``import fastbp`` does not
import this module.
"""
import numpy as np
import torch

from . import _frameworks
from ._registry import SPECS

__all__ = ["linear_head", "LinearHead", *SPECS]

_FLOATS = (torch.float32, torch.float64)


def _array(name, t, dtype=None):
    """A CPU float tensor's NumPy view (a contiguous copy where it is not contiguous)."""
    if not isinstance(t, torch.Tensor):
        return t                                  # NumPy arrays and scalars pass as they are
    if t.device.type != "cpu":
        raise TypeError(f"{name} must be a CPU tensor, got one on {t.device}; fastbp runs on "
                        f"the CPU: move it with {name}.cpu()")
    if t.is_complex() or (t.is_floating_point() and t.dtype not in _FLOATS):
        raise TypeError(f"{name} must be float32 or float64, got {t.dtype}; convert it with "
                        f"{name}.float() (or .double())")
    return t.detach().contiguous().numpy()


def _target(t, kind):
    """Labels as intp (torch's int64 is intp on 64-bit platforms), float targets as they are."""
    a = _array("target", t)
    if isinstance(a, np.ndarray) and a.dtype.kind in "iu" and kind != "float":
        return a.astype(np.intp, copy=False)
    return a


def _options(options):
    return {k: _array(k, v) for k, v in options.items()}


def _scaled(a, grad):
    """The gradient ``a`` (NumPy, or None) times the upstream gradient (a 0-d tensor), in place:
    each array is handed to autograd once (``_take``)."""
    if a is None:
        return None
    t = torch.from_numpy(a)
    return t if bool(grad == 1) else t.mul_(grad)


def _take(ctx, recompute):
    """The gradients the forward computed, once; a second backward through the same graph
    (``retain_graph=True``) computes them again instead of reusing arrays autograd now owns."""
    grads, ctx.grads = ctx.grads, None
    return recompute() if grads is None else grads


class _LinearHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, X, W, b, target, head, reduction, backend, options, grad_enabled):
        # the forward runs with grad mode off; whether the caller's was on comes as an argument
        need = ctx.needs_input_grad[:3] if grad_enabled else (False,) * 3
        Xn, Wn = _array("X", X), _array("W", W)
        bn = None if b is None else _array("b", b)
        tn, opts = _target(target, SPECS[head].target), _options(options)
        loss, *grads = _frameworks.linear_forward(Xn, Wn, bn, tn, head, opts, reduction, need,
                                                  backend)
        ctx.grads, ctx.reduction = grads, reduction
        ctx.inputs = (Xn, Wn, bn, tn, head, opts, backend)
        if reduction == "none":
            return torch.from_numpy(loss)
        return torch.tensor(loss, dtype=X.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        need = ctx.needs_input_grad[:3]
        Xn, Wn, bn, tn, head, opts, backend = ctx.inputs
        if grad.ndim:                                  # "none": the gradient of sum g_i L_i
            grads = _frameworks.linear_rows_backward(
                Xn, Wn, bn, tn, head, opts, _array("grad", grad), need, backend)
            dX, dW, db = (torch.from_numpy(a) if n and a is not None else None
                          for a, n in zip(grads, need))
        else:
            grads = _take(ctx, lambda: _frameworks.linear_forward(
                Xn, Wn, bn, tn, head, opts, ctx.reduction, need, backend)[1:])
            dX, dW, db = (_scaled(a, grad) for a in grads)
        return dX, dW, db, None, None, None, None, None, None


def linear_head(X, W, b, target, head="softmax_nll", *, backend=None, **head_options):
    """``head(X W^T + b, target)`` as one fused call, differentiable in X, W and b.

    ``head_options``: the head's options (tensors or arrays for ``weight``, ``sample_weight``,
    ``pos_weight``; not differentiated) and ``reduction`` "mean" (default), "sum" or "none".
    """
    reduction, options = _frameworks.split_reduction(head_options)
    if head not in SPECS:
        raise ValueError(f"head must be one of {tuple(SPECS)}, got {head!r}")
    return _LinearHead.apply(X, W, b, target, head, reduction, backend, options,
                             torch.is_grad_enabled())


class _Head(torch.autograd.Function):
    @staticmethod
    def forward(ctx, S, target, head, reduction, backend, options):
        Sn, tn, opts = _array(SPECS[head].scores_name, S), _target(target, SPECS[head].target), \
            _options(options)
        loss, dS = _frameworks.head_forward(head, Sn, tn, opts, reduction, backend)
        ctx.grads, ctx.reduction = dS, reduction
        ctx.inputs = (head, Sn, tn, opts, backend)
        if reduction == "none":
            return torch.from_numpy(loss)
        return torch.tensor(loss, dtype=S.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        head, Sn, tn, opts, backend = ctx.inputs
        dS = _take(ctx, lambda: _frameworks.head_forward(head, Sn, tn, opts, ctx.reduction,
                                                         backend)[1])
        if grad.ndim:                 # "none": row i of the sum's gradient times grad_i
            return torch.from_numpy(_frameworks.rows_times(dS, _array("grad", grad))), \
                None, None, None, None, None
        return _scaled(dS, grad), None, None, None, None, None


def _head_function(name, spec):
    def head(S, target, *, backend=None, **head_options):
        reduction, options = _frameworks.split_reduction(head_options)
        return _Head.apply(S, target, name, reduction, backend, options)

    head.__name__ = head.__qualname__ = name
    head.__doc__ = (spec.doc + "\n\n    A differentiable tensor function: the loss (a 0-d "
                    "tensor, or (B,) for reduction=\"none\"); options as fastbp." + name + ".\n")
    return head


for _name, _spec in SPECS.items():
    globals()[_name] = _head_function(_name, _spec)


class LinearHead(torch.nn.Module):
    """A linear output layer and its loss in one fused call: ``forward(X, target)`` returns the
    loss of ``head(X W^T + b, target)``; ``logits(X)`` returns ``X W^T + b``. Parameters and
    their initialisation are ``torch.nn.Linear``'s."""

    def __init__(self, in_features, out_features, *, head="softmax_nll", bias=True, dtype=None,
                 backend=None, **head_options):
        super().__init__()
        if head not in SPECS:
            raise ValueError(f"head must be one of {tuple(SPECS)}, got {head!r}")
        linear = torch.nn.Linear(in_features, out_features, bias=bias, dtype=dtype)
        self.weight, self.bias = linear.weight, linear.bias
        self.in_features, self.out_features = in_features, out_features
        self.head, self.backend, self.head_options = head, backend, head_options

    def forward(self, X, target):
        return linear_head(X, self.weight, self.bias, target, self.head, backend=self.backend,
                           **self.head_options)

    def logits(self, X):
        return torch.nn.functional.linear(X, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, head={self.head!r}")
