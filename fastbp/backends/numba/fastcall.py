"""The fused rows as C callbacks with linear_fused_f64 / _f32's signature (csrc/fastbp.h), for
csrc/fastcall.c's tiny calls: Numba's own dispatch of a tiny call costs more than its work."""
import threading

import numba as nb
import numpy as np

from ..._registry import HEAD_DTYPE
from .linear import linear_fused_serial
from .runtime import _carve
from ._jit import OPTS, jit

@jit
def _array(addr, like, shape):
    """The caller's array at addr (shape ``shape``), or ``like`` (empty) for NULL."""
    return like if addr == 0 else _carve(addr, like, shape)


_HEAD_RECORD = nb.from_dtype(HEAD_DTYPE)


@jit
def _given(ptr):
    """Whether a C pointer argument is not NULL."""
    return nb.carray(ptr, 0).ctypes.data != 0


def _fused_c(dW, db, dX, sums, X, W, b, hp, mean, nblocks, B, d, n):
    """linear_fused_serial behind the C signature of csrc/fastbp.h's linear_fused_f64 / _f32
    (NULL: absent, as there; nblocks: always one block here), for csrc/fastcall.c."""
    o = nb.carray(hp, 1)[0]
    rows = nb.carray(X, (B, d))
    empty = rows[0, :0] if B else nb.carray(W, (n, d))[0, :0]
    head = (o.code, _array(o.y, np.empty(0, np.int64), B), _array(o.Z, rows[:0], (B, n)),
            _array(o.sample_weight, empty, B), _array(o.weight, empty, n),
            _array(o.pos_weight, empty, n),     # HeadPack's fields, in its order
            o.ignore_index, o.label_smoothing, o.z_loss, o.softcap, o.margin, o.p, o.delta,
            o.alpha, o.gamma)
    total, osum = linear_fused_serial(
        rows, nb.carray(W, (n, d)), nb.carray(b, n if _given(b) else 0), mean != 0,
        nb.carray(dW, (n, d)), nb.carray(db, n if _given(db) else 0),
        nb.carray(dX, (B if _given(dX) else 0, d if _given(dX) else 0)), *head)
    out = nb.carray(sums, 2)
    out[0] = total
    out[1] = osum
    return 0


_CALLBACKS = []                 # the compiled cfuncs: they own the code the addresses point at
_CALLBACKS_LOCK = threading.Lock()


def _fused_cfuncs():
    """The (float64, float32) addresses of _fused_c compiled as C callbacks: on the first tiny
    call (never at import; once, whichever thread gets there first), cached on disk as every
    kernel."""
    if not _CALLBACKS:
        with _CALLBACKS_LOCK:
            if not _CALLBACKS:
                t = nb.types
                funcs = []
                for real in (t.float64, t.float32):
                    P, I64 = t.CPointer(real), t.int64
                    sig = t.int32(P, P, P, t.CPointer(t.float64), P, P, P,
                                  t.CPointer(_HEAD_RECORD), t.int32, t.int32, I64, I64, I64)
                    funcs.append(nb.cfunc(sig, **OPTS)(_fused_c))
                _CALLBACKS.append((funcs, tuple(f.address for f in funcs)))
    return _CALLBACKS[0][1]
