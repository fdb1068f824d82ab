"""fastbp's fused kernels inside PyTorch: custom operators (``torch.library``) under autograd,
so eager code and ``torch.compile(fullgraph=True)`` both run them (docs/api.md section 8).

    import fastbp.torch as fbt
    loss = fbt.linear_head(X, W, b, y)            # = F.cross_entropy(F.linear(X, W, b), y)
    loss.backward()
    head = fbt.LinearHead(512, 32000)             # an nn.Module, initialised as nn.Linear

The operators (``torch.ops.fastbp.*``) take CPU tensors of float32 or float64 and cross to NumPy
without copies (a non-contiguous one is copied once, never modified); each has a fake
implementation (shapes only), which is what ``torch.compile`` traces. The forward of a
"mean"/"sum" call runs the whole fused kernel -- loss and the gradients of the arguments that
require grad -- and the backward scales them by the upstream gradient; with nothing requiring
grad (``torch.no_grad()``) only the loss is computed. ``reduction="none"`` returns the row
losses and computes the gradients in the backward (fastbp/_frameworks.py). Needs the optional
extra ``torch``; ``import fastbp`` does not import this module.
"""
import ast
import functools

import numpy as np

try:
    import torch
except ImportError as exc:
    from .errors import missing_extra
    raise ImportError(missing_extra("fastbp.torch", "torch", "torch")) from exc

from . import _bf16, _frameworks
from ._registry import SPECS

__all__ = ["linear_head", "LinearHead", *SPECS]

_FLOATS = (torch.float32, torch.float64, torch.bfloat16)
_PLAIN = frozenset({*_FLOATS, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8})
# the options that are arrays (tensor arguments of the operators); every other option is a
# scalar and travels in the operators' ``options`` string
_ARRAY_OPTIONS = ("weight", "sample_weight", "pos_weight")

_LIB = torch.library.Library("fastbp", "DEF")
_ARGS = "Tensor?[] arrays, str head, str options, str? backend"
_LIB.define(f"linear_head(Tensor X, Tensor W, Tensor? b, Tensor target, {_ARGS}, str reduction, "
            "bool[] need) -> (Tensor, Tensor, Tensor, Tensor)")
_LIB.define(f"linear_rows_backward(Tensor X, Tensor W, Tensor? b, Tensor target, {_ARGS}, "
            "Tensor g, bool[] need) -> (Tensor, Tensor, Tensor)")
_LIB.define(f"head(Tensor S, Tensor target, {_ARGS}, str reduction, bool need) "
            "-> (Tensor, Tensor)")


# ---------------------------------------------------------------------------- arguments
def _check(name, t):
    """A tensor argument's device and dtype (in the caller's frame, so that the error comes
    before any operator, eager or compiled)."""
    if not isinstance(t, torch.Tensor) or (t.is_cpu and t.dtype in _PLAIN):
        return
    if t.device.type != "cpu":
        raise TypeError(f"{name} must be a CPU tensor, got one on {t.device}; fastbp runs on "
                        f"the CPU: move it with {name}.cpu()")
    if t.is_complex() or (t.is_floating_point() and t.dtype not in _FLOATS):
        raise TypeError(f"{name} must be float32, float64 or bfloat16, got {t.dtype}; convert "
                        f"it with {name}.float() (or .double(), .bfloat16())")


def _plain(*tensors):
    """torch.func's transforms wrap tensors; the kernels take plain ones (docs/api.md 8)."""
    if torch.compiler.is_compiling():
        return
    for t in tensors:
        if isinstance(t, torch.Tensor) and torch._C._functorch.is_functorch_wrapped_tensor(t):
            raise NotImplementedError(
                "fastbp.torch does not run under torch.func transforms (grad, vmap, jvp, "
                "jacrev, ...): its kernels are not batched and give first derivatives only; "
                "differentiate with loss.backward() or torch.autograd.grad, eager or under "
                "torch.compile")


def _split(head, head_options, autocast=False):
    """(reduction, the array options as a list of tensors or None, the scalar options as the
    operators' string, with ``autocast`` when the products run in bfloat16). Runs in the
    caller's frame: plain Python on constants, which dynamo folds."""
    if head not in SPECS:
        raise ValueError(f"head must be one of {tuple(SPECS)}, got {head!r}")
    reduction, options = _frameworks.split_reduction(head_options)
    arrays = []
    for name in _ARRAY_OPTIONS:
        a = options.pop(name, None)
        if a is not None and not isinstance(a, torch.Tensor):
            a = torch.as_tensor(a)
        _check(name, a)
        arrays.append(a)
    for k, v in options.items():
        if isinstance(v, np.generic):
            options[k] = v.item()
        elif not isinstance(v, (bool, int, float, str, type(None))):
            raise TypeError(f"{k} must be a number or a string, got {type(v).__name__}")
    if autocast:
        options[_AUTOCAST] = "bfloat16"
    return reduction, arrays, repr(sorted(options.items()))


_AUTOCAST = "__autocast__"      # (an options entry no head has: the operators pop it)


def _autocast(*tensors):
    """Whether a linear layer on ``tensors`` runs its products in bfloat16 here, as
    ``torch.autocast("cpu", torch.bfloat16)`` runs nn.Linear: autocast is on for the CPU with
    bfloat16, and the floating tensors are float32 or bfloat16 (autocast leaves float64)."""
    return (torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16
            and all(t.dtype in (torch.float32, torch.bfloat16) for t in tensors
                    if t is not None))


@functools.lru_cache(maxsize=256)
def _scalars(options):
    return dict(ast.literal_eval(options))


def _array(t, bf16=False):
    """A tensor's NumPy view (detached; fastbp's checks copy a non-contiguous one); bfloat16
    as ml_dtypes.bfloat16 (the same bits). ``bf16``: a float32 tensor rounded to bfloat16
    (autocast's products)."""
    if t is None:
        return None
    if bf16 and t.dtype == torch.float32:
        t = t.detach().to(torch.bfloat16)
    if t.dtype == torch.bfloat16:
        return t.detach().view(torch.int16).numpy(force=True).view(_bf16.bf16())
    return t.numpy(force=True)


def _inputs(target, arrays, head, options):
    """The kernels' target (labels as intp), options dict and autocast flag from an
    operator's arguments."""
    t = _array(target)
    if t.dtype.kind in "iu" and SPECS[head].target != "float":
        t = t.astype(np.intp, copy=False)
    if options == "[]" and not any(a is not None for a in arrays):
        return t, {}, False                   # (every call without options: the common one)
    opts = dict(_scalars(options))
    autocast = opts.pop(_AUTOCAST, None) is not None
    opts.update((k, _array(a)) for k, a in zip(_ARRAY_OPTIONS, arrays) if a is not None)
    return t, opts, autocast


def _low(*tensors):
    """Whether a call runs as a bfloat16 call: its operators return float32 gradients, which
    the backward scales by the upstream gradient and autograd then casts to each input's
    dtype, rounding them once (docs/api.md, "bfloat16")."""
    return any(t is not None and t.dtype == torch.bfloat16 for t in tensors)


def _grad_dtype(a, low):
    """An operator's gradient dtype for input ``a``: float32 in a bfloat16 call (_low)."""
    return torch.float32 if low else a.dtype


def _loss_dtype(X, low):
    """The loss's dtype: float32 for a bfloat16 call (as autocast's cross_entropy), else X's."""
    return torch.float32 if low else X.dtype


def _tensor(a, like, dtype=None):
    """A kernel's result as a tensor in ``dtype`` (default: ``like``'s); an absent gradient
    as an empty one (operators return tensors only)."""
    dtype = dtype or like.dtype
    if a is None:
        return like.new_empty(0, dtype=dtype)
    if dtype == torch.bfloat16:
        a = np.asarray(a)
        if a.dtype == _bf16.bf16():
            return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(np.asarray(a, np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.asarray(a, _NUMPY[dtype]))


_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


# ---------------------------------------------------------------------------- operators
@torch.library.impl(_LIB, "linear_head", "CPU")
def _linear_head_op(X, W, b, target, arrays, head, options, backend, reduction, need):
    t, opts, autocast = _inputs(target, arrays, head, options)
    low = autocast or _low(X, W, b)
    loss, *grads = _frameworks.linear_forward(
        _array(X, autocast), _array(W, autocast), _array(b, autocast), t, head, opts,
        reduction, need, backend, np.float32 if low else None)
    return (_tensor(loss, X, _loss_dtype(X, low)),
            *(_tensor(a, X if like is None else like, _grad_dtype(X if like is None else like,
                                                                   low))
              for a, like in zip(grads, (X, W, b))))


@torch.library.register_fake("fastbp::linear_head", lib=_LIB)
def _(X, W, b, target, arrays, head, options, backend, reduction, need):
    low = _AUTOCAST in options or _low(X, W, b)
    loss = X.new_empty((X.shape[0],) if reduction == "none" else (), dtype=_loss_dtype(X, low))
    grads = reduction != "none" and any(need)
    return (loss, *(a.new_empty(a.shape if grads and n else (0,), dtype=_grad_dtype(a, low))
                    if a is not None else X.new_empty(0, dtype=_grad_dtype(X, low))
                    for a, n in zip((X, W, b), need)))


@torch.library.impl(_LIB, "linear_rows_backward", "CPU")
def _linear_rows_backward_op(X, W, b, target, arrays, head, options, backend, g, need):
    t, opts, autocast = _inputs(target, arrays, head, options)
    low = autocast or _low(X, W, b)
    grads = _frameworks.linear_rows_backward(
        _array(X, autocast), _array(W, autocast), _array(b, autocast), t, head, opts,
        _array(g), need, backend, np.float32 if low else None)
    return tuple(_tensor(a if n else None, X if like is None else like,
                         _grad_dtype(X if like is None else like, low))
                 for a, n, like in zip(grads, need, (X, W, b)))


@torch.library.register_fake("fastbp::linear_rows_backward", lib=_LIB)
def _(X, W, b, target, arrays, head, options, backend, g, need):
    low = _AUTOCAST in options or _low(X, W, b)
    return tuple(a.new_empty(a.shape, dtype=_grad_dtype(a, low)) if n and a is not None
                 else X.new_empty(0, dtype=_grad_dtype(X, low)) for a, n in zip((X, W, b), need))


@torch.library.impl(_LIB, "head", "CPU")
def _head_op(S, target, arrays, head, options, backend, reduction, need):
    t, opts, _ = _inputs(target, arrays, head, options)
    low = _low(S)
    loss, dS = _frameworks.head_forward(head, _array(S), t, opts, reduction, backend,
                                        np.float32 if low else None)
    return _tensor(loss, S, _loss_dtype(S, low)), _tensor(dS if need else None, S,
                                                          _grad_dtype(S, low))


@torch.library.register_fake("fastbp::head", lib=_LIB)
def _(S, target, arrays, head, options, backend, reduction, need):
    low = _low(S)
    loss = S.new_empty((S.shape[0],) if reduction == "none" else (), dtype=_loss_dtype(S, low))
    return loss, S.new_empty(S.shape if need else (0,), dtype=_grad_dtype(S, low))


# ---------------------------------------------------------------------------- autograd
def _call(name, *args):
    """Operator ``name``: through the dispatcher when compiling (the compiler records the
    operator and traces its fake), its implementation directly in eager code (the dispatcher's
    trip to Python and back costs ~6 µs a call, benchmarks/op_boundary.py)."""
    if torch.compiler.is_compiling():
        return getattr(torch.ops.fastbp, name)(*args)
    return _IMPLS[name](*args)


_IMPLS = {"linear_head": _linear_head_op, "linear_rows_backward": _linear_rows_backward_op,
          "head": _head_op}


def _keep(ctx, grads, inputs):
    """The forward's gradients for the backward. Eager: handed over once (``_take``), so that
    autograd receives the kernel's arrays without a copy, with the operator's inputs to compute
    them again. Compiled: saved tensors, which the compiler plans."""
    if torch.compiler.is_compiling():
        ctx.save_for_backward(*grads)
    else:
        ctx.grads, ctx.inputs = grads, inputs


def _take(ctx, grad, recompute):
    """The kept gradients times the upstream scalar ``grad``. A second backward through the
    same graph (``retain_graph=True``) computes them again instead of reusing tensors autograd
    now owns."""
    if torch.compiler.is_compiling():
        return [grad * a for a in ctx.saved_tensors]
    grads, ctx.grads = ctx.grads, None
    grads = recompute() if grads is None else grads
    return grads if grad.item() == 1 else [a.mul_(grad) for a in grads]


def _first_only(*grads):
    """The gradients, which are constants to autograd: ``create_graph=True`` (the way to a
    second derivative) is a clear error instead of a silently wrong or unused graph."""
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        raise RuntimeError("fastbp.torch gives first derivatives only: backward with "
                           "create_graph=True (a second derivative) is not supported through "
                           "its losses")
    return grads


class _LinearHead(torch.autograd.Function):
    """``call``: (head, options, backend, reduction, need), constants; ``arrays``: the array
    options in _ARRAY_OPTIONS order, None where absent (apply costs per argument)."""

    @staticmethod
    def forward(ctx, X, W, b, target, call, *arrays):
        head, options, backend, reduction, need = call
        loss, *grads = _call("linear_head", X, W, b, target, arrays, head, options, backend,
                             reduction, need)
        ctx.call = call
        if reduction == "none":
            ctx.save_for_backward(X, W, b, target, *arrays)
        else:
            _keep(ctx, grads, (X, W, b, target, arrays))
        return loss

    @staticmethod
    def backward(ctx, grad):
        head, options, backend, reduction, need = ctx.call
        if reduction == "none":                     # the gradient of sum_i g_i L_i
            X, W, b, target, *arrays = ctx.saved_tensors
            grads = _call("linear_rows_backward", X, W, b, target, arrays, head, options,
                          backend, grad, need)
        else:
            grads = _take(ctx, grad, lambda: _call(
                "linear_head", *ctx.inputs, head, options, backend, reduction, need)[1:])
        dX, dW, db = (a if n else None for a, n in zip(grads, need))
        return _first_only(dX, dW, db) + (None,) * (2 + len(_ARRAY_OPTIONS))


def linear_head(X, W, b, target, head="softmax_nll", *, backend=None, **head_options):
    """``head(X W^T + b, target)`` as one fused call, differentiable in X, W and b.

    ``head_options``: the head's options (tensors or arrays for ``weight``, ``sample_weight``,
    ``pos_weight``; not differentiated) and ``reduction`` "mean" (default), "sum" or "none".
    """
    for name, t in (("X", X), ("W", W), ("b", b), ("target", target)):
        _check(name, t)
    reduction, arrays, options = _split(head, head_options, _autocast(X, W, b))
    _plain(X, W, b)
    target = torch.as_tensor(target)
    grad = torch.is_grad_enabled()
    need = [grad and X.requires_grad, grad and W.requires_grad,
            grad and b is not None and b.requires_grad]
    if not any(need):                         # the loss alone: no autograd node
        return _call("linear_head", X, W, b, target, arrays, head, options, backend, reduction,
                     need)[0]
    return _LinearHead.apply(X, W, b, target, (head, options, backend, reduction, need),
                             *arrays)


class _Head(torch.autograd.Function):
    """``call`` and ``arrays`` as _LinearHead's (applied only when S requires grad)."""

    @staticmethod
    def forward(ctx, S, target, call, *arrays):
        head, options, backend, reduction, need = call
        loss, dS = _call("head", S, target, arrays, head, options, backend, reduction, need)
        ctx.call = call
        if reduction == "none":
            ctx.save_for_backward(dS)
        else:
            _keep(ctx, (dS,), (S, target, arrays))
        return loss

    @staticmethod
    def backward(ctx, grad):
        head, options, backend, reduction, _ = ctx.call
        if reduction == "none":              # row i of the sum's gradient times grad_i
            (dS,) = ctx.saved_tensors
            dS = dS * grad.reshape(grad.shape + (1,) * (dS.ndim - 1))
        else:
            (dS,) = _take(ctx, grad, lambda: _call(
                "head", *ctx.inputs, head, options, backend, reduction, True)[1:])
        return _first_only(dS) + (None,) * (2 + len(_ARRAY_OPTIONS))


def _head_function(name, spec):
    def head(S, target, *, backend=None, **head_options):
        reduction, arrays, options = _split(name, head_options)
        _check(spec.scores_name, S)
        _check("target", target)
        _plain(S)
        need = torch.is_grad_enabled() and S.requires_grad
        target = torch.as_tensor(target)
        if not need:                          # the loss alone: no autograd node
            return _call("head", S, target, arrays, name, options, backend, reduction, False)[0]
        return _Head.apply(S, target, (name, options, backend, reduction, need), *arrays)

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
