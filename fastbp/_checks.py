"""All input validation and normalisation, shared by every backend.

Each public call runs exactly one ``check_*`` function here, before any backend sees an array.
After it, a backend may trust: float arrays are C-contiguous and share one dtype (float32 or
float64); labels are ``intp`` and inside ``[0, n)`` (or equal ``ignore_index``); shapes agree;
options have their documented types and ranges; ``out`` arrays are writeable, C-contiguous, of the
exact shape and dtype, and overlap no input (except a head's ``out`` that *is* its scores).
"""

from typing import NamedTuple, Optional

import numpy as np

from ._registry import (ACTIVATION_SPECS, ACTIVATIONS, DEFAULT_OPTIONS, HEAD_OPTIONS, HEADS,
                        REDUCTIONS, SPECS, TARGET_KIND, TARGET_NAME, integer, real)
from .backends.interface import LayerCache


class HeadCall(NamedTuple):
    """check_head's result: a head call's checked arguments."""
    S: np.ndarray
    target: np.ndarray
    options: dict
    reduction: str
    out: Optional[np.ndarray]
    shape: tuple            # S's shape as given (a binary head's (B,) scores)


class LinearHeadCall(NamedTuple):
    """check_linear_head's result: a linear_head call's checked arguments (``out``: the
    buffers of a given Grads, by name)."""
    X: np.ndarray
    W: np.ndarray
    b: Optional[np.ndarray]
    target: np.ndarray
    head: str
    options: dict
    reduction: str
    need_dX: bool
    chunk_rows: Optional[int]
    out: dict
    filter_eps: float


class MlpCall(NamedTuple):
    """check_mlp_loss_grad's result (``out``: a (dW, db) pair per layer, None: new arrays)."""
    X: np.ndarray
    params: list
    target: np.ndarray
    activation: str
    alpha: object
    head: str
    options: dict
    reduction: str
    out: list


# Activation parameter: (name in messages, default), for the activations that take one.
ACTIVATION_ALPHA = {a: spec.param for a, spec in ACTIVATION_SPECS.items() if spec.param}

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_PLAIN = (int, float)       # option values compared with their default by value
_INTP = np.dtype(np.intp)


# ---------------------------------------------------------------------------- arrays
def as_array(name, a):
    try:
        return np.asarray(a)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} could not be converted to an array: {exc}") from None


def float_array(name, a, dtype=None, ndim=None, what=None):
    """A C-contiguous float32/float64 array; ``dtype`` given: it must match (set by the first)."""
    arr = a if a.__class__ is np.ndarray else as_array(name, a)
    if arr.dtype not in _FLOATS:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {arr.dtype}")
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(f"{name} has dtype {arr.dtype} but the call's float arrays are {dtype}; "
                        f"all float arrays of one call must share one dtype")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array{' ' + what if what else ''}, "
                         f"got shape {arr.shape}")
    return _kernel_ready(arr)


def _kernel_ready(arr):
    """C-contiguous and writeable-typed: compiled kernels specialise on both, so a read-only or
    strided input is copied (it is never written: the copy only keeps one kernel per dtype)."""
    flags = arr.flags
    if flags.c_contiguous and flags.writeable:
        return arr
    arr = np.ascontiguousarray(arr)
    return arr if arr.flags.writeable else arr.copy()


def expect_shape(name, arr, shape, why=""):
    """``why``: a string, or a function making it (only called on error: the fast path of a
    tiny call must not spend microseconds formatting messages nobody reads)."""
    if arr.shape != shape:
        why = why() if callable(why) else why
        raise ValueError(f"{name} must have shape {shape}{why}, got {arr.shape}")


def optional_vector(name, a, length, dtype, why):
    if a is None:
        return None
    arr = float_array(name, a, dtype)
    expect_shape(name, arr, (length,), why)
    return arr


def out_array(name, out, shape, dtype, inputs=(), may_be=None):
    """Validate a caller's output buffer. It must not overlap an input (its contents would be
    overwritten while still being read), except ``may_be``: the one input it may be exactly."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    owns = out.flags.owndata
    for in_name, arr in inputs:
        if arr is None or (arr is may_be and _same_buffer(out, arr)):
            continue
        # two different arrays that each own their memory cannot overlap (the cheap test)
        if (arr is out or not (owns and arr.flags.owndata)) and np.may_share_memory(out, arr):
            raise ValueError(f"{name} overlaps {in_name}; pass a separate buffer")
    return out


def _same_buffer(a, b):
    return (a.size == b.size and a.dtype == b.dtype
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


# ---------------------------------------------------------------------------- scalars
def choice(name, value, choices):
    if value.__class__ is not str or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {listed}, got {value!r}")
    return value


def flag(name, value):
    if value is True or value is False:
        return value
    if not isinstance(value, np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


# ---------------------------------------------------------------------------- targets
def _where(ctx):
    """ctx = (array name, n, "columns" / "rows" / ...[, the batch's array]) -> "S with 10
    columns"."""
    return "{} with {} {}".format(*ctx[:3])


def _batch(ctx):
    """The array whose rows are the batch: ctx's fourth item (X), else the scores' (S)."""
    return ctx[3] if len(ctx) > 3 else ctx[0]


def _label_range(arr):
    """(min, max) of a non-empty 1-d integer array, cheaply: a short list in Python, a longer
    array in NumPy (docs/performance.md, "Tiny calls")."""
    if len(arr) <= 64:
        vals = arr.tolist()
        return min(vals), max(vals)
    return arr.min(), arr.max()


def labels(name, y, B, n, ctx, ignore_index=None):
    """Integer labels (B,) inside [0, n) (or equal to ``ignore_index``), as ``intp``."""
    arr = as_array(name, y)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    expect_shape(name, arr, (B,), lambda: f" (one label per row of {_batch(ctx)}, in [0, "
                                          f"{ctx[1]}))")
    lo, hi = _label_range(arr) if B else (0, 0)
    if lo < 0 or hi >= n:
        bad = (arr < 0) | (arr >= n)
        if ignore_index is not None:
            bad &= arr != ignore_index
        if bad.any():
            v = arr[np.argmax(bad)]
            raise ValueError(f"{name} has label {v}, outside [0, {n}) for {_where(ctx)}")
    return _kernel_ready(arr if arr.dtype is _INTP else arr.astype(np.intp))


def pm1_labels(name, y, B):
    arr = as_array(name, y)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer labels -1 or +1, got dtype {arr.dtype}")
    expect_shape(name, arr, (B,), " (one label per score)")
    bad = (arr != 1) & (arr != -1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name} must hold labels in {{-1, +1}}, got {arr[i]} at index {i}")
    return _kernel_ready(arr.astype(np.intp, copy=False))


def head_target(head, target, B, n, dtype, options, ctx):
    """Validate ``target`` and the head's options for scores of shape (B, n) and ``dtype``.

    Returns ``(target, options)`` with every option present (defaults filled in); with every
    option at its default, the shared read-only ``DEFAULT_OPTIONS[head]``, which compiled
    backends recognise with ``is``.
    """
    allowed = HEAD_OPTIONS[head]
    if options and all(k in allowed and (v is allowed[k]
                                         or (v.__class__ in _PLAIN and v == allowed[k]))
                       for k, v in options.items()):
        options = {}        # every option at its default: the shared defaults (a fast path)
    unknown = set(options).difference(allowed)
    if unknown:
        raise TypeError(f"head {head!r} got unexpected option(s) {sorted(unknown)}; "
                        f"it takes {sorted(allowed)} and reduction")
    opts = {**allowed, **options}
    name = TARGET_NAME[head]
    kind = TARGET_KIND[head]
    target = as_array(name, target)
    if kind == "labels|probs" and target.dtype.kind in "fc" and target.ndim == 1:
        raise TypeError(f"{name} must hold integer class labels (or ({B}, {n}) class "
                        f"probabilities), got dtype {target.dtype} of shape {target.shape}; "
                        f"convert labels with {name}.astype(int)")
    if kind == "labels|probs" and target.dtype.kind in "fc":
        target = float_array(name, target, dtype)
        expect_shape(name, target, (B, n), lambda: f" (class probabilities for {_where(ctx)})")
    elif kind.startswith("labels"):
        ignore = None
        if "ignore_index" in opts:
            ignore = opts["ignore_index"] = integer("ignore_index", opts["ignore_index"])
        target = labels(name, target, B, n, ctx, ignore)
    elif kind == "pm1":
        target = pm1_labels(name, target, B)
    else:
        target = float_array(name, target, dtype)
        expect_shape(name, target, (B, n), lambda: f" (one target per score of {_where(ctx)})")
    if not options:     # the defaults are valid: the shared read-only mapping
        return target, DEFAULT_OPTIONS[head]

    def per_row():
        return f" (one weight per row of {_where(ctx)})"

    def per_class():
        return f" (one weight per class of {_where(ctx)})"
    for key, opt in SPECS[head].options.items():
        value = opts[key]
        if opt.kind == "row" and value is not None:
            opts[key] = optional_vector(key, value, B, dtype, per_row)
        elif opt.kind == "class" and value is not None:
            opts[key] = optional_vector(key, value, n, dtype, per_class)
        elif opt.check is not None and key != "ignore_index":     # (checked with the labels)
            opts[key] = opt.check(key, value)
    if SPECS[head].rule is not None:
        SPECS[head].rule(target, opts)
    return target, opts


# ---------------------------------------------------------------------------- heads
def check_head(head, S, target, options, reduction, out):
    """Public head call -> (S (B, n), target, options, reduction, out (B, n), S's own shape)."""
    spec = SPECS[head]
    name = spec.scores_name
    S = float_array(name, S)
    shape = S.shape
    if spec.target == "pm1":        # one score per row
        if S.ndim not in (1, 2) or (S.ndim == 2 and S.shape[1] != 1):
            raise ValueError(f"{name} must have shape (B,) or (B, 1), got {S.shape}")
        S = S.reshape(-1, 1)
    elif S.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of scores (B, n), got shape {S.shape}")
    B, n = S.shape
    if n < 1:
        raise ValueError(f"{name} must have at least one column, got shape {S.shape}")
    reduction = choice("reduction", reduction, REDUCTIONS)
    target, opts = head_target(head, target, B, n, S.dtype, options, (name, n, "columns"))
    if out is not None:
        inputs = [(name, S), (TARGET_NAME[head], target)]
        inputs += [(k, v) for k, v in opts.items() if isinstance(v, np.ndarray)]
        out = out_array("out", out, shape, S.dtype, inputs, may_be=S).reshape(B, n)
    return HeadCall(S, target, opts, reduction, out, shape)


# ---------------------------------------------------------------------------- layers
def linear_operands(X, W, b, w_rows_per_output=1):
    """X (B, d), W (n*k, d), b (n*k,) or None; returns them contiguous, dtype from X."""
    X = float_array("X", X, ndim=2, what="(B, d)")
    W = float_array("W", W, X.dtype, ndim=2, what="(n, d)")
    if W.shape[1] != X.shape[1]:
        raise ValueError(f"W must have shape (n, {X.shape[1]}) to match X's {X.shape[1]} "
                         f"columns, got {W.shape}")
    if W.shape[0] < 1:
        raise ValueError(f"W must have at least one row, got shape {W.shape}")
    if W.shape[0] % w_rows_per_output:
        raise ValueError(f"W must have a multiple of {w_rows_per_output} rows for maxout with "
                         f"{w_rows_per_output} pieces, got shape {W.shape}")
    b = optional_vector("b", b, W.shape[0], X.dtype, lambda: f" (one bias per row of W {W.shape})")
    return X, W, b


def head_reduction(options, allowed=("mean", "sum")):
    """``reduction`` inside the ``**head_options`` of linear_head ("none" too) and
    mlp_loss_grad."""
    if not options:
        return "mean", options
    options = dict(options)
    reduction = choice("reduction", options.pop("reduction", "mean"), allowed)
    return reduction, options


_F32, _F64 = _FLOATS


def _fast_linear_head(X, W, b, target, head, options, need_dX, chunk_rows, out):
    """The common call -- default options, no out, contiguous arrays of one float dtype, intp
    labels or a float target of the right shape -- checked with as few Python operations as
    possible (a tiny call must cost microseconds). Anything else returns None and takes the
    general path below, which also words every error."""
    if options or chunk_rows is not None or head not in HEAD_OPTIONS:
        return None
    nd = np.ndarray
    if not (X.__class__ is nd and W.__class__ is nd and target.__class__ is nd
            and (b is None or b.__class__ is nd) and (need_dX is True or need_dX is False)):
        return None
    dt = X.dtype
    if ((dt is not _F64 and dt is not _F32) or W.dtype is not dt or X.ndim != 2
            or W.ndim != 2 or not (X.flags.carray and W.flags.carray and target.flags.carray)):
        return None
    (B, d), n = X.shape, W.shape[0]
    if W.shape[1] != d or n < 1 or (head == "binary_hinge" and n != 1):
        return None
    if b is not None and (b.dtype is not dt or b.shape != (n,) or not b.flags.carray):
        return None
    kind = TARGET_KIND[head]
    if kind == "labels" or (kind == "labels|probs" and target.ndim == 1):
        if target.dtype is not _INTP or target.shape != (B,):
            return None
        if B:
            lo, hi = _label_range(target)
            if lo < 0 or hi >= n:
                return None         # (ignore_index's -100 too: the general path handles it)
    elif kind in ("float", "labels|probs"):
        if target.dtype is not dt or target.shape != (B, n):
            return None
    else:
        return None
    bufs = _NO_BUFFERS
    if out is not None:
        if out.__class__.__name__ != "Grads":
            return None
        _, dW, db, dX = out
        # Buffers that own their memory and are distinct cannot overlap each other, nor an
        # input whose memory belongs to another ndarray (itself, or its base that owns it);
        # anything else goes to the general path's overlap checks.
        if not (_own_buffer(dW, W, dt) and (db is None or _own_buffer(db, b, dt))
                and (dX is None or (need_dX and _own_buffer(dX, X, dt)))
                and dW is not db and (dX is None or (dX is not dW and dX is not db))):
            return None
        for a in (X, W, target, b):
            if a is not None:
                owner = a.base
                if owner is None:
                    owner = a
                elif owner.__class__ is not nd or owner.base is not None:
                    return None
                if owner is dW or owner is db or owner is dX:
                    return None
        bufs = {"dW": dW, "db": db, "dX": dX}
    return tuple.__new__(LinearHeadCall, (X, W, b, target, head, DEFAULT_OPTIONS[head], "mean",
                                          need_dX, None, bufs, 0.0))    # (faster than __new__)


def _own_buffer(arr, like, dt):
    """arr owns its memory and is a writeable C-ordered array like ``like`` (None: not expected)."""
    return (like is not None and arr.__class__ is np.ndarray and arr.base is None
            and arr.dtype is dt and arr.shape == like.shape and arr.flags.carray)


def check_linear_head(X, W, b, target, head, options, need_dX, chunk_rows, out):
    fast = _fast_linear_head(X, W, b, target, head, options, need_dX, chunk_rows, out)
    if fast is not None:
        return fast
    head = choice("head", head, HEADS)
    X, W, b = linear_operands(X, W, b)
    B, n = X.shape[0], W.shape[0]
    if head == "binary_hinge" and n != 1:
        raise ValueError(f"W must have shape (1, d) for head 'binary_hinge', got {W.shape}")
    need_dX = flag("need_dX", need_dX)
    reduction, options = head_reduction(options, REDUCTIONS)
    filter_eps = options.pop("filter_eps", None) if options else None
    target, opts = head_target(head, target, B, n, X.dtype, options, ("W", n, "rows", "X"))
    filter_eps = 0.0 if filter_eps is None else filter_option(head, filter_eps, X.dtype)
    if chunk_rows is not None:
        chunk_rows = integer("chunk_rows", chunk_rows, lo=1)
    bufs = _NO_BUFFERS if out is None else grads_out(
        out, {"dW": W.shape, "db": None if b is None else b.shape,
              "dX": X.shape if need_dX else None},
        X.dtype, [("X", X), ("W", W), ("b", b), ("target", target)])
    return LinearHeadCall(X, W, b, target, head, opts, reduction, need_dX, chunk_rows, bufs,
                          filter_eps)


_NO_BUFFERS = {"dW": None, "db": None, "dX": None}   # read-only by convention


def filter_option(head, value, dtype):
    """linear_head's filter_eps (softmax_nll only) as the float the backends use: "auto" is
    the dtype's machine epsilon / 32 (Cut Cross-Entropy's choice), 0.0 is exact."""
    if head != "softmax_nll":
        raise ValueError(f"filter_eps applies to head 'softmax_nll' only, got head {head!r}")
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"filter_eps must be None, a float >= 0 or 'auto', got {value!r}")
        return float(np.finfo(dtype).eps) / 32
    return real("filter_eps", value, 0.0, np.inf)


def grads_out(out, shapes, dtype, inputs):
    """``out=Grads(None, dW, db, dX)`` -> {name: validated buffer or None}; None entries (or no
    ``out``) are allocated by the caller. A gradient that is not computed must be None."""
    if out is None:
        return _NO_BUFFERS
    if not isinstance(out, tuple) or len(out) != 4:
        raise TypeError(f"out must be a Grads(loss, dW, db, dX) tuple, got {type(out).__name__}")
    given = [a for a in out[1:] if a is not None]
    for i, a in enumerate(given):
        if any(np.may_share_memory(a, other) for other in given[i + 1:]):
            raise ValueError("out's gradient arrays overlap each other; pass separate buffers")
    bufs = {}
    for name, arr in zip(("dW", "db", "dX"), out[1:]):
        if arr is not None:
            if shapes[name] is None:
                raise ValueError(f"out.{name} must be None: that gradient is not computed here")
            out_array(f"out.{name}", arr, shapes[name], dtype, inputs)
        bufs[name] = arr
    return bufs


def activation_alpha(activation, alpha):
    """Validate the activation name and its parameter; returns alpha with its default filled."""
    activation = choice("activation", activation, ACTIVATIONS)
    if activation not in ACTIVATION_ALPHA:
        if alpha is not None:
            raise ValueError(f"alpha must be None for activation {activation!r}, got {alpha!r}")
        return activation, None
    what, default = ACTIVATION_ALPHA[activation]
    if alpha is None:
        return activation, default
    if activation == "maxout":
        return activation, integer(f"alpha ({what} of maxout)", alpha, lo=1)
    # alpha >= 0 keeps sign(f(s)) == sign(s), so f' can be read off the saved output.
    return activation, real(f"alpha ({what} of {activation})", alpha, 0.0, np.inf)


def check_linear_act_forward(X, W, b, activation, alpha):
    activation, alpha = activation_alpha(activation, alpha)
    X, W, b = linear_operands(X, W, b, alpha if activation == "maxout" else 1)
    return X, W, b, activation, alpha


def check_linear_act_backward(dA, cache, need_dX):
    if not isinstance(cache, LayerCache):
        raise TypeError(f"cache must be the cache returned by linear_act_forward, "
                        f"got {type(cache).__name__}")
    cache = _check_cache(cache)
    dA = float_array("dA", dA, cache.A.dtype)
    expect_shape("dA", dA, cache.A.shape, " (the shape of the forward output A)")
    return dA, cache, flag("need_dX", need_dX)


def _check_cache(cache):
    """The cache's arrays agree with each other (compiled kernels index them blindly): a cache
    built or altered by hand gets a clear error, never an out-of-bounds read."""
    activation, alpha = activation_alpha(cache.activation, cache.alpha)
    X = float_array("cache.X", cache.X, ndim=2, what="(B, d)")
    W = float_array("cache.W", cache.W, X.dtype, ndim=2, what="(m, d)")
    k = alpha if activation == "maxout" else 1
    if W.shape[1] != X.shape[1] or W.shape[0] < 1 or W.shape[0] % k:
        raise ValueError(f"cache.W must have shape (m, {X.shape[1]}) with m a positive multiple "
                         f"of {k} (maxout pieces), got {W.shape}")
    b = optional_vector("cache.b", cache.b, W.shape[0], X.dtype, "")
    width = W.shape[0] // k
    A = float_array("cache.A", cache.A, X.dtype)
    expect_shape("cache.A", A, (X.shape[0], width))
    argmax = None
    if activation == "maxout":
        argmax = as_array("cache.argmax", cache.argmax)
        if argmax.dtype != np.intp:
            raise TypeError(f"cache.argmax must be an intp array, got dtype {argmax.dtype}")
        expect_shape("cache.argmax", argmax, A.shape)
        argmax = _kernel_ready(argmax)
    return LayerCache(X, W, b, activation, alpha, _kernel_ready(A), argmax)


def check_params(X, params, activation, alpha):
    """X and a list of (W, b) layers that chain: returns (X, [(W, b)], activation, alpha)."""
    activation, alpha = activation_alpha(activation, alpha)
    X = float_array("X", X, ndim=2, what="(B, d)")
    if isinstance(params, np.ndarray) or not hasattr(params, "__len__") or len(params) == 0:
        raise TypeError("params must be a non-empty list of (W, b) pairs, layer 1 first")
    checked, width = [], X.shape[1]
    for l, layer in enumerate(params, start=1):
        if not isinstance(layer, (tuple, list)) or len(layer) != 2:
            raise TypeError(f"params[{l - 1}] must be a (W, b) pair, got {type(layer).__name__}")
        hidden = l < len(params)
        k = alpha if hidden and activation == "maxout" else 1
        W = float_array(f"W{l}", layer[0], X.dtype, ndim=2, what="(n_out, n_in)")
        if W.shape[1] != width:
            raise ValueError(f"W{l} must have {width} columns to match layer {l}'s input, "
                             f"got shape {W.shape}")
        if W.shape[0] < 1 or W.shape[0] % k:
            raise ValueError(f"W{l} must have a positive multiple of {k} rows (maxout pieces), "
                             f"got shape {W.shape}")
        b = optional_vector(f"b{l}", layer[1], W.shape[0], X.dtype,
                            lambda: f" (one bias per row of W{l})")
        checked.append((W, b))
        width = W.shape[0] // k
    return X, checked, activation, alpha


def check_mlp_loss_grad(X, params, target, activation, alpha, head, options, out):
    head = choice("head", head, HEADS)
    X, params, activation, alpha = check_params(X, params, activation, alpha)
    W_last = params[-1][0]
    n = W_last.shape[0]
    if head == "binary_hinge" and n != 1:
        raise ValueError(f"the last layer must have 1 output for head 'binary_hinge', "
                         f"got W{len(params)} of shape {W_last.shape}")
    reduction, options = head_reduction(options)
    target, opts = head_target(head, target, X.shape[0], n, X.dtype, options,
                               ("the last layer", n, "outputs", "X"))
    bufs = []
    if out is not None:
        if not hasattr(out, "__len__") or len(out) != len(params):
            raise TypeError(f"out must be a list of {len(params)} (dW, db) pairs like params")
        inputs = [("X", X), ("target", target)]
        inputs += [(f"W{l}", W) for l, (W, _) in enumerate(params, 1)]
        for l, ((W, b), pair) in enumerate(zip(params, out), start=1):
            dW, db = pair
            dW = None if dW is None else out_array(f"out[{l - 1}] dW", dW, W.shape, X.dtype, inputs)
            if db is not None and b is None:
                raise ValueError(f"out[{l - 1}] db must be None: layer {l} has no bias")
            db = None if db is None else out_array(f"out[{l - 1}] db", db, b.shape, X.dtype, inputs)
            bufs.append((dW, db))
    else:
        bufs = [(None, None)] * len(params)
    return MlpCall(X, params, target, activation, alpha, head, opts, reduction, bufs)


def check_batch(X, target, head, params, shapes, dtype, options):
    """One training batch for a model: X (B, d) in the model's dtype and the head's target.
    The parameters are the model's own: each must still have the shape and dtype it was built
    with (a cheap check, so a compiled step never reads past a replaced array)."""
    for l, ((W, b), (w_shape, b_shape)) in enumerate(zip(params, shapes), start=1):
        for name, arr, shape in ((f"W{l}", W, w_shape), (f"b{l}", b, b_shape)):
            if (arr.__class__ is not np.ndarray or arr.shape != shape or arr.dtype != dtype
                    or not arr.flags.c_contiguous or not arr.flags.writeable):
                raise ValueError(f"model parameter {name} must stay a writeable C-contiguous "
                                 f"{dtype} array of shape {shape}")
    X = float_array("X", X, dtype, ndim=2, what="(B, d)")
    d, n = shapes[0][0][1], shapes[-1][0][0]
    if X.shape[1] != d:
        raise ValueError(f"X must have {d} columns (the model's inputs), got shape {X.shape}")
    if (not options and target.__class__ is np.ndarray and target.dtype is _INTP
            and target.shape == X.shape[:1] and target.flags.carray
            and TARGET_KIND[head].startswith("labels")):
        # the common step: default options, intp labels -- only their range is left to check
        if len(target):
            lo, hi = _label_range(target)
            if 0 <= lo and hi < n:
                return X, target, DEFAULT_OPTIONS[head], "mean"
    reduction, options = head_reduction(options)
    target, opts = head_target(head, target, X.shape[0], n, dtype, options,
                               ("the last layer", n, "outputs", "X"))
    return X, target, opts, reduction
