"""What every kernel stands on (csrc/runtime.c): the threads (their count, the threading layer,
a forked child's), memory without reference counts, and the BLAS binding.

Who owns the cores (docs/design.md): a kernel runs on Numba's threads with BLAS held to one
thread inside (``blas_one_thread``), or calls BLAS (NumPy's own OpenBLAS where NumPy has one, as
the C backend: ``gemm``) on all threads from the calling one -- never both pools at once.
"""
import contextlib
import ctypes
import os
import sys
import threading
import types

import llvmlite.binding as _llvm
import numba as nb
import numpy as np
from numba import types as _nbtypes
from numba.extending import intrinsic, overload

from .. import _blas, spin_policy
from ._jit import OPTS, inline, jit, pjit

# "threadsafe": OpenMP (or TBB), so calls from several Python threads at once are safe (the
# default workqueue layer aborts on concurrent use), unless the user chose a layer
# (NUMBA_THREADING_LAYER). Takes effect at the first parallel call.
if "NUMBA_THREADING_LAYER" not in os.environ:
    nb.config.THREADING_LAYER = "threadsafe"
if not nb.config.DISABLE_JIT:
    with spin_policy():         # the layer (libgomp for OpenMP) loads now, not at a first call
        from numba.np.ufunc.parallel import _launch_threads
        _launch_threads()


_NO_LABELS = np.empty(0, np.intp)
_NO_FLOATS = np.empty(0)
_NO_BYTES = np.empty(0, np.uint8)
_EMPTY = {np.dtype(t): np.empty(0, t) for t in (np.float32, np.float64)}
_NO_Z = {np.dtype(t): np.empty((0, 0), t) for t in (np.float32, np.float64)}
_threads = [nb.config.NUMBA_NUM_THREADS]     # the row blocks of the fused path (one per thread)


def set_num_threads(n):
    _threads[0] = min(n, nb.config.NUMBA_NUM_THREADS)
    nb.set_num_threads(_threads[0])


_forked = [False]       # set in a forked child: every Twins runs its serial kernel


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _forked.__setitem__(0, True))


class Twins:
    """One kernel body compiled twice: ``parallel``, its ``prange`` loops on Numba's threads,
    and ``serial``, the same loops one iteration after the other on the calling thread (the
    same bits: every loop's partials are combined in a fixed order). Calling it runs the
    parallel kernel, or the serial one in a process forked after Numba's threads ran, whose
    parallel region would abort (libgomp waits for a pool the child does not have)."""

    def __init__(self, body):
        twin = types.FunctionType(body.__code__, body.__globals__, body.__name__ + "_in_order",
                                  body.__defaults__, body.__closure__)
        twin.__qualname__ = body.__qualname__ + "_in_order"     # its own disk cache entry
        twin.__doc__ = body.__doc__
        self.parallel, self.serial = pjit(body), jit(twin)
        self.__doc__, self.__name__ = body.__doc__, body.__name__

    def __call__(self, *args):
        return self.on(2)(*args)

    def on(self, threads):
        """The kernel for a team of ``threads``: one thread (or a forked child's) runs the
        serial kernel, no parallel region (BLAS inside then keeps its own threads)."""
        return self.parallel if threads > 1 and not _forked[0] else self.serial


# Arrays without an owner, and addresses: no reference counts in the hot loops.
@intrinsic
def _pointer(typingctx, addr, like):
    """The integer address ``addr`` as a pointer to ``like``'s dtype."""
    sig = nb.types.CPointer(like.dtype)(addr, like)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))
    return sig, codegen


@intrinsic
def _address(typingctx, addr):
    """The integer addr as a void pointer (an argument of the BLAS symbols)."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(nb.types.voidptr))
    return nb.types.voidptr(addr), codegen


@inline
def _carve(addr, like, shape):
    """The memory at addr as an array of ``shape`` in like's dtype, without an owner: its views
    are not reference-counted (each count of an owned view is an atomic instruction; per row
    they cost more than a small row's arithmetic), so something else must keep the memory
    alive (_keep). Carved parts of one allocation are separate bases to LLVM: it vectorizes a
    loop writing one part and reading another with a runtime overlap check, where slices of
    one array (one base, offsets it cannot compare) leave the loop scalar."""
    return nb.carray(_pointer(addr, like), shape)


def _unowned(a):
    """a as an array without an owner (_carve) when it is typed C-contiguous, else a itself
    (a carved array is C-ordered): the caller keeps a alive."""
    return a


@overload(_unowned, jit_options=OPTS)
def _unowned_typed(a):
    if isinstance(a, nb.types.Array) and a.layout == "C":
        return lambda a: _carve(a.ctypes.data, a, a.shape)
    return lambda a: a


if nb.config.DISABLE_JIT:       # interpreted: the same memory, through NumPy
    def _carve(addr, like, shape):
        size = int(np.prod(shape)) * like.itemsize
        return np.frombuffer((ctypes.c_char * size).from_address(addr), like.dtype).reshape(shape)


@jit
def _keep(owner):
    """Nothing: a use that keeps owner alive to this point (Numba frees an array after its
    last use)."""
    pass


# The compiled code calls the symbols fastbp_?gemm, bound here at import to NumPy's own
# OpenBLAS (else SciPy's): a symbol, not an address baked into the code, so the on-disk cache
# stays valid in the next process. Not np.dot: Numba's is SciPy's OpenBLAS, a second thread
# pool that fights NumPy's (docs/performance.md, "Threads next to the user's own NumPy").
_SGEMM, _DGEMM, _ILP64, BLAS = _blas.gemms()


_SET_THREADS, _GET_THREADS = (f and ctypes.CFUNCTYPE(*sig)(f) for f, sig in zip(
    _blas.thread_controls(BLAS), ((None, ctypes.c_int), (ctypes.c_int,))))
_held, _hold_lock = [0, 0], threading.Lock()      # holders, the count they saved


@contextlib.contextmanager
def blas_one_thread():
    """BLAS's threads set to one while a kernel calls it from each of Numba's threads (two
    pools on the same cores wait on each other's spinning threads); the first holder saves the
    count and the last restores it (csrc/runtime.c's fbp_blas_hold). Yields False, changing
    nothing, where BLAS's thread count cannot be set."""
    c = sys.modules.get("fastbp.backends.c_kernels")
    if c is not None and getattr(c, "BLAS", None) == BLAS:
        # the C backend holds the same BLAS: one holder count per process (its fbp_blas_hold),
        # else each would restore the count the other set
        held = bool(c.lib.fbp_blas_hold())
        try:
            yield held
        finally:
            if held:
                c.lib.fbp_blas_release()
        return
    if not _SET_THREADS:
        yield False
        return
    with _hold_lock:
        if _held[0] == 0:
            _held[1] = _GET_THREADS()
            _SET_THREADS(1)
        _held[0] += 1
    try:
        yield True
    finally:
        with _hold_lock:
            _held[0] -= 1
            if _held[0] == 0:
                _SET_THREADS(_held[1])


_llvm.add_symbol("fastbp_sgemm", _SGEMM)
_llvm.add_symbol("fastbp_dgemm", _DGEMM)
_vp = _nbtypes.voidptr
_sgemm = _nbtypes.ExternalFunction("fastbp_sgemm", _nbtypes.void(*[_vp] * 13))
_dgemm = _nbtypes.ExternalFunction("fastbp_dgemm", _nbtypes.void(*[_vp] * 13))


@jit
def _gemm_call(C, A, B, trans_a, trans_b, beta):
    """Fortran ?gemm on C-ordered rows (unit inner stride): BLAS is column-major, so it computes
    C^T = op(B)^T op(A)^T. The ints go by reference as int64, which a 32-bit-int BLAS (SciPy's)
    reads as the same value on a little-endian machine for dimensions below 2^31. Every
    argument is an address into one scratch (each .ctypes of an array is two atomic reference
    counts; a training step makes several products)."""
    w = np.empty(9, np.int64)   # the six ints; 'N' / 'T' twice (bytes 48, 49); alpha, beta
    p = w.ctypes.data
    w[0] = C.shape[1]
    w[1] = C.shape[0]
    w[2] = A.shape[0] if trans_a else A.shape[1]
    w[3] = max(B.strides[0] // B.itemsize, B.shape[1], 1)
    w[4] = max(A.strides[0] // A.itemsize, A.shape[1], 1)
    w[5] = max(C.strides[0] // C.itemsize, C.shape[1], 1)
    ops = _carve(p + 48, _NO_BYTES, (2,))
    ops[0] = 84 if trans_b else 78          # 'T', 'N'
    ops[1] = 84 if trans_a else 78
    scalars = _carve(p + 56, C, (2,))
    scalars[0] = 1.0
    scalars[1] = beta
    ai, bi, ci = _address(A.ctypes.data), _address(B.ctypes.data), _address(C.ctypes.data)
    args = (_address(p + 48), _address(p + 49), _address(p), _address(p + 8), _address(p + 16),
            _address(p + 56), bi, _address(p + 24), ai, _address(p + 32),
            _address(p + 56 + C.itemsize), ci, _address(p + 40))
    if C.itemsize == 8:
        _dgemm(*args)
    else:
        _sgemm(*args)
    _keep(w)


@jit
def gemm(C, A, B, trans_a=False, trans_b=False, beta=0.0):
    """C = op(A) op(B) + beta C on C-ordered arrays, in place, no copies."""
    if C.size:
        _gemm_call(C, A, B, trans_a, trans_b, beta)
    elif beta == 0.0:
        C[...] = 0


if nb.config.DISABLE_JIT:          # interpreted: no compiled code to call the symbols from
    def gemm(C, A, B, trans_a=False, trans_b=False, beta=0.0):   # noqa: F811
        """C = op(A) op(B) + beta C, in place, by np.dot."""
        product = np.dot(A.T if trans_a else A, B.T if trans_b else B)
        C[...] = product + beta * C if beta else product
