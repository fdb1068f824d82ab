"""The C backend: the kernels of csrc/ (declared in csrc/fastbp.h) through cffi, same kernel set
and signatures as ``reference.py``.

The extension ``fastbp.backends._fastbp_c`` is compiled by ``pip install`` (setup.py's
``cffi_modules``, build script ``_cbuild.py``) and is optional: if it is missing, importing this
module raises ImportError and ``"c"`` is only absent from ``fastbp.available_backends()``.

Arrays cross without copies (``ffi.from_buffer`` on arrays ``fastbp._checks`` validated: C
order, one float dtype, intp labels in range); cffi releases the GIL during each call. The C
kernels call NumPy's own OpenBLAS, or else SciPy's (``_blas.py``; ``set_num_threads`` limits
both through threadpoolctl), and run their own loops on OpenMP threads. Who owns the cores is
the Numba backend's rule: a kernel with a BLAS call inside runs its own loops on one thread.
"""
import functools
import operator
import sys

import numpy as np

from .. import _bf16
from .._registry import (ACTIVATION_SPECS, ARRAY_FIELDS, DEFAULT_OPTIONS, HEAD_DTYPE,
                         OPTIMIZER_CODES, REDUCTIONS)
from .._dispatch import get_num_threads
from . import _blas, _compose, spin_policy
from ._args import ACT_CODES, CODES, MAXOUT, fast_entry, head_pack, reduced_loss
from . import tuning

try:
    with spin_policy():         # libgomp loads with the extension
        from ._fastbp_c import ffi, lib
except ImportError as exc:          # built without a C compiler: only this backend is absent
    raise ImportError(
        "the C extension fastbp.backends._fastbp_c was not built (installing fastbp needs a C "
        "compiler for it; install one and reinstall fastbp)") from exc


def _check_abi():
    """csrc/fastbp.h's head, activation and optimizer codes and fbp_head layout are the
    registry's (fastbp/_registry.py): a mismatch would run the wrong head, activation or
    update, or read the wrong field, so it stops the import."""
    for cname, code in CODES.items():
        value = getattr(lib, "FBP_" + cname, None)
        if value != code:
            raise ImportError(f"head code mismatch: fastbp/_registry.py has {cname} = {code}, "
                              f"csrc/fastbp.h has FBP_{cname} = {value}")
    if lib.FBP_NUM_HEADS != len(CODES):
        raise ImportError(f"head count mismatch: fastbp/_registry.py has {len(CODES)} codes, "
                          f"csrc/fastbp.h has FBP_NUM_HEADS = {lib.FBP_NUM_HEADS}")
    enums = {f"FBP_{s.cname}": (f"activation {a}", s.code) for a, s in ACTIVATION_SPECS.items()}
    enums.update({f"FBP_{o.upper()}": (f"optimizer {o}", c) for o, c in OPTIMIZER_CODES.items()})
    for cname, (what, code) in enums.items():
        value = getattr(lib, cname, None)
        if value != code:
            raise ImportError(f"{what}: fastbp/_registry.py has code {code}, csrc/fastbp.h has "
                              f"{cname} = {value}")
    for cname, value in shared_constants().items():
        if getattr(lib, cname, None) != value:
            raise ImportError(f"{cname}: fastbp/ has {value}, csrc/fastbp.h has "
                              f"{getattr(lib, cname, None)}")
    got = [(name, f.offset) for name, f in ffi.typeof("fbp_head").fields]
    want = [(name, HEAD_DTYPE.fields[name][1]) for name in HEAD_DTYPE.names]
    if got != want or ffi.sizeof("fbp_head") != HEAD_DTYPE.itemsize:
        raise ImportError(f"fbp_head layout mismatch: csrc/fastbp.h has {got}, "
                          f"fastbp/_registry.py's HEAD_DTYPE has {want}")


def shared_constants():
    """csrc/fastbp.h's names of the constants Python states too, and their Python values."""
    consts = {"FBP_OWN_SCORES": tuning.OWN_SCORES, "FBP_OWN_BACKWARD": tuning.OWN_BACKWARD,
              "FBP_OWN_KV": tuning.OWN_TILE_BYTES // 64, "FBP_OWN_RA": tuning.OWN_TILE_ROWS,
              "FBP_HEADS_PARALLEL_MIN": tuning.HEADS_PARALLEL_MIN,
              "FBP_TILE_WIDE": tuning.TILES.index("wide")}
    consts.update({f"FBP_REDUCE_{r.upper()}": i for i, r in enumerate(REDUCTIONS)})
    consts.update({f"FBP_ARR_{f.upper()}": 1 << i for i, f in enumerate(ARRAY_FIELDS[2:])})
    return consts


_check_abi()
TUNING = tuning.C        # this backend's thresholds (tests move them to force a path)


def set_blas(numpy=True):
    """Point the C kernels at NumPy's OpenBLAS (if found) or at SciPy's, and set ``BLAS`` to
    which ("numpy" or "scipy"). Called at import; tests and benchmarks/threads.py call it too."""
    global BLAS
    sgemm, dgemm, ilp64, BLAS = _blas.gemms(numpy)
    lib.fbp_set_blas(ffi.cast("void *", sgemm), ffi.cast("void *", dgemm), int(ilp64))
    lib.fbp_set_blas_threads(*(ffi.cast("void *", f or 0) for f in _blas.thread_controls(BLAS)))


set_blas()
_threads = [get_num_threads()]        # the fused path's row blocks (one per thread)


def set_num_threads(n):
    _threads[0] = n
    lib.fbp_set_num_threads(n)


def bf16_convert(dst, src):
    """``dst[...] = src`` between C-contiguous arrays of one size (csrc/runtime.c): bfloat16 (as
    uint16) to float32 exactly, float32 to bfloat16 (uint16) or to float32 holding bfloat16
    values, to nearest even; on the threads for large arrays."""
    if src.dtype == np.float32:
        lib.fbp_f32_to_bf16(_fb(dst, require_writable=True), _fb("float[]", src), src.size,
                            int(dst.dtype == np.float32))
    else:
        lib.fbp_bf16_to_f32(_fb("float[]", dst, require_writable=True),
                            _fb("uint16_t[]", src), src.size)


def set_tile(name=None):
    """The fused rows' kernel set (csrc/fused.h) by its name in tuning.TILES: an ISA the CPU
    has, or "wide" (the AVX-512 set's tiles on the baseline ISA: the tests run its loops on any
    x86-64); None: the CPU's best (the default). Returns the one in force (an ISA the CPU lacks
    gives its best)."""
    return tuning.TILES[lib.fbp_set_tile(-1 if name is None else tuning.TILES.index(name))]


def tile():
    """The fused rows' kernel set in force (tuning.TILES)."""
    return tuning.TILES[lib.fbp_tile()]


def scratch_bytes(reset=False):
    """The most bytes of scratch the C kernels held at once since the last reset (exact: every
    kernel allocates through csrc/runtime.c's counting fbp_malloc); ``reset=True`` starts anew."""
    if reset:
        lib.fbp_scratch_reset()
    return lib.fbp_scratch_peak()


_STATUS = {lib.FBP_EBADARG: (ValueError, "a precondition failed (shape, size or code)"),
           lib.FBP_ENOMEM: (MemoryError, "scratch memory could not be allocated"),
           lib.FBP_ETOOBIG: (ValueError, "a dimension exceeds BLAS's 32-bit int"),
           lib.FBP_ENOBLAS: (RuntimeError, "no BLAS was registered")}


def _check(status, kernel):
    if status:
        cls, why = _STATUS.get(status, (RuntimeError, f"status {status}"))
        raise cls(f"C kernel {kernel}: {why}")


_fb = ffi.from_buffer


class _Typed:
    """The kernels of one dtype and ``ty``, its array type: ``_fb(t.ty, a)`` is a typed pointer
    to a's data (no copy)."""

    def __init__(self, ctype, suffix):
        self.ty = ffi.typeof(ctype + "[]")
        self.ptrs = ffi.typeof(ctype + " *[]")
        for kernel in ("heads", "linear_fused", "linear_chunked", "linear_loss",
                       "linear_act_forward", "linear_act_backward", "mlp_step"):
            setattr(self, kernel, getattr(lib, f"{kernel}_{suffix}"))

    def p(self, a):
        """``fb(a)``, or NULL for None."""
        return _NULL if a is None else _fb(self.ty, a)


_NULL = ffi.NULL
_T = {np.dtype(np.float64): _Typed("double", "f64"), np.dtype(np.float32): _Typed("float", "f32")}
_F64 = _T[np.dtype(np.float64)]
_I64 = ffi.typeof("int64_t[]")


def _labels(a):
    """intp labels or maxout winners: a pointer, or NULL for None."""
    return _NULL if a is None else _fb(_I64, a)


_sums = functools.partial(ffi.new, "double[2]")
_new_head = functools.partial(ffi.new, "fbp_head *")


# The fbp_head fields of a call with every option at its default, per head and target ndim
# (code and scalars): built once; a call adds its target's pointer and any option it sets.
_DEFAULT_HEADS = {ndim: {name: {k: v for k, v in head_pack(name, np.empty((0,) * ndim), opts)
                                ._asdict().items() if k not in ARRAY_FIELDS}
                         for name, opts in DEFAULT_OPTIONS.items()}
                  for ndim in (1, 2)}
_WEIGHTS = frozenset(ARRAY_FIELDS[2:])


def _head(t, name, target, options):
    """The call's fbp_head (a cffi struct; NULL for every array not given). Written out: this
    runs on every call."""
    if target.ndim == 1:
        h = _new_head(_DEFAULT_HEADS[1][name])
        h.y = _fb(_I64, target)
    else:
        h = _new_head(_DEFAULT_HEADS[2][name])
        h.Z = _fb(t.ty, target)
    if options is not DEFAULT_OPTIONS[name]:
        for k, v in options.items():
            if v is not None:
                setattr(h, k, _fb(t.ty, v) if k in _WEIGHTS else v)
    return h


# ---------------------------------------------------------------------------- heads
def head(name, S, target, out, reduction, options):
    """Head ``name`` on the rows of S: heads_f32 / _f64 of csrc/heads.c, one pass."""
    t, (B, n) = _T[S.dtype], S.shape
    rows = np.empty(B) if reduction == "none" else None
    sums = _sums()
    _check(t.heads(_fb(t.ty, out), _F64.p(rows), sums, _fb(t.ty, S),
                   _head(t, name, target, options), reduction == "mean", B, n), name)
    if reduction == "none":
        return rows.astype(S.dtype)
    return reduced_loss(sums[0], sums[1], reduction)


# ---------------------------------------------------------------------------- linear + head


def call_plan(dtype, B, d, n, head, options, chunk_rows, threads=None, loss=False,
              filter_eps=0.0):
    """tuning.plan for this backend at its thread count (``threads``: the fused rows' blocks'
    threads, default the same; fastbp.jax's FFI targets take the plan made when a program is
    traced)."""
    return tuning.plan("c", B, d, n, dtype, head, options, chunk_rows, _threads[0], threads,
                       loss, filter_eps)


def linear_head(X, W, b, target, head, options, reduction, chunk_rows, dW, db, dX,
                threads=None, filter_eps=0.0):
    """``threads``: row blocks of the fused path (default: the set_num_threads value; 1 inside
    a BLAS-driven network). ``filter_eps`` > 0: the row blocks' backward skips inactive
    classes (the fused rows and column blocks stay exact)."""
    (B, d), n = X.shape, W.shape[0]
    t = _T[X.dtype]
    ty = t.ty
    sums = _sums()
    args = (_fb(ty, dW), _NULL if db is None else _fb(ty, db),
            _NULL if dX is None else _fb(ty, dX), sums, _fb(ty, X), _fb(ty, W),
            _NULL if b is None else _fb(ty, b), _head(t, head, target, options),
            reduction == "mean")
    p = call_plan(X.dtype, B, d, n, head, options, chunk_rows, threads, False, filter_eps)
    if p.blocks:
        status = t.linear_fused(*args, p.blocks, B, d, n)
    else:
        status = t.linear_chunked(*args, p.chunk, p.cols, filter_eps, p.own, p.team, p.by_rows,
                                  B, d, n)
    if status:
        _check(status, "linear_head")
    return reduced_loss(sums[0], sums[1], reduction)


_U16 = ffi.typeof("uint16_t[]")
_DOT16_BUILT = bool(lib.fbp_dot16_hw())     # the vdpbf16ps kernels: built, and the CPU has them
_F32 = _T[np.dtype(np.float32)]


def linear_head_bf16(Xh, W, b, target, head, options, reduction, chunk_rows, dW, db, dX,
                     filter_eps=0.0):
    """A bfloat16 call (fastbp/_bf16.py) with X read as bfloat16 (``Xh``: its uint16 view): the
    fused rows (X widened a block at a time in L2, W float32), or the chunked path's team by
    classes on the bfloat16 products (csrc/dot16.h, where tuning.bf16_dot takes them: X and W
    read as bfloat16). ``W``: the caller's array, bfloat16 or float32 (rounded here); ``dX``:
    float32, or uint16 (the bfloat16 result's bits, rounded once at the end), or None; b, target,
    options float32 as the float32 call's. The loss, or None (nothing run) where neither
    runs the call: the caller converts."""
    (B, d), n = Xh.shape, W.shape[0]
    p = call_plan(np.dtype(np.float32), B, d, n, head, options, chunk_rows,
                  filter_eps=filter_eps)
    if reduction == "none":
        return None
    sums = _sums()
    half = dX is not None and dX.dtype == np.uint16
    if p.blocks:
        W = _bf16.operand("W", W, "X")[0]
        _check(lib.linear_fused_bf16(
            _fb(_F32.ty, dW), _F32.p(db), _F32.p(None if half else dX),
            _fb(_U16, dX) if half else _NULL, sums, _fb(_U16, Xh), _fb(_F32.ty, W), _F32.p(b),
            _head(_F32, head, target, options), reduction == "mean", p.blocks, B, d, n),
            "linear_head")
        return reduced_loss(sums[0], sums[1], reduction)
    dot = tuning.bf16_dot("c", p, d, _DOT16_BUILT)
    if not dot:
        return None
    dX32 = np.empty(dX.shape, np.float32) if half else dX
    Wh = W.view(np.uint16) if W.dtype == _bf16.bf16() else _bf16.convert(W, _bf16.bf16()).view(
        np.uint16)
    Xh, Wh = (a if a.ctypes.data % 4 == 0 else a.copy() for a in (Xh, np.ascontiguousarray(Wh)))
    _check(lib.linear_chunked_bf16(
        _fb(_F32.ty, dW), _F32.p(db), _F32.p(dX32), sums, _fb(_U16, Xh), _fb(_U16, Wh),
        _F32.p(b), _head(_F32, head, target, options), reduction == "mean", p.chunk, filter_eps,
        p.team, dot, B, d, n), "linear_head")
    if half:
        bf16_convert(dX, dX32)
    return reduced_loss(sums[0], sums[1], reduction)


def linear_loss(X, W, b, target, head, options, reduction, chunk_rows):
    """The loss alone: linear_loss_f32 / _f64 (the chunked path's team without its backward:
    own products for the scores where linear_head takes them)."""
    (B, d), n = X.shape, W.shape[0]
    t = _T[X.dtype]
    p = call_plan(X.dtype, B, d, n, head, options, chunk_rows, loss=True)
    rows = np.empty(B) if reduction == "none" else None
    sums = _sums()
    _check(t.linear_loss(_F64.p(rows), sums, _fb(t.ty, X), _fb(t.ty, W), t.p(b),
                         _head(t, head, target, options), p.chunk, p.own, p.team, p.by_rows,
                         B, d, n), "linear_loss")
    if reduction == "none":
        return rows.astype(X.dtype)
    return reduced_loss(sums[0], sums[1], reduction)


_PRODUCTS = {"xwt": 0, "gw": 1, "gtx": 2}


def own_product(kind, A, B, out=None):
    """One of fastbp's own products alone on every thread (csrc/products.h; the benchmark of
    them against BLAS): ``"xwt"`` A B^T (S = X W^T), ``"gw"`` A B (dX = G W), ``"gtx"`` A^T B
    (dW = G^T X). A and B: C-contiguous, both float32 or both float64; ``out``: the result's
    array (C-contiguous, of its shape and dtype), else a new one."""
    if kind not in _PRODUCTS:
        raise ValueError(f"kind: expected one of {sorted(_PRODUCTS)}, got {kind!r}")
    for name, a in (("A", A), ("B", B)):
        if not (isinstance(a, np.ndarray) and a.ndim == 2 and a.dtype in _T
                and a.flags.c_contiguous):
            raise TypeError(f"{name}: expected a C-contiguous 2-d float32 or float64 array, got "
                            f"{getattr(a, 'dtype', type(a).__name__)} {np.shape(a)}")
    if A.dtype != B.dtype:
        raise TypeError(f"B: expected A's dtype {A.dtype}, got {B.dtype}")
    (m, ka), (rb, cb) = A.shape, B.shape
    if not {"xwt": ka == cb, "gw": ka == rb, "gtx": m == rb}[kind]:
        raise ValueError(f"B: shape {B.shape} does not fit A's {A.shape} for {kind!r}")
    M, N, K = {"xwt": (m, rb, ka), "gw": (m, cb, ka), "gtx": (ka, cb, m)}[kind]
    if out is None:
        out = np.empty((M, N), A.dtype)
    elif not (isinstance(out, np.ndarray) and out.shape == (M, N) and out.dtype == A.dtype
              and out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(f"out: expected a writeable C-contiguous {A.dtype} array of shape "
                         f"{(M, N)}, got {getattr(out, 'dtype', type(out).__name__)} "
                         f"{np.shape(out)}")
    C, t = out, _T[A.dtype]
    _check(getattr(lib, f"own_products_{'f64' if A.dtype.itemsize == 8 else 'f32'}")(
        _PRODUCTS[kind], _fb(t.ty, C), _fb(t.ty, A), _fb(t.ty, B), M, N, K), "own_product")
    return C


# tiny calls: checked and run by csrc/fastcall.c on linear_fused_* (_args.fast_entry)
_FUSED = (int(ffi.cast("uintptr_t", ffi.addressof(lib, "linear_fused_f64"))),
          int(ffi.cast("uintptr_t", ffi.addressof(lib, "linear_fused_f32"))))
fast_linear_head = fast_entry("c", lambda: _FUSED)


# ---------------------------------------------------------------------------- layers
def _act(activation, alpha):
    """(code, alpha as a float, maxout pieces)."""
    if activation == "maxout":
        return MAXOUT, 0.0, alpha
    return ACT_CODES[activation], 0.0 if alpha is None else float(alpha), 1


def linear_act_forward(X, W, b, activation, alpha):
    (B, d), m, t = X.shape, W.shape[0], _T[X.dtype]
    code, a, k = _act(activation, alpha)
    A = np.empty((B, m // k), X.dtype)
    winners = np.empty(A.shape, np.intp) if code == MAXOUT else None
    ty = t.ty
    _check(t.linear_act_forward(_fb(ty, A), _labels(winners), _fb(ty, X), _fb(ty, W), t.p(b),
                                code, a, k, B, d, m), "linear_act_forward")
    return A, winners


def linear_act_backward(dA, cache, dX, dW, db):
    X, W, t = cache.X, cache.W, _T[dA.dtype]
    code, a, k = _act(cache.activation, cache.alpha)
    ty = t.ty
    _check(t.linear_act_backward(t.p(dX), _fb(ty, dW), t.p(db), _fb(ty, dA), _fb(ty, cache.A),
                                 _labels(cache.argmax), _fb(ty, X), _fb(ty, W), code, a, k,
                                 X.shape[0], X.shape[1], W.shape[0]), "linear_act_backward")


# ---------------------------------------------------------------------------- networks
def mlp_forward(X, params, activation, alpha):
    return _compose.mlp_forward(sys.modules[__name__], X, params, activation, alpha)


def mlp_loss_grad(X, params, target, activation, alpha, head, options, reduction, grads):
    """The last layer's fused kernel runs on one thread when hidden layers exist (their GEMMs
    are BLAS's, and OpenMP's threads must not wait on BLAS's spinning ones)."""
    return _compose.mlp_loss_grad(sys.modules[__name__], X, params, target, activation, alpha,
                                  head, options, reduction, grads,
                                  threads=1 if len(params) > 1 else None)


_OPTIMIZERS = OPTIMIZER_CODES


class _StepPack:
    """The pointer table of mlp_step_*: every W, b (layer order), their gradients, then the
    optimizer's first and second buffer of each -- built once per optimizer (kept in its
    ``backend_cache``). A training loop
    passes the same arrays every step; the pack keeps them (and the optimizer's state entries)
    alive, so their identities tell whether it still applies. Their shapes cannot have changed:
    MLP.step's check_batch holds every parameter to the shape it was built with."""

    def __init__(self, t, key, flat, grads, state, kind):
        self.key = key
        if kind == OPTIMIZER_CODES["adam"]:
            s1, s2 = [s[0] for s in state], [s[1] for s in state]
        else:      # SGD keeps no state without momentum, one buffer with it: unused slots: p
            s1, s2 = [p if s is None else s for s, p in zip(state, flat)], flat
        self.arrays = flat + grads + s1 + s2
        self.ptrs = ffi.new(t.ptrs, [_fb(t.ty, a) for a in self.arrays])
        self.widths = ffi.new("int64_t[]", [flat[0].shape[1]] + [W.shape[0] for W in flat[::2]])

    def fits(self, key):
        return len(key) == len(self.key) and all(map(operator.is_, key, self.key))


def _runs_in_c(X, params, activation, optimizer):
    """SGD / Adam on elementwise activations with biases: csrc/mlp.c; anything else is
    composed (mlp_loss_grad and the optimizer's own update)."""
    return (getattr(optimizer, "kind", None) in _OPTIMIZERS and activation != "maxout"
            and X.shape[0] > 0 and all(b is not None for _, b in params))


def _c_steps(X, params, target, activation, alpha, head, options, reduction, grads, optimizer,
             batch_size):
    """mlp_step_* over the blocks of batch_size rows of X: the list of the steps' losses."""
    t, B = _T[X.dtype], X.shape[0]
    steps = -(-B // batch_size)
    kind = _OPTIMIZERS[optimizer.kind]
    flat = [a for pair in params for a in pair]
    optimizer.begin(flat, steps)
    gflat = [g for pair in grads for g in pair]
    key = flat + gflat + optimizer.state
    pack = optimizer.backend_cache
    if pack.__class__ is not _StepPack or not pack.fits(key):
        pack = optimizer.backend_cache = _StepPack(t, key, flat, gflat, optimizer.state, kind)
    code, a, _ = _act(activation, alpha)
    losses = ffi.new("double[]", steps)
    _check(t.mlp_step(losses, pack.ptrs, pack.widths, len(params), _fb(t.ty, X), code, a,
                      _head(t, head, target, options), reduction == "mean", kind,
                      optimizer.lr, getattr(optimizer, "momentum", 0.0),
                      getattr(optimizer, "nesterov", False), optimizer.weight_decay,
                      *getattr(optimizer, "betas", (0.0, 0.0)), getattr(optimizer, "eps", 0.0),
                      optimizer.t - steps + 1, batch_size, B), "mlp_step")
    return list(losses)


def mlp_step(X, params, target, activation, alpha, head, options, reduction, grads, optimizer):
    """One C call (csrc/mlp.c) where _runs_in_c, else composed."""
    if not _runs_in_c(X, params, activation, optimizer):
        return _compose.mlp_step(sys.modules[__name__], X, params, target, activation, alpha,
                                 head, options, reduction, grads, optimizer)
    return _c_steps(X, params, target, activation, alpha, head, options, reduction, grads,
                    optimizer, X.shape[0])[0]


def mlp_epoch(X, params, target, activation, alpha, head, options, reduction, grads, optimizer,
              batch_size):
    """Every step of the epoch in one C call where _runs_in_c, else mlp_step per batch."""
    if not _runs_in_c(X, params, activation, optimizer):
        return _compose.mlp_epoch(sys.modules[__name__], X, params, target, activation, alpha,
                                  head, options, reduction, grads, optimizer, batch_size)
    return _c_steps(X, params, target, activation, alpha, head, options, reduction, grads,
                    optimizer, batch_size)
