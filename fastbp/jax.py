"""fastbp's fused kernels as differentiable JAX functions (docs/api.md section 8).

    import fastbp.jax as fbj
    loss, grads = jax.value_and_grad(fbj.linear_head, argnums=(0, 1, 2))(X, W, b, y)

Each function is a ``jax.custom_vjp``. Where the C backend is built and the running jaxlib
speaks the XLA FFI version of csrc/xla_ffi.h, its kernels are XLA custom-call targets
(csrc/xla_ffi.c, ``jax.ffi``): a jitted program calls them directly, with no host callback
(``PATH == "xla_ffi"``). Elsewhere, or for another backend, the kernels are called through
``jax.pure_callback`` (``PATH == "callback"``, with a warning when a version mismatch is the
reason); ``fastbp.info()["jax_path"]`` says which. The forward of a "mean"/"sum" call runs the
whole fused kernel for the arguments that are differentiated (symbolic zeros) and keeps the
gradients, the backward scales them by the upstream cotangent; a call that is not
differentiated computes the loss alone. ``reduction="none"`` returns the row losses and computes
the gradients in the backward (fastbp/_frameworks.py). float32, and float64 with
``jax_enable_x64``. Needs the optional extra ``jax``; ``import fastbp`` does not import this
module.
"""
import functools
import re
import warnings
from pathlib import Path

try:
    import jax
    import jax.numpy as jnp
    import jaxlib
except ImportError as exc:
    from .errors import missing_extra
    raise ImportError(missing_extra("fastbp.jax", "jax", "jax")) from exc
import numpy as np

from . import _checks, _dispatch, _frameworks
from ._registry import REDUCTIONS, SPECS
from .backends import c_xla

__all__ = ["linear_head", "PATH", *SPECS]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------------------- the path
def _jaxlib_ffi_version():
    """(major, minor) of the XLA FFI API the running jaxlib was built with (the c_api.h it
    ships), or None where that cannot be read."""
    try:
        text = (Path(jax.ffi.include_dir()) / "xla/ffi/api/c_api.h").read_text()
        return tuple(int(re.search(rf"#define XLA_FFI_API_{part}\s+(\d+)", text).group(1))
                     for part in ("MAJOR", "MINOR"))
    except (OSError, AttributeError):
        return None


def _choose_path():
    """("xla_ffi", None) with the C targets registered with XLA, or ("callback", why not)."""
    try:
        _dispatch.backend_module("c")
    except Exception as exc:                    # BackendUnavailable: no compiler at install
        return "callback", f"the C backend is not available: {exc}"
    ours, theirs = c_xla.api_version(), _jaxlib_ffi_version()
    why = None
    if theirs is None or theirs[0] != ours[0] or theirs[1] < ours[1]:
        why = (f"jaxlib {jaxlib.__version__} speaks XLA FFI API "
               f"{'unknown' if theirs is None else '%d.%d' % theirs}; fastbp's targets were "
               f"written for {ours[0]}.{ours[1]}")
    else:
        try:
            for name, address in c_xla.handlers().items():
                jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(address), platform="cpu")
        except Exception as exc:                # XLA refused the handlers
            why = f"XLA did not register fastbp's targets ({type(exc).__name__}: {exc})"
    if why is None:
        return "xla_ffi", None
    warnings.warn(f"fastbp.jax: {why}; its kernels run through jax.pure_callback instead",
                  stacklevel=3)
    return "callback", why


# "xla_ffi": the C kernels are XLA custom-call targets; "callback": jax.pure_callback
PATH, PATH_REASON = _choose_path()


def _on_ffi(backend):
    """Whether a call with ``backend`` runs on the XLA targets (the C backend's kernels;
    resolved when the program is traced)."""
    if PATH != "xla_ffi":
        return False
    return (_dispatch.get_backend() if backend is None else _dispatch._resolve(backend)) == "c"


def _float(name, a):
    """float16 arrays: a TypeError naming the fix (the kernels take float32/64; bfloat16 is a
    bfloat16 call, _low)."""
    if jnp.issubdtype(a.dtype, jnp.floating) and np.dtype(a.dtype) not in _FLOATS \
            and a.dtype != jnp.bfloat16:
        raise TypeError(f"{name} must be float32, float64 or bfloat16, got {a.dtype}; convert "
                        f"it with {name}.astype(jnp.float32)")
    return a


def _callback(fn, shapes, *args):
    return _first_only(lambda *a: jax.pure_callback(fn, shapes, *a,
                                                    vmap_method="sequential"))(*args)


def _np(args):
    return [None if a is None else np.asarray(a) for a in args]


def _labels(target, kind):
    t = np.asarray(target)
    return t.astype(np.intp) if t.dtype.kind in "iu" and kind != "float" else t


def _split(head_options):
    """(reduction, static scalar options (hashable), names of array options, their arrays)."""
    reduction, options = _frameworks.split_reduction(head_options)
    arrays = {k: v for k, v in options.items() if k in c_xla.ARRAY_OPTIONS and v is not None}
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


def _first_only(call):
    """``call`` (a kernel's call inside a custom_vjp's fwd or bwd) with a clear error as its
    derivative: the kernels give first derivatives only."""
    call = jax.custom_jvp(call)
    call.defjvp(_no_second_derivative)
    return call


def _no_second_derivative(primals, tangents):
    raise TypeError("fastbp.jax gives first derivatives only: a second derivative through its "
                    "losses (jax.hessian, the gradient of a gradient) is not supported")


# ---------------------------------------------------------------------------- the XLA targets
def _ffi(target, shapes, *operands, **attrs):
    """XLA target ``target`` on ``operands``, results of ``shapes``: calls in a batch run in
    sequence inside XLA (where no batching rule merges them)."""
    call = jax.ffi.ffi_call(target, shapes, vmap_method="sequential")
    return _first_only(lambda *ops: call(*ops, **attrs))(*operands)


def _standin(a):
    """Zeros of an operand's shape and dtype for fastbp's NumPy checks at trace time (calloc:
    pages never touched)."""
    return np.zeros(a.shape, a.dtype)


def _labels_standin(target, kind, n):
    """A valid target of ``target``'s shape and dtype: label 0, +1 for pm1, uniform rows for
    class probabilities (only the labels' values are checked when the program runs)."""
    if kind == "pm1":
        return np.ones(target.shape, target.dtype)
    if kind.startswith("labels") and jnp.issubdtype(target.dtype, jnp.floating):
        return np.full(target.shape, 1 / max(n, 1), target.dtype)
    return _standin(target)


def _ffi_target(target, kind):
    """Labels as int32 / int64 (the handlers read both), anything else as it is."""
    if kind != "float" and jnp.issubdtype(target.dtype, jnp.integer) and \
            target.dtype not in (jnp.int32, jnp.int64):
        return target.astype(jnp.int32)
    return target


@functools.lru_cache(maxsize=None)
def _ffi_linear_fn(head, reduction, static, names, has_b):
    kind = SPECS[head].target
    static = dict(static)
    chunk_rows = static.pop("chunk_rows", None)

    def attrs(X, W, b, target, arrays):
        """The call's attributes for these shapes and dtypes, after fastbp's own checks on
        stand-ins (errors name the argument when the program is traced)."""
        n = W.shape[0] if W.ndim == 2 else 0
        options = dict(static, **{k: _standin(a) for k, a in zip(names, arrays)})
        call = _checks.check_linear_head(
            _standin(X), _standin(W), _standin(b) if has_b else None,
            _labels_standin(target, kind, n), head, options, True, chunk_rows, None)
        ops, bits = c_xla.array_operands(names, arrays)
        return (*c_xla.linear_attrs(call, has_b, reduction, bits), ops)

    def operands(X, W, b, target, ops):
        return (X, W) + ((b,) if has_b else ()) + (_ffi_target(target, kind), *ops)

    def grad_shapes(X, W, b, need):
        return [jax.ShapeDtypeStruct(a.shape, X.dtype) for a, n in zip((X, W, b), need) if n]

    def loss_call(X, W, b, target, arrays, how=reduction):
        common, loss_plan, ops = attrs(X, W, b, target, arrays)
        common.update(loss_plan, reduction=np.int64(REDUCTIONS.index(how)))
        return _ffi("fastbp_linear_loss", _loss_shape(X.shape[0], how, X.dtype),
                    *operands(X, W, b, target, ops), **common)

    @jax.custom_batching.custom_vmap
    def loss(X, W, b, target, arrays):
        return loss_call(X, W, b, target, arrays)

    @loss.def_vmap
    def _(axis_size, batched, X, W, b, target, arrays):
        """A batch of calls sharing W and b, with "none" or "sum": one call on all the rows
        (a row's loss depends on its own row only); anything else: the calls in sequence."""
        given = dict(zip(names, batched[4]))
        if reduction == "mean" or batched[1] or batched[2] or given.get("weight") or \
                given.get("pos_weight"):
            axes = jax.tree.map(lambda t: 0 if t else None, tuple(batched))
            return jax.vmap(loss_call, in_axes=axes)(X, W, b, target, arrays), True

        def rows(a, is_batched):
            a = a if is_batched else jnp.broadcast_to(a, (axis_size,) + a.shape)
            return a.reshape((-1,) + a.shape[2:])

        arrays = tuple(rows(a, t) if k == "sample_weight" else a
                       for k, a, t in zip(names, arrays, batched[4]))
        out = loss_call(rows(X, batched[0]), W, b, rows(target, batched[3]), arrays,
                        "none").reshape(axis_size, -1)
        return (out if reduction == "none" else out.sum(axis=1)), True

    @jax.custom_vjp
    def f(X, W, b, target, arrays):
        return loss(X, W, b, target, arrays)

    def fwd(X, W, b, target, arrays):                   # symbolic zeros: .perturbed says
        need = (X.perturbed, W.perturbed, has_b and b.perturbed)
        X, W, b, target, arrays = (X.value, W.value, b.value, target.value,
                                   tuple(a.value for a in arrays))
        if reduction == "none" or not any(need):
            return loss(X, W, b, target, arrays), (X, W, b, target, arrays, need)
        common, _, ops = attrs(X, W, b, target, arrays)
        loss_value, *grads = _ffi(
            "fastbp_linear_forward", [_loss_shape(X.shape[0], reduction, X.dtype),
                                      *grad_shapes(X, W, b, need)],
            *operands(X, W, b, target, ops), need=c_xla.need_bits(need), **common)
        return loss_value, (tuple(grads), need)

    def bwd(res, g):
        need = res[-1]
        if isinstance(g, jax.custom_derivatives.SymbolicZero) or not any(need):
            grads = [None] * 3
        elif reduction == "none":                       # the gradient of sum_i g_i L_i
            X, W, b, target, arrays, _ = res
            common, _, ops = attrs(X, W, b, target, arrays)
            it = iter(_ffi("fastbp_linear_rows", grad_shapes(X, W, b, need),
                           *operands(X, W, b, target, ops), g.astype(X.dtype),
                           need=c_xla.need_bits(need), **common))
            grads = [next(it) if n else None for n in need]
        else:
            it = iter(res[0])
            grads = [g * next(it) if n else None for n in need]
        return (*grads, None, None)

    f.defvjp(fwd, bwd, symbolic_zeros=True)
    return f


@functools.lru_cache(maxsize=None)
def _ffi_head_fn(head, reduction, static, names):
    kind = SPECS[head].target

    def call(S, target, arrays, need):
        """fastbp_head on S: (loss, dS) with need, else (loss,); fastbp's checks on stand-ins
        first (at trace time)."""
        n = S.shape[1] if S.ndim == 2 else 1
        options = dict(static, **{k: _standin(a) for k, a in zip(names, arrays)})
        c = _checks.check_head(
            head, _standin(S), _labels_standin(target, kind, n), options, reduction, None)
        t0, opts = c.target, c.options
        ops, bits = c_xla.array_operands(names, arrays)
        shapes = [_loss_shape(S.shape[0], reduction, S.dtype)]
        shapes += [jax.ShapeDtypeStruct(S.shape, S.dtype)] if need else []
        return _ffi("fastbp_head", shapes, S, _ffi_target(target, kind), *ops,
                    need=np.int64(need), arrays=bits, **c_xla.head_attrs(head, t0, opts, reduction))

    @jax.custom_vjp
    def f(S, target, arrays):
        return call(S, target, arrays, False)[0]

    def fwd(S, target, arrays):
        if not S.perturbed:
            return f(S.value, target.value, tuple(a.value for a in arrays)), None
        loss, dS = call(S.value, target.value, tuple(a.value for a in arrays), True)
        return loss, dS

    def bwd(dS, g):
        if dS is None or isinstance(g, jax.custom_derivatives.SymbolicZero):
            return None, None, None
        return g.reshape(g.shape + (1,) * (dS.ndim - g.ndim)) * dS, None, None

    f.defvjp(fwd, bwd, symbolic_zeros=True)
    return f


# ---------------------------------------------------------------------------- the callback path
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
    X, W, target = _float("X", jnp.asarray(X)), _float("W", jnp.asarray(W)), jnp.asarray(target)
    has_b = b is not None
    b = _float("b", jnp.asarray(b)) if has_b else jnp.zeros(0, X.dtype)
    X, W, b = _low({"X": X, "W": W, "b": b})
    if _on_ffi(backend):
        f = _ffi_linear_fn(head, reduction, static, names, has_b)
    else:
        f = _linear_fn(head, reduction, static, names, has_b, backend)
    return f(X, W, b, _widened(target), tuple(_widened(jnp.asarray(a)) for a in arrays))


# ---------------------------------------------------------------------------- bfloat16
@jax.custom_vjp
def _rounded(a):
    """A float32 product operand of a bfloat16 call: its bfloat16 value in float32; the
    gradient passes unrounded (float32 master weights get a float32 gradient)."""
    return a.astype(jnp.bfloat16).astype(jnp.float32)


_rounded.defvjp(lambda a: (_rounded(a), None), lambda _, g: (g,))


def _low(named):
    """A bfloat16 call's (docs/api.md, "bfloat16") product operands ``named`` ({name: array})
    as float32 arrays of bfloat16 values, in order: a bfloat16 one widened (its gradient comes
    back bfloat16, rounded once by the widening's transpose), a float32 one rounded (_rounded);
    the arrays as they are when none is bfloat16."""
    arrays = list(named.values())
    if not any(a.dtype == jnp.bfloat16 for a in arrays):
        return arrays
    partner = next(k for k, a in named.items() if a.dtype == jnp.bfloat16)
    out = []
    for name, a in named.items():
        if a.dtype not in (jnp.bfloat16, jnp.float32):
            raise TypeError(f"{name} has dtype {a.dtype} but {partner} is bfloat16: a bfloat16 "
                            f"call's products take bfloat16 or float32 arrays, not {a.dtype}")
        out.append(a.astype(jnp.float32) if a.dtype == jnp.bfloat16 else _rounded(a))
    return out


def _widened(a):
    """A head-side array (scores, targets, options) in float32 if bfloat16."""
    return a.astype(jnp.float32) if a.dtype == jnp.bfloat16 else a


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
        if _on_ffi(backend):
            f = _ffi_head_fn(name, reduction, static, names)
        else:
            f = _head_fn(name, reduction, static, names, backend)
        return f(_widened(_float(spec.scores_name, jnp.asarray(S))),
                 _widened(jnp.asarray(target)), tuple(_widened(jnp.asarray(a)) for a in arrays))

    head.__name__ = head.__qualname__ = name
    head.__doc__ = (spec.doc + "\n\n    A differentiable JAX function: the loss (a scalar, or "
                    "(B,) for reduction=\"none\"); options as fastbp." + name + ".\n")
    return head


for _name, _spec in SPECS.items():
    globals()[_name] = _head_function(_name, _spec)
