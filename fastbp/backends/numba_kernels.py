"""The Numba backend: fused @njit kernels, same kernel set and signatures as ``reference.py``.

Who owns the cores (docs/design.md): a kernel either runs on Numba's threads with
no BLAS call inside, or calls BLAS (NumPy's own OpenBLAS where NumPy has one, as the C backend:
``gemm`` below) with a serial epilogue -- never both at once.

- Heads: one serial pass per row (``head_row``), written once, in place when out is S.
- ``linear_head`` has three paths, chosen per shape (``tuning.Numba``; docs/performance.md):
  *fused rows* -- for four rows at a time: scores, head, ``dW += g x^T``, ``db += g``,
  ``dX = g W``, all in one compiled call with plain loops that LLVM vectorizes in X's dtype
  (rows split over ``get_num_threads()`` fixed blocks with partials combined in block order,
  so results are bit-identical run to run): tiny weights, and few classes on large work;
  a few scores (B n <= FUSED_TINY_SCORES) go one row at a time instead (``linear_rows_tiny``);
  *chunked BLAS* -- per block of ``chunk_rows``
  rows: GEMM, head epilogue in place, ``dW += dS^T X`` (BLAS with beta = 1), ``dX = dS W``:
  peak extra memory is one score block, whatever ``B``; and, when the whole batch is one
  block, the same in a single compiled call (*one block*); softmax_nll with many classes in
  *column blocks* (``_linear_columns``: two passes over the columns, as csrc/linear.c).
- Layers and MLPs: BLAS GEMMs with fused epilogues (bias + activation; ``dh * f'(a)`` + ``db``).

Rows and elements: every head is one ``head_row`` call per row -- scores ``s`` in, the
class-weighted loss returned, ``f`` times the class-weighted gradient written to ``g``, which may
be ``s`` itself (each ``s[j]`` is read before ``g[j]`` is written); ``f`` carries the sample
weight and the "mean" scale, so a row is written once. The formulas are the reference backend's
term for term, so float64 results agree to rounding; sums run in float64.

Mean reductions: the total weight ``sum(omega)`` is computed first (O(B)), so every gradient row
is written already scaled. Compilation is lazy (first call) and cached on disk (``cache=True``).
"""
import ctypes
import math
import os
import sys
import threading

import numba as nb
import numpy as np
from numba.extending import intrinsic, overload
import llvmlite.binding as _llvm
from llvmlite import ir as _ir
from numba import types as _nbtypes

from .. import config
from .._checks import DEFAULT_OPTIONS
from . import _blas, _compose
from .._registry import HEAD_DTYPE
from ._args import (ACT_CODES, CODES, ELU, LEAKY, RELU, SIGMOID, TANH, HeadPack, fast_entry,
                    head_pack, reduced_loss)
from .tuning import Numba as TUNING
from .tuning import score_blocks

# head codes, as globals the compiled code reads as constants
SOFTMAX, SOFTMAX_PROBS, MHINGE, BHINGE, BCE, SIGMOID_L2, L2, L1, NLL, HUBER, FOCAL = (
    CODES[c] for c in ("SOFTMAX", "SOFTMAX_PROBS", "MHINGE", "BHINGE", "BCE", "SIGMOID_L2", "L2",
                       "L1", "NLL", "HUBER", "FOCAL"))

# One file on purpose: Numba's on-disk cache keys a function on its own source file only, so a
# kernel that inlined a helper from another module would keep running the helper's old code.
_OPTS = dict(cache=True, fastmath=set(config.FASTMATH), error_model="numpy", nogil=True)
jit = nb.njit(**_OPTS)
pjit = nb.njit(parallel=True, **_OPTS)


# ---------------------------------------------------------------------------- scalars
@jit
def relu(x):
    """max(x, 0) that keeps NaN (as np.maximum)."""
    return x if (x > 0 or x != x) else 0.0


@jit
def step(x):
    """1[x > 0], NaN for NaN and Inf (as the reference's (x > 0) + 0 * x)."""
    return (1.0 if x > 0 else 0.0) + 0.0 * x


@jit
def sign(x):
    if x > 0:
        return 1.0
    if x < 0:
        return -1.0
    return x            # 0 stays 0, NaN stays NaN


@jit
def sigmoid(x):
    """sigma(x) without overflow."""
    e = math.exp(-abs(x))
    return 1.0 / (1.0 + e) if x >= 0 else e / (1.0 + e)


@jit
def activate(code, x, alpha):
    if code == SIGMOID:
        return sigmoid(x)
    if code == TANH:
        return math.tanh(x)
    if code == RELU:
        return relu(x)
    if code == LEAKY:
        return x if x > 0 else alpha * x
    if code == ELU:
        return x if x > 0 else alpha * math.expm1(min(x, 0.0))
    return x


@jit
def activation_grad(code, a, alpha):
    """f'(s) read off a = f(s) (alpha >= 0 keeps the sign of s)."""
    if code == SIGMOID:
        return a * (1.0 - a)
    if code == TANH:
        return 1.0 - a * a
    if code == RELU:
        return 1.0 if a > 0 else 0.0
    if code == LEAKY:
        return 1.0 if a > 0 else alpha
    if code == ELU:
        return 1.0 if a > 0 else a + alpha
    return 1.0


# ---------------------------------------------------------------------------- head rows
@jit
def argmax(s):
    """Index of the first maximum of s, or of its first NaN (as numpy.argmax), in one scalar
    pass (Numba does not vectorize rows.h's two-pass form)."""
    m = 0
    M = s[0]
    for j in range(1, s.size):
        if s[j] > M or (s[j] != s[j] and M == M):
            m, M = j, s[j]
    return m


# exp(x) = 2^k e^y, k = round(x / ln 2), y = x - k ln 2 (Cody-Waite: ln 2 in two parts),
# |y| <= ln(2)/2, e^y by its Taylor polynomial of degree 13 (truncation < 5e-18 relative), 2^k
# built from its IEEE bits: csrc/common.h's fbp_exp1. Plain arithmetic, so the loop vectorizes
# (math.exp is a scalar libm call; this is 5-10x faster on AVX-512).
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10


@intrinsic
def _as_float64(typingctx, i):
    """The float64 whose IEEE bits are the int64 i."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], _ir.DoubleType())
    return nb.types.float64(nb.types.int64), codegen


@nb.njit(inline="always", **_OPTS)
def exp1(v):
    """exp(v) for a float64 v. NaN stays NaN; v is clamped to 709 above, and below -708 the
    result is 0 (libm's is subnormal there, < 3e-308, and 0 from -745), as fbp_exp1's."""
    c = min(max(v, -708.0), 709.0) if v == v else 0.0     # NaN: any k; restored below
    k = math.floor(c * _LOG2E + 0.5)
    y = (c - k * _LN2_HI) - k * _LN2_LO
    y2 = y * y                 # Estrin's scheme: a chain of 4 multiply-adds, not Horner's 13
    y4 = y2 * y2
    p = (((1.0 + y) + y2 * (1 / 2 + y * (1 / 6))) + y4 * (
        (1 / 24 + y * (1 / 120)) + y2 * (1 / 720 + y * (1 / 5040)))) + (y4 * y4) * (
        ((1 / 40320 + y * (1 / 362880)) + y2 * (1 / 3628800 + y * (1 / 39916800))) + y4 * (
            1 / 479001600 + y * (1 / 6227020800)))
    p *= _as_float64((np.int64(k) + 1023) << 52)
    return (0.0 if v < -708.0 else p) if v == v else v


@jit
def vexp(x):
    """x[j] = exp(x[j]) in place (exp1), for a float32 or float64 row."""
    for j in range(x.size):
        x[j] = exp1(float(x[j]))


@nb.njit(inline="always", **_OPTS)
def softmax_row(s, yi, z, w, eps, f, g):
    """C_j = w_j ((1 - eps) t_j + eps/n), t = e_y (labels) or z (probability rows);
    loss = sum_j C_j (lse - s_j), g_j = (sum C) p_j - C_j, in the reference's float32-accurate
    form: m = argmax s, r = sum_{j != m} exp(s_j - s_m), lse - s_j = (s_m - s_j) + log1p(r),
    p_j = e_j / (1 + r), g_m = (sum_{j != m} C_j - C_m r) / (1 + r).
    Three passes: x = s - M (and the linear part of the loss), exp in place, the gradient."""
    n = s.size
    m = argmax(s)
    M = s[m]
    if not z.size and not w.size and eps == 0:    # plain labels: C = e_y, the common case
        lin = M - s[yi]
        r = 0.0
        if n < 32:          # short rows: the scalar exp beats vexp's fixed cost
            for j in range(n):
                e = exp1(float(s[j] - M)) if j != m else 0.0
                g[j] = e
                r += e
        else:
            for j in range(n):
                g[j] = s[j] - M
            vexp(g)
            g[m] = 0.0
            for j in range(n):
                r += g[j]
        inv = 1.0 / (1.0 + r)
        for j in range(n):
            g[j] = (f * inv) * g[j]
        if m == yi:
            g[m] = -f * (r * inv)
        else:
            g[m] = f * inv
            g[yi] -= f
        return lin + math.log1p(r)
    # C_j without branches inside the loops (selects vectorize; the z / w tests are hoisted)
    lin = 0.0          # sum_j C_j (M - s_j)
    rest = 0.0         # sum_{j != m} C_j
    a, e_n = 1.0 - eps, eps / n
    for j in range(n):
        t = z[j] if z.size else (1.0 if j == yi else 0.0)
        c = (w[j] if w.size else 1.0) * (a * t + e_n)
        x = s[j] - M
        lin -= c * x if c != 0 else 0.0
        rest += c if j != m else 0.0
        g[j] = x
    c_m = (w[m] if w.size else 1.0) * (a * (z[m] if z.size else (1.0 if m == yi else 0.0)) + e_n)
    total = rest + c_m
    vexp(g)
    g[m] = 0.0
    r = 0.0
    for j in range(n):
        r += g[j]
    l1p = math.log1p(r)
    inv = 1.0 / (1.0 + r)
    ft = f * total * inv
    for j in range(n):
        t = z[j] if z.size else (1.0 if j == yi else 0.0)
        g[j] = ft * g[j] - f * ((w[j] if w.size else 1.0) * (a * t + e_n))
    g[m] = f * ((rest - c_m * r) * inv)
    return lin + total * l1p


@jit
def softmax_llm_row(s, yi, z, w, eps, cap, zeta, f, g, x):
    """softmax_row with softcap cap (s' = cap tanh(s / cap), the gradient times 1 - tanh^2 =
    4 e / (1 + e)^2 with e = exp(-2 |s| / cap)) and z_loss zeta (+ zeta lse^2, gradient
    + 2 zeta lse p), in float64 from s' (csrc/rows.h's softmax_llm_row). x: float64 scratch."""
    n = s.size
    M = -np.inf
    for j in range(n):
        v = cap * math.tanh(s[j] / cap) if cap > 0 else float(s[j])
        x[j] = v
        M = v if (v > M or v != v) else M       # a NaN score wins (and propagates)
    total_exp = 0.0
    for j in range(n):
        total_exp += math.exp(x[j] - M)
    lse = M + math.log(total_exp)
    loss = zeta * lse * lse
    a, e_n = 1.0 - eps, eps / n
    total = 0.0
    for j in range(n):
        t = z[j] if z.size else (1.0 if j == yi else 0.0)
        c = (w[j] if w.size else 1.0) * (a * t + e_n)
        total += c
        loss += c * (lse - x[j]) if c != 0 else 0.0
    k = total + 2.0 * zeta * lse
    for j in range(n):
        t = z[j] if z.size else (1.0 if j == yi else 0.0)
        c = (w[j] if w.size else 1.0) * (a * t + e_n)
        e = math.exp(-2.0 * abs(s[j] / cap)) if cap > 0 else 1.0   # (s[j] before g[j] = s[j])
        g[j] = f * (k * math.exp(x[j] - lse) - c) * (4.0 * e / ((1.0 + e) * (1.0 + e)))
    return loss


@jit
def mhinge_row(s, yi, w, margin, p, f, g):
    """sum_{j != y} max(0, s_j - s_y + m)^p (p = 1, 2), times w_y; g_y = -sum of the others."""
    n = s.size
    sy = s[yi]
    wy = w[yi] if w.size else 1.0
    loss = 0.0
    gsum = 0.0
    for j in range(n):
        if j == yi:
            continue
        mj = s[j] - sy + margin
        h = relu(mj)
        if p == 1:
            loss += h
            gj = step(mj)
        else:
            loss += h * h
            gj = 2.0 * h
        gsum += gj
        g[j] = f * wy * gj
    g[yi] = -f * wy * gsum
    return wy * loss


@nb.njit(inline="always", **_OPTS)
def log1p_unit(e):
    """log1p(e) for 0 <= e <= 1 (NaN stays NaN), csrc/common.h's fbp_log1p_unit: 2 atanh(t),
    t = e / (2 + e), by its series to t^33 (relative: a tiny e keeps its digits). Plain
    arithmetic, so a loop of it vectorizes (math.log1p is a scalar call)."""
    t = e / (2.0 + e)
    u = t * t
    p = 1.0 + u * (1 / 3 + u * (1 / 5 + u * (1 / 7 + u * (1 / 9 + u * (1 / 11 + u * (
        1 / 13 + u * (1 / 15 + u * (1 / 17 + u * (1 / 19 + u * (1 / 21 + u * (1 / 23 + u * (
            1 / 25 + u * (1 / 27 + u * (1 / 29 + u * (1 / 31 + u * (1 / 33))))))))))))))))
    return 2.0 * t * p


@jit
def exp_neg_abs(s, e):
    """e[j] = exp(-|s[j]|) for a row s (vexp's polynomial)."""
    for j in range(s.size):
        e[j] = -abs(s[j])
    vexp(e)


@jit
def bce_row(s, z, e, pw, f, g):
    """sum_j (1-z) s + lw softplus(-s), lw = 1 + (pw-1) z; g = lw sigma(s) - pw z (e = exp(-|s|);
    two loops, so neither reads pw when it is absent)."""
    loss = 0.0
    if pw.size:
        for j in range(s.size):
            x, zj, ej = s[j], z[j], e[j]
            big = 1.0 / (1.0 + ej)
            sig = big if x >= 0 else ej * big
            lw = 1.0 + (pw[j] - 1.0) * zj
            loss += (1.0 - zj) * x + lw * (relu(-x) + log1p_unit(ej))
            g[j] = f * (lw * sig - pw[j] * zj)
    else:
        for j in range(s.size):
            x, zj, ej = s[j], z[j], e[j]
            big = 1.0 / (1.0 + ej)
            sig = big if x >= 0 else ej * big
            loss += (1.0 - zj) * x + (relu(-x) + log1p_unit(ej))
            g[j] = f * (sig - zj)
    return loss


@jit
def sigmoid_l2_row(s, z, e, f, g):
    """sum_j (z - sigma(s))^2, g = -2 (z - sigma) sigma(s) sigma(-s) (e = exp(-|s|))."""
    loss = 0.0
    for j in range(s.size):
        ej = e[j]
        big = 1.0 / (1.0 + ej)
        d = z[j] - (big if s[j] >= 0 else ej * big)
        loss += d * d
        g[j] = f * (-2.0 * d * (big * (ej * big)))
    return loss


@nb.njit(inline="always", **_OPTS)
def focal_term(x, zj, ej, alpha, gamma, square):
    """sigmoid_focal's term of one score x (e = exp(-|x|)): (loss, gradient) in docs/math.md's
    finite product form; square: gamma is 2 (no pow call)."""
    big = 1.0 / (1.0 + ej)
    sp = big if x >= 0 else ej * big
    sm = ej * big if x >= 0 else big
    ce = relu(x) + log1p_unit(ej) - zj * x
    q = zj * sm + (1.0 - zj) * sp
    at = alpha * zj + (1.0 - alpha) * (1.0 - zj) if alpha >= 0 else 1.0
    qg = q * q if square else q ** gamma
    ratio = sp * sm / q if q > 0 else 0.0
    return at * qg * ce, at * qg * (gamma * (1.0 - 2.0 * zj) * ratio * ce + (sp - zj))


@jit
def focal_row(s, z, e, alpha, gamma, f, g):
    """sum_j alpha_t q^gamma ce with p = sigma(s), ce = softplus(s) - z s, q = 1 - p_t =
    z sigma(-s) + (1 - z) sigma(s); g = alpha_t q^gamma (gamma (1 - 2z) (sigma(s) sigma(-s) / q)
    ce + sigma(s) - z), the ratio <= 1 (0 where q = 0), so g is finite for every s and gamma.
    The default gamma = 2 has a loop of its own (no pow call)."""
    loss = 0.0
    if gamma == 2.0:
        for j in range(s.size):
            l, gj = focal_term(s[j], z[j], e[j], alpha, 2.0, True)
            loss += l
            g[j] = f * gj
    else:
        for j in range(s.size):
            l, gj = focal_term(s[j], z[j], e[j], alpha, gamma, False)
            loss += l
            g[j] = f * gj
    return loss


@nb.njit(inline="always", **_OPTS)
def head_row(h, s, yi, z, f, g, tmp):
    """One row of head h (a HeadPack; yi, z: the row's label and target row): returns the
    class-weighted loss, writes f * gradient into g (tmp: float64 scratch of 2 s.size)."""
    n = s.size
    head = h.code
    if head == SOFTMAX or head == SOFTMAX_PROBS:
        if head == SOFTMAX and yi == h.ignore_index:
            for j in range(n):
                g[j] = 0.0
            return 0.0
        if h.softcap > 0 or h.z_loss > 0:
            return softmax_llm_row(s, yi, z, h.weight, h.label_smoothing, h.softcap, h.z_loss,
                                   f, g, tmp[:n])
        return softmax_row(s, yi, z, h.weight, h.label_smoothing, f, g)
    if head == MHINGE:
        return mhinge_row(s, yi, h.weight, h.margin, h.p, f, g)
    if head == BHINGE:
        m = h.margin - yi * s[0]
        g[0] = -f * yi * step(m)
        return relu(m)
    if head == NLL:
        py = s[yi]
        for j in range(n):
            g[j] = 0.0
        g[yi] = -f / py
        return -math.log(py)
    if head == HUBER:           # m = min(|r|, delta), r = s - z: m (|r| - m/2), g = sign(r) m
        loss = 0.0
        for j in range(n):
            r = s[j] - z[j]
            a = abs(r)
            m = a if a < h.delta else h.delta
            loss += m * (a - 0.5 * m)
            g[j] = f * (sign(r) * m)
        return loss
    if head == BCE or head == SIGMOID_L2 or head == FOCAL:
        # one exp for sigma(x), sigma(-x) and the rest: e = exp(-|x|), sigma(|x|) = 1/(1+e),
        # all rows' e first (vexp) into the upper half of tmp, so every loop vectorizes
        e = tmp[n:2 * n]
        exp_neg_abs(s, e)
        if head == FOCAL:       # alpha_t q^gamma ce, q = 1 - p_t (docs/math.md's finite form)
            return focal_row(s, z, e, h.alpha, h.gamma, f, g)
        if head == SIGMOID_L2:
            return sigmoid_l2_row(s, z, e, f, g)
        return bce_row(s, z, e, h.pos_weight, f, g)
    if head != L2 and head != L1:
        for j in range(n):      # unreachable (the registry's codes only); never a silent head
            g[j] = np.nan
        return np.nan
    loss = 0.0
    for j in range(n):
        x = s[j]
        zj = z[j]
        if head == L2:
            loss += (zj - x) * (zj - x)
            g[j] = f * (2.0 * (x - zj))
        else:               # L1
            loss += abs(zj - x)
            g[j] = f * sign(x - zj)
    return loss


@nb.njit(inline="always", **_OPTS)
def row_weight(i, h):
    """omega_i: sample weight x class weight of the label (0 for ignore_index); inlined, as
    every function taking the pack per row (a call copies the whole pack)."""
    om = h.sample_weight[i] if h.sample_weight.size else 1.0
    if h.y.size:
        if h.y[i] == h.ignore_index:
            return 0.0
        if h.weight.size:
            om *= h.weight[h.y[i]]
    return om


# "threadsafe": OpenMP (or TBB), so calls from several Python threads at once are safe (the
# default workqueue layer aborts on concurrent use). Takes effect at the first parallel call.
nb.config.THREADING_LAYER = "threadsafe"

_NO_LABELS = np.empty(0, np.intp)
_NO_FLOATS = np.empty(0)
_NO_BYTES = np.empty(0, np.uint8)
_EMPTY = {np.dtype(t): np.empty(0, t) for t in (np.float32, np.float64)}
_NO_Z = {np.dtype(t): np.empty((0, 0), t) for t in (np.float32, np.float64)}


_threads = [nb.config.NUMBA_NUM_THREADS]     # the row blocks of the fused path (one per thread)


def set_num_threads(n):
    _threads[0] = min(n, nb.config.NUMBA_NUM_THREADS)
    nb.set_num_threads(_threads[0])


# ---------------------------------------------------------------------------- memory
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


@nb.njit(inline="always", **_OPTS)
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


@overload(_unowned, jit_options=_OPTS)
def _unowned_typed(a):
    if isinstance(a, nb.types.Array) and a.layout == "C":
        return lambda a: _carve(a.ctypes.data, a, a.shape)
    return lambda a: a


if nb.config.DISABLE_JIT:       # interpreted: the same memory, through NumPy
    def _carve(addr, like, shape):
        size = int(np.prod(shape)) * like.itemsize
        return np.frombuffer((ctypes.c_char * size).from_address(addr), like.dtype).reshape(shape)

    def _as_float64(i):
        return np.int64(i).view(np.float64)


@jit
def _keep(owner):
    """Nothing: a use that keeps owner alive to this point (Numba frees an array after its
    last use)."""
    pass


# ---------------------------------------------------------------------------- BLAS
# The compiled code calls the symbols fastbp_?gemm, bound here at import to NumPy's own
# OpenBLAS (else SciPy's): a symbol, not an address baked into the code, so the on-disk cache
# stays valid in the next process. Not np.dot: Numba's is SciPy's OpenBLAS, a second thread
# pool that fights NumPy's (docs/performance.md, "Threads next to the user's own NumPy").
_SGEMM, _DGEMM, _ILP64, BLAS = _blas.gemms()
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



# ---------------------------------------------------------------------------- heads
@jit
def omega_total(h, B):
    """sum_i omega_i, the "mean" denominator."""
    if not h.y.size and not h.sample_weight.size:
        return float(B)
    total = 0.0
    for i in range(B):
        total += row_weight(i, h)
    return total


@jit
def mean_scale(h, B):
    """1 / sum(omega), or 0 when every weight is 0 (the loss is then nan, the gradient 0)."""
    total = omega_total(h, B)
    return 1.0 / total if total != 0 else 0.0


@jit
def head_rows(h, S, mean, scale, b, db, dS, loss_rows):
    """Every row of S (plus bias b if given, in place): dS[i] = scale' sw_i g_i with
    scale' = scale / sum(omega) under mean, else scale; returns (sum_i sw_i l_i,
    sum_i omega_i); db (float64, if given) += sum_i dS[i]."""
    if mean:
        scale *= mean_scale(h, S.shape[0])
    return head_block(h, S, scale, b, db, dS, loss_rows, 0, S.shape[0])


@jit
def head_block(h, S, scale, b, db, dS, loss_rows, lo, hi):
    """head_rows' rows lo..hi with the final scale."""
    h = _unowned_pack(h)
    y, Z, sw = h.y, h.Z, h.sample_weight
    total = 0.0
    osum = 0.0
    if h.code == BHINGE:        # one score per row: scalars, no row views (a view per row
        for i in range(lo, hi):  # cost more than the row's arithmetic)
            x = S[i, 0] + b[0] if b.size else S[i, 0]
            S[i, 0] = x
            swi = sw[i] if sw.size else 1.0
            m = h.margin - y[i] * x
            g = -(swi * scale) * y[i] * step(m)
            dS[i, 0] = g
            loss = relu(m)
            total += swi * loss
            osum += row_weight(i, h)
            if loss_rows.size:
                loss_rows[i] = swi * loss
            if db.size:
                db[0] += g
        return total, osum
    dummy = Z[0] if Z.shape[0] else np.empty(0, S.dtype)
    tmp = np.empty(2 * S.shape[1])                # head_row's scratch
    for i in range(lo, hi):
        s = S[i]
        if b.size:
            for j in range(s.size):
                s[j] += b[j]
        swi = sw[i] if sw.size else 1.0
        loss = head_row(h, s, y[i] if y.size else 0, Z[i] if Z.shape[0] else dummy,
                        swi * scale, dS[i], tmp)
        total += swi * loss
        osum += row_weight(i, h)
        if loss_rows.size:
            loss_rows[i] = swi * loss
        if db.size:
            g = dS[i]
            for j in range(g.size):
                db[j] += g[j]
    return total, osum


@jit
def rows_entry(S, mean, scale, b, db, dS, loss_rows, *head):
    """head_rows for Python callers, the pack as flat arguments: Numba's dispatcher types
    those in C, a namedtuple in Python (a microsecond more on every call)."""
    return head_rows(HeadPack(*head), S, mean, scale, b, db, dS, loss_rows)


@pjit
def heads_parallel(S, mean, nblocks, dS, loss_rows, *head):
    """head_rows over nblocks fixed row blocks (one per thread), sums combined in block order:
    the same bits for the same nblocks, however the threads are scheduled (csrc/heads.c)."""
    h = HeadPack(*head)
    B = S.shape[0]
    scale = mean_scale(h, B) if mean else 1.0
    parts = np.zeros((nblocks, 2))
    for t in nb.prange(nblocks):
        parts[t, 0], parts[t, 1] = head_block(h, S, scale, np.empty(0, S.dtype), np.empty(0),
                                              dS, loss_rows, t * B // nblocks,
                                              (t + 1) * B // nblocks)
    return _sum_parts(parts)


@jit
def heads_blocks(S, mean, nblocks, dS, loss_rows, *head):
    """heads_parallel's blocks one after the other (the same bits), in a forked child."""
    h = HeadPack(*head)
    B = S.shape[0]
    scale = mean_scale(h, B) if mean else 1.0
    parts = np.zeros((nblocks, 2))
    for t in range(nblocks):
        parts[t, 0], parts[t, 1] = head_block(h, S, scale, np.empty(0, S.dtype), np.empty(0),
                                              dS, loss_rows, t * B // nblocks,
                                              (t + 1) * B // nblocks)
    return _sum_parts(parts)


@jit
def _sum_parts(parts):
    total = 0.0
    osum = 0.0
    for t in range(parts.shape[0]):
        total += parts[t, 0]
        osum += parts[t, 1]
    return total, osum


# The pack of a call with every option at its default, per (head, target ndim, dtype): built
# once, the target slotted in (the path of every tiny call).
_DEFAULT_PACKS = {}


def _pack(name, S, target, options):
    """The HeadPack every compiled kernel takes (absent arrays are empty)."""
    if options is DEFAULT_OPTIONS[name]:
        key = (name, target.ndim, S.dtype)
        pack = _DEFAULT_PACKS.get(key)
        if pack is None:
            pack = _DEFAULT_PACKS[key] = _full_pack(name, S, target[:0], options)
        fields = ((pack[0], target, *pack[2:]) if key[1] == 1
                  else (*pack[:2], target, *pack[3:]))
        return tuple.__new__(HeadPack, fields)      # (namedtuple's own __new__ is slower)
    return _full_pack(name, S, target, options)


def _full_pack(name, S, target, options):
    return head_pack(name, target, options, _EMPTY[S.dtype], _NO_LABELS, _NO_Z[S.dtype])


_F64 = np.dtype(np.float64)


def _head_kernel(name):
    def kernel(S, target, out, reduction, options):
        B, dt = S.shape[0], S.dtype
        rows = np.empty(B, np.float64) if reduction == "none" else _EMPTY[_F64]
        mean, pack = reduction == "mean", _pack(name, S, target, options)
        nblocks = min(_threads[0], B) if B * S.shape[1] >= TUNING.HEADS_PARALLEL_MIN else 1
        if nblocks > 1:
            entry = heads_blocks if _forked[0] else heads_parallel
            total, osum = entry(S, mean, nblocks, out, rows, *pack)
        else:
            total, osum = rows_entry(S, mean, 1.0, _EMPTY[dt], _EMPTY[_F64], out, rows, *pack)
        if reduction == "none":
            return rows.astype(dt)
        return reduced_loss(total, osum, reduction)

    kernel.__name__ = name
    kernel.__doc__ = f"{name}: one compiled pass over the rows of S."
    return kernel


for _name in DEFAULT_OPTIONS:
    globals()[_name] = _head_kernel(_name)


# ---------------------------------------------------------------------------- linear + head
FUSED_KT_F32, FUSED_KT_F64 = 512, 128    # k tile of the fused rows: the tile's rows stay in L1
TINY_SCORES = TUNING.FUSED_TINY_SCORES    # (a global: compiled in as a constant)


@jit
def _unowned_pack(h):
    """h with its arrays unowned (_unowned): a kernel's per-row copies of the pack are then
    free. The caller's pack owns them."""
    return HeadPack(h.code, _unowned(h.y), _unowned(h.Z), _unowned(h.sample_weight),
                    _unowned(h.weight), _unowned(h.pos_weight), *h[6:])


@jit
def _padded_stride(d, itemsize):
    """A row stride for copies of d-element rows: whole 64-byte lines, an odd number of them,
    so rows of the copies fall in different L1 sets (rows a multiple of 4 KiB apart, as C's
    3072-float rows, share one set: docs/performance.md, "C loop structure")."""
    lines = (d * itemsize + 63) // 64
    return (lines + 1 - lines % 2) * 64 // itemsize


@jit
def linear_rows(h, X, W, b, scale, lo, hi, dW, db, dX):
    """Rows lo..hi of the fused path, four rows and two classes at a time in k tiles (each
    load of x, w or dW feeds two to four multiply-adds; LLVM vectorizes every k loop):
    s_r = W x_r + b, the head in place on s_r, then dW += sum_r g_r x_r^T (partials in X's
    dtype, as BLAS accumulates), db += sum_r g_r (float64), dX[r] = W^T g_r. W, the four rows,
    dW's partials and dX's rows are worked on in copies of padded stride (_padded_stride);
    dW and db (when given) get the rows' sums added at the end. Returns the (loss, omega)
    sums.

    Rule of the k loops: element indices only, unsigned (u, k below), no slices. A slice is an
    atomically reference-counted view (two locked instructions each), and a signed index keeps
    Numba's negative-index wraparound, which LLVM compiles to gathers."""
    n, d = W.shape
    dt = X.dtype
    h = _unowned_pack(h)
    y, Z, sw = h.y, h.Z, h.sample_weight
    dummy = Z.reshape(Z.size)[:0]       # an empty row, contiguous as Z[i]
    ld = _padded_stride(d, X.itemsize)
    kt = FUSED_KT_F32 if X.itemsize == 4 else FUSED_KT_F64
    ud = np.uint64(d)
    # Scratch, one allocation carved into: W's copy Wp, dW's partials of the even and of the
    # odd classes (Pe, Po: two bases, as LLVM checks a loop's writes for overlap over the
    # whole class loop), four rows of X (xs, zero past hi), their dX rows (es), their scores
    # S, and 8-byte words (head_row's scratch, the scores' tile sums, db's sums); each part on
    # a 64-byte line (ld is whole lines), so no vector load spans two lines.
    ne = (n + 1) // 2
    row = ld * X.itemsize
    at_S = (2 * n + 8) * row
    at_words = at_S + (4 * n * X.itemsize + 63) // 64 * 64
    own = np.empty((at_words + 7 * n * 8 + 64) // X.itemsize, dt)
    at = own.ctypes.data
    at += (64 - at % 64) % 64
    Wp = _carve(at, own, (n, ld))
    Pe = _carve(at + n * row, own, (ne, ld))
    Po = _carve(at + (n + ne) * row, own, (n // 2, ld))
    xs = _carve(at + 2 * n * row, own, (4, ld))
    es = _carve(at + (2 * n + 4) * row, own, (4, ld))
    S = _carve(at + at_S, own, (4, n))
    words = _carve(at + at_words, _NO_FLOATS, (7 * n,))
    tmp = words[:2 * n]
    acc = words[2 * n:6 * n].reshape((4, n))
    dbs = words[6 * n:]
    dbs[:] = 0.0
    S[0, 0] = 0.0
    zero = S[0, 0]                         # dt's zero: the k loops accumulate in dt
    for j in range(n):
        for k in range(ud):
            Wp[j, k] = W[j, k]
            (Pe if j % 2 == 0 else Po)[j // 2, k] = zero
    keep = dX.shape[0] > 0
    npair = n - n % 2
    total = 0.0
    osum = 0.0
    for i0 in range(lo, hi, 4):
        cnt = min(4, hi - i0)
        for r in range(4):
            if r < cnt:
                for k in range(ud):
                    xs[r, k] = X[i0 + r, k]
            else:
                for k in range(ud):
                    xs[r, k] = zero
        acc[:] = 0.0
        for k0 in range(0, d, kt):
            u, m = np.uint64(k0), np.uint64(min(kt, d - k0))
            for j in range(0, npair, 2):
                a0 = a1 = a2 = a3 = c0 = c1 = c2 = c3 = zero
                for k in range(u, u + m):
                    w0, w1 = Wp[j, k], Wp[j + 1, k]
                    a0 += xs[0, k] * w0
                    a1 += xs[1, k] * w0
                    a2 += xs[2, k] * w0
                    a3 += xs[3, k] * w0
                    c0 += xs[0, k] * w1
                    c1 += xs[1, k] * w1
                    c2 += xs[2, k] * w1
                    c3 += xs[3, k] * w1
                acc[0, j] += a0
                acc[1, j] += a1
                acc[2, j] += a2
                acc[3, j] += a3
                acc[0, j + 1] += c0
                acc[1, j + 1] += c1
                acc[2, j + 1] += c2
                acc[3, j + 1] += c3
            if npair < n:
                a0 = a1 = a2 = a3 = zero
                for k in range(u, u + m):
                    w0 = Wp[npair, k]
                    a0 += xs[0, k] * w0
                    a1 += xs[1, k] * w0
                    a2 += xs[2, k] * w0
                    a3 += xs[3, k] * w0
                acc[0, npair] += a0
                acc[1, npair] += a1
                acc[2, npair] += a2
                acc[3, npair] += a3
        for r in range(4):
            if r < cnt:
                i = i0 + r
                for j in range(n):
                    S[r, j] = acc[r, j] + (b[j] if b.size else 0.0)
                swi = sw[i] if sw.size else 1.0
                s = S[r]
                total += swi * head_row(h, s, y[i] if y.size else 0,
                                        Z[i] if Z.shape[0] else dummy, swi * scale, s, tmp)
                osum += row_weight(i, h)
            else:
                for j in range(n):
                    S[r, j] = zero
        for j in range(n):
            dbs[j] += (float(S[0, j]) + S[1, j]) + (float(S[2, j]) + S[3, j])
        for k0 in range(0, d, kt):
            u, m = np.uint64(k0), np.uint64(min(kt, d - k0))
            for k in range(u, u + m):
                es[0, k] = es[1, k] = es[2, k] = es[3, k] = zero
            for j in range(0, npair, 2):
                g0, g1, g2, g3 = S[0, j], S[1, j], S[2, j], S[3, j]
                f0, f1, f2, f3 = S[0, j + 1], S[1, j + 1], S[2, j + 1], S[3, j + 1]
                for k in range(u, u + m):
                    w0, w1 = Wp[j, k], Wp[j + 1, k]
                    xa, xb, xc, xd = xs[0, k], xs[1, k], xs[2, k], xs[3, k]
                    es[0, k] += g0 * w0 + f0 * w1
                    es[1, k] += g1 * w0 + f1 * w1
                    es[2, k] += g2 * w0 + f2 * w1
                    es[3, k] += g3 * w0 + f3 * w1
                    Pe[j // 2, k] += (g0 * xa + g1 * xb) + (g2 * xc + g3 * xd)
                    Po[j // 2, k] += (f0 * xa + f1 * xb) + (f2 * xc + f3 * xd)
            if npair < n:
                g0, g1, g2, g3 = S[0, npair], S[1, npair], S[2, npair], S[3, npair]
                for k in range(u, u + m):
                    w0 = Wp[npair, k]
                    xa, xb, xc, xd = xs[0, k], xs[1, k], xs[2, k], xs[3, k]
                    es[0, k] += g0 * w0
                    es[1, k] += g1 * w0
                    es[2, k] += g2 * w0
                    es[3, k] += g3 * w0
                    Pe[npair // 2, k] += (g0 * xa + g1 * xb) + (g2 * xc + g3 * xd)
            if keep:
                for r in range(cnt):
                    for k in range(u, u + m):
                        dX[i0 + r, k] = es[r, k]
    for j in range(n):
        for k in range(ud):
            dW[j, k] += (Pe if j % 2 == 0 else Po)[j // 2, k]
        if db.size:
            db[j] += dbs[j]
    _keep(own)
    return total, osum


@jit
def linear_rows_tiny(h, X, W, b, scale, lo, hi, dW, db, dX):
    """linear_rows for a few scores (B n <= FUSED_TINY_SCORES), one row at a time on the
    caller's arrays: no copies, tiles or blocks, whose setup is most of such a call. The same
    sums: s_i = W x_i + b, the head in place, dW += g_i x_i^T, db += g_i (float64),
    dX[i] = W^T g_i."""
    n, d = W.shape
    h = _unowned_pack(h)
    y, Z, sw = h.y, h.Z, h.sample_weight
    dummy = Z.reshape(Z.size)[:0]       # an empty row, contiguous as Z[i]
    own = np.empty(3 * n * 8 // X.itemsize + n, X.dtype)     # 3 n float64s, then s
    at = own.ctypes.data
    words = _carve(at, _NO_FLOATS, (3 * n,))
    s = _carve(at + 3 * n * 8, own, (n,))
    tmp = words[:2 * n]                 # head_row's scratch
    dbs = words[2 * n:]
    dbs[:] = 0.0
    s[0] = 0.0
    zero = s[0]                         # X's dtype: the products accumulate in it
    ud = np.uint64(d)
    keep = dX.shape[0] > 0
    total = 0.0
    osum = 0.0
    for i in range(lo, hi):
        for j in range(n):
            a = zero
            for k in range(ud):
                a += W[j, k] * X[i, k]
            s[j] = a + (b[j] if b.size else 0.0)
        swi = sw[i] if sw.size else 1.0
        total += swi * head_row(h, s, y[i] if y.size else 0, Z[i] if Z.shape[0] else dummy,
                                swi * scale, s, tmp)
        osum += row_weight(i, h)
        for j in range(n):
            g = s[j]
            dbs[j] += g
            for k in range(ud):
                dW[j, k] += g * X[i, k]
        if keep:
            for k in range(ud):
                dX[i, k] = s[0] * W[0, k]
            for j in range(1, n):
                g = s[j]
                for k in range(ud):
                    dX[i, k] += g * W[j, k]
    if db.size:
        for j in range(n):
            db[j] += dbs[j]
    _keep(own)
    return total, osum


@jit
def _fused_scratch(h, X, W, mean, nblocks):
    """The mean scale and zeroed partials (dW in X's dtype; db and (loss, omega) in float64) of
    nblocks blocks."""
    n, d = W.shape
    scale = mean_scale(h, X.shape[0]) if mean else 1.0
    return (scale, np.zeros((nblocks, n, d), X.dtype), np.zeros((nblocks, n)),
            np.zeros((nblocks, 2)))


@jit
def _fused_combine(pdW, pdb, parts, dW, db):
    """The blocks' partials summed in block order into dW and db: returns (loss, omega)."""
    for t in range(1, parts.shape[0]):
        pdW[0] += pdW[t]
        pdb[0] += pdb[t]
        parts[0] += parts[t]
    for j in range(dW.shape[0]):
        for k in range(dW.shape[1]):
            dW[j, k] = pdW[0, j, k]
        if db.size:
            db[j] = pdb[0, j]
    return parts[0, 0], parts[0, 1]


@pjit
def linear_fused(X, W, b, mean, nblocks, dW, db, dX, *head):
    """The fused path over nblocks fixed row blocks (one per thread), partials combined in
    block order: the same bits for the same nblocks, however the threads are scheduled."""
    h = HeadPack(*head)
    B = X.shape[0]
    scale, pdW, pdb, parts = _fused_scratch(h, X, W, mean, nblocks)
    for t in nb.prange(nblocks):
        parts[t, 0], parts[t, 1] = linear_rows(
            h, X, W, b, scale, t * B // nblocks, (t + 1) * B // nblocks, pdW[t], pdb[t], dX)
    return _fused_combine(pdW, pdb, parts, dW, db)


@jit
def linear_fused_blocks(X, W, b, mean, nblocks, dW, db, dX, *head):
    """linear_fused's blocks one after the other on the calling thread (the same bits), for a
    process forked after Numba's threads ran: Numba's OpenMP layer aborts a forked child's
    parallel region (libgomp would wait for a pool the child does not have)."""
    h = HeadPack(*head)
    B = X.shape[0]
    scale, pdW, pdb, parts = _fused_scratch(h, X, W, mean, nblocks)
    for t in range(nblocks):
        parts[t, 0], parts[t, 1] = linear_rows(
            h, X, W, b, scale, t * B // nblocks, (t + 1) * B // nblocks, pdW[t], pdb[t], dX)
    return _fused_combine(pdW, pdb, parts, dW, db)


_forked = [False]       # set in a forked child: linear_fused_blocks instead of linear_fused
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _forked.__setitem__(0, True))


@jit
def linear_fused_serial(X, W, b, mean, dW, db, dX, *head):
    """linear_fused on one thread without a parallel region (tiny problems): the rows add
    into dW and db, zeroed here."""
    h = HeadPack(*head)
    scale = mean_scale(h, X.shape[0]) if mean else 1.0
    dW[:] = 0.0
    db[:] = 0.0
    if X.shape[0] * W.shape[0] <= TINY_SCORES:
        return linear_rows_tiny(h, X, W, b, scale, 0, X.shape[0], dW, db, dX)
    return linear_rows(h, X, W, b, scale, 0, X.shape[0], dW, db, dX)




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
                    funcs.append(nb.cfunc(sig, **_OPTS)(_fused_c))
                _CALLBACKS.append((funcs, tuple(f.address for f in funcs)))
    return _CALLBACKS[0][1]


# Numba's dispatch of the fused rows alone costs more than the checks, so tiny calls go
# through csrc/fastcall.c and the C callbacks above when it was built
# (not under NUMBA_DISABLE_JIT: there is no machine code to call then).
fast_linear_head = None if nb.config.DISABLE_JIT else fast_entry(TUNING,
                                                                 _fused_cfuncs)


def linear_head(X, W, b, target, head, options, reduction, chunk_rows, dW, db, dX,
                threads=None, filter_eps=0.0):
    """``threads``: row blocks of the fused path (default: get_num_threads(); 1 inside a
    BLAS-driven network, so Numba's threads never wait on BLAS's spinning ones).
    ``filter_eps`` > 0: the row blocks' backward skips inactive classes (the fused rows and
    column blocks stay exact)."""
    (B, d), n, dt = X.shape, W.shape[0], X.dtype
    h = _pack(head, X, target, options)
    mean = reduction == "mean"
    b_ = _EMPTY[dt] if b is None else b
    threads = _threads[0] if threads is None else threads
    T = TUNING
    min_work = T.FUSED_MIN_WORK if dt.itemsize == 8 else T.FUSED_MIN_WORK_F32
    if n * d <= T.FUSED_ANY_N_WEIGHTS or (
            threads > 1 and n <= T.FUSED_MAX_N and B >= T.FUSED_MIN_ROWS
            and B * n * d >= max(min_work, T.PARALLEL_MIN_WORK)):
        db_ = _EMPTY[dt] if db is None else db
        dX_ = _NO_Z[dt] if dX is None else dX
        if threads == 1 or B * n * d < T.PARALLEL_MIN_WORK or B < 2 * threads:
            total, osum = linear_fused_serial(X, W, b_, mean, dW, db_, dX_, *h)
        elif _forked[0]:
            total, osum = linear_fused_blocks(X, W, b_, mean, threads, dW, db_, dX_, *h)
        else:
            total, osum = linear_fused(X, W, b_, mean, threads, dW, db_, dX_, *h)
    else:
        rows, cols = score_blocks(head, B, n, dt.itemsize, chunk_rows, options)
        if cols < n:
            total, osum = _linear_columns(h, X, W, b_, mean, rows, cols, dW, db, dX)
        elif B and rows >= B:
            db_ = _EMPTY[dt] if db is None else db
            dX_ = _NO_Z[dt] if dX is None else dX
            total, osum = linear_one_block(X, W, b_, mean, dW, db_, dX_, *h)
        else:
            total, osum = _linear_chunked(h, X, W, b_, mean, rows, dW, db, dX,
                                          filter_eps)
    return reduced_loss(total, osum, reduction)


@jit
def linear_one_block(X, W, b, mean, dW, db, dX, *head):
    """The chunked path when the whole batch is one block of scores, in one compiled call (no
    Python between the products: at B=64, d=64, n=10 the chunked path's glue cost more than
    its arithmetic): S = X W^T, bias + head in place, dW = S^T X, db, dX = S W."""
    h = HeadPack(*head)
    S = np.empty((X.shape[0], W.shape[0]), X.dtype)
    gemm(S, X, W, False, True)
    db64 = np.zeros(W.shape[0]) if db.size else np.empty(0)
    total, osum = head_rows(h, S, mean, 1.0, b, db64, S, np.empty(0))
    gemm(dW, S, X, True, False)
    for j in range(db.size):
        db[j] = db64[j]
    if dX.size:
        gemm(dX, S, W)
    return total, osum


@jit
def filtered_products(block, rows, Xc, W, dW, dXc, thr, Wg, Tg, idx, *head):
    """filter_eps's backward for one block of rows whose gradient is block[:rows] (as
    csrc/linear.c's filtered_products): only the classes with some |g_ij| >= thr omega_i take
    part in dW += G^T X_c and dX_c = G W, packed in place at the front of the block, W's rows
    and dW's partials in groups of Wg's rows; mostly active blocks take the dense products, with
    the inactive classes' entries zeroed."""
    h = HeadPack(*head)
    n, d, group = W.shape[0], W.shape[1], Wg.shape[0]
    S = block[:rows]
    active = np.zeros(n, np.bool_)
    for r in range(rows):
        t = thr * row_weight(r, h)
        for j in range(n):
            g = S[r, j]
            if g != 0 and not abs(g) < t:               # NaN is kept, as an active entry
                active[j] = True
    na = 0
    for j in range(n):
        if active[j]:
            idx[na] = j
            na += 1
    if 2 * na > n:                      # mostly active: the dense products, the rest zeroed
        for r in range(rows):
            for j in range(n):
                if not active[j]:
                    S[r, j] = 0
        gemm(dW, S, Xc, True, False, 1.0)
        if dXc.size:
            gemm(dXc, S, W)
        return
    flat = block.reshape(-1)
    for r in range(rows):
        for k in range(na):
            flat[r * na + k] = flat[r * n + idx[k]]
    G = flat[:rows * na].reshape((rows, na))
    if dXc.size and na == 0:
        dXc[...] = 0
    for g0 in range(0, na, group):
        ng = min(group, na - g0)
        for k in range(ng):
            Wg[k] = W[idx[g0 + k]]
        gemm(Tg[:ng], G[:, g0:g0 + ng], Xc, True, False)
        for k in range(ng):
            dW[idx[g0 + k]] += Tg[k]
        if dXc.size:
            gemm(dXc, G[:, g0:g0 + ng], Wg[:ng], False, False, 1.0 if g0 else 0.0)


def _rows_of(h, rows):
    """The pack for a block of rows: its labels, targets and sample weights (absent stay empty)."""
    return h._replace(**{k: getattr(h, k)[rows] for k in ("y", "Z", "sample_weight")
                         if getattr(h, k).size})


def _linear_chunked(h, X, W, b, mean, chunk, dW, db, dX, filter_eps=0.0):
    """Per row block: S = X_c W^T (BLAS), bias + head in place (one compiled pass, db in
    float64), dW += S^T X_c, dX_c = S W (BLAS). Only one block of scores is ever held.
    filter_eps > 0: the two backward products on the block's active classes only
    (filtered_products, csrc/linear.c's), within one more half of the block's bytes."""
    B, (n, d), dt = X.shape[0], W.shape, X.dtype
    scale = mean_scale(h, B) if mean else 1.0
    chunk = min(chunk, max(B, 1))
    block = np.empty((chunk, n), dt)
    db64 = np.zeros(n) if db is not None else _EMPTY[_F64]
    if filter_eps:
        group = min(n, max(1, chunk * n // (4 * max(d, 1))))
        Wg, Tg, idx = np.empty((group, d), dt), np.empty((group, d), dt), np.empty(n, np.intp)
    total = osum = 0.0
    dW[...] = 0
    for lo in range(0, B, chunk):
        hi = min(lo + chunk, B)
        S, Xc = block[:hi - lo], X[lo:hi]
        gemm(S, Xc, W, trans_b=True)
        hc = _rows_of(h, slice(lo, hi))
        t, o = rows_entry(S, False, scale, b, db64, S, _EMPTY[_F64], *hc)
        total += t
        osum += o
        dXc = _NO_Z[dt] if dX is None else dX[lo:hi]
        if filter_eps:
            filtered_products(block, hi - lo, Xc, W, dW, dXc, filter_eps * scale, Wg, Tg, idx,
                              *hc)
            continue
        gemm(dW, S, Xc, trans_a=True, beta=1.0)
        if dX is not None:
            gemm(dXc, S, W)
    if db is not None:
        with np.errstate(over="ignore"):       # a diverging run's inf is the answer
            db[...] = db64
    return total, osum


@jit
def softmax_c(z, w, eps, n, yi, j):
    """C_j of softmax_row (labels yi or probability row z; j a class index)."""
    t = z[j] if z.size else (1.0 if j == yi else 0.0)
    return (w[j] if w.size else 1.0) * ((1.0 - eps) * t + eps / n)


@jit
def softmax_cols_stats(s, c0, n, z, yi, w, eps, st, x):
    """Pass 1 of the column blocks on s = scores c0.. of one row (bias added): over the blocks
    seen so far, st = (M, r, rest, m): the first argmax m (value M), r = sum_{j != m}
    exp(s_j - M), rest = sum_{j != m} C_j. A block whose maximum beats M (or is the first NaN)
    moves the old maximum's term into both sums, r rescaled by exp(M_old - M); a running M of
    -inf means every term so far is exp(-inf) = 0."""
    nc = s.size
    plain = not z.size and not w.size and eps == 0      # C = e_y: rest is not needed
    mc = argmax(s)
    Mc, M = s[mc], st[0]
    wins = c0 == 0 or Mc > M or (Mc != Mc and M == M)
    ref = Mc if wins else M
    for j in range(nc):
        x[j] = s[j] - ref
    vexp(x[:nc])
    if wins:
        x[mc] = 0.0
    total = 0.0
    for j in range(nc):
        total += x[j]
    csum = 0.0
    if not plain:
        for j in range(nc):
            csum += 0.0 if wins and j == mc else softmax_c(z, w, eps, n, yi, c0 + j)
    if not wins:
        st[1] += total
        st[2] += csum
        return
    if c0 == 0:
        st[1] = total
        st[2] = csum
    else:               # the old maximum joins the sums
        st[1] = (0.0 if M == -np.inf else (st[1] + 1.0) * math.exp(M - Mc)) + total
        st[2] += (0.0 if plain else softmax_c(z, w, eps, n, yi, int(st[3]))) + csum
    st[0] = Mc
    st[3] = c0 + mc


@jit
def softmax_cols_grad(s, c0, n, z, yi, w, eps, f, st, x):
    """Pass 2, in place on one row's block (bias added): g_j = f (total p_j - C_j), g_m and the
    loss as softmax_row's. Returns the block's part of lin = sum_j C_j (M - s_j)."""
    nc = s.size
    M, rr, rest, m = st[0], st[1], st[2], int(st[3])
    inv = 1.0 / (1.0 + rr)
    for j in range(nc):
        x[j] = s[j] - M
    part = 0.0
    if not z.size and not w.size and eps == 0:          # plain labels: C = e_y
        if c0 <= yi < c0 + nc:
            part = -x[yi - c0]
        vexp(x[:nc])
        fi = f * inv
        for j in range(nc):
            s[j] = fi * x[j]
        if c0 <= yi < c0 + nc and yi != m:
            s[yi - c0] = fi * x[yi - c0] - f
        if c0 <= m < c0 + nc:
            s[m - c0] = -f * (rr * inv) if m == yi else fi
        return part
    c_m = softmax_c(z, w, eps, n, yi, m)
    ft = f * (rest + c_m) * inv
    for j in range(nc):
        c = softmax_c(z, w, eps, n, yi, c0 + j)
        part -= c * x[j] if c != 0 else 0.0
    vexp(x[:nc])
    for j in range(nc):
        s[j] = ft * x[j] - f * softmax_c(z, w, eps, n, yi, c0 + j)
    if c0 <= m < c0 + nc:
        s[m - c0] = f * ((rest - c_m * rr) * inv)
    return part


@jit
def softmax_cols_block(second, S, c0, n, b, h, scale, st, lin, db, x):
    """One column block S (scores c0.. of a panel's rows) in place: bias, then pass 1's
    statistics or (second) pass 2's gradient, lin[r] += its part of the loss, db += sum_r g.
    Ignored rows get a zero gradient (h: the panel's rows)."""
    y, Z, sw, w = h.y, h.Z, h.sample_weight, h.weight
    ignore, eps = h.ignore_index, h.label_smoothing
    dummy = np.empty(0, S.dtype)
    for r in range(S.shape[0]):
        s = S[r]
        if y.size and y[r] == ignore:
            s[:] = 0
            continue
        if b.size:
            for j in range(s.size):
                s[j] += b[c0 + j]
        z = Z[r] if Z.shape[0] else dummy
        yi = y[r] if y.size else 0
        if not second:
            softmax_cols_stats(s, c0, n, z, yi, w, eps, st[r], x)
            continue
        f = (sw[r] if sw.size else 1.0) * scale
        lin[r] = (lin[r] if c0 else 0.0) + softmax_cols_grad(s, c0, n, z, yi, w, eps, f, st[r],
                                                             x)
        if db.size:
            for j in range(s.size):
                db[c0 + j] += s[j]


@jit
def softmax_cols_loss(st, lin, h, n):
    """The panel's (sum_r sw_r l_r, sum_r omega_r): l = lin + total log1p(r)."""
    y, Z, sw, w = h.y, h.Z, h.sample_weight, h.weight
    ignore, eps = h.ignore_index, h.label_smoothing
    plain = not Z.size and not w.size and eps == 0
    dummy = np.empty(0, Z.dtype)
    total = 0.0
    osum = 0.0
    for r in range(st.shape[0]):
        osum += row_weight(r, h)
        if y.size and y[r] == ignore:
            continue
        mult = 1.0
        if not plain:
            z = Z[r] if Z.shape[0] else dummy
            mult = st[r, 2] + softmax_c(z, w, eps, n, y[r] if y.size else 0, int(st[r, 3]))
        total += (sw[r] if sw.size else 1.0) * (lin[r] + mult * math.log1p(st[r, 1]))
    return total, osum


def _linear_columns(h, X, W, b, mean, rows, cols, dW, db, dX):
    """softmax_nll in blocks of (rows, cols) scores, cols < n, as csrc/linear.c's
    linear_columns: per panel of rows X_p, pass 1 per column block S = X_p W_c^T + b_c and the
    rows' statistics; pass 2 S again, the gradient in place, dW_c += S^T X_p, dX_p += S W_c.
    st: per row M, r, rest and the argmax (as a float: exact below 2^53)."""
    B, n, dt = X.shape[0], W.shape[0], X.dtype
    scale = mean_scale(h, B) if mean else 1.0
    rows = min(rows, max(B, 1))
    flat = np.empty(rows * cols, dt)          # a block of any shape, C-contiguous for BLAS
    st, lin = np.empty((rows, 4)), np.empty(rows)
    x = np.empty(cols)
    db64 = np.zeros(n) if db is not None else _EMPTY[_F64]
    total = osum = 0.0
    if B == 0:
        dW[...] = 0
    for lo in range(0, B, rows):
        hi = min(lo + rows, B)
        Xp, hp = X[lo:hi], _rows_of(h, slice(lo, hi))
        for second in (False, True):
            for c0 in range(0, n, cols):
                c1 = min(c0 + cols, n)
                S, Wc = flat[:(hi - lo) * (c1 - c0)].reshape(hi - lo, c1 - c0), W[c0:c1]
                gemm(S, Xp, Wc, trans_b=True)
                softmax_cols_block(second, S, c0, n, b, hp, scale, st, lin, db64, x)
                if not second:
                    continue
                gemm(dW[c0:c1], S, Xp, trans_a=True, beta=1.0 if lo else 0.0)
                if dX is not None:
                    gemm(dX[lo:hi], S, Wc, beta=1.0 if c0 else 0.0)
        t, o = softmax_cols_loss(st[:hi - lo], lin, hp, n)
        total += t
        osum += o
    if db is not None:
        with np.errstate(over="ignore"):
            db[...] = db64
    return total, osum


# ---------------------------------------------------------------------------- layers
@jit
def bias_activate(S, b, code, alpha):
    """A = f(S + b), in place on S (one pass after the GEMM)."""
    for i in range(S.shape[0]):
        s = S[i]
        for j in range(s.size):
            s[j] = activate(code, s[j] + b[j] if b.size else s[j], alpha)


@jit
def bias_maxout(S, b, k, A, winners):
    """A[i, u] = max_p S[i, p*n + u] + b[p*n + u] (first maximum; a NaN piece wins); winners
    gets the winning p."""
    n = A.shape[1]
    for i in range(S.shape[0]):
        for u in range(n):
            best = 0
            M = S[i, u] + (b[u] if b.size else 0.0)
            for q in range(1, k):
                v = S[i, q * n + u] + (b[q * n + u] if b.size else 0.0)
                if v > M or (v != v and M == M):
                    best, M = q, v
            A[i, u] = M
            winners[i, u] = best


@jit
def activation_backward(dA, A, code, alpha, dS, db):
    """dS = dA * f'(a) and db (float64, if given) += sum_i dS[i], in one pass."""
    for i in range(dA.shape[0]):
        for j in range(dA.shape[1]):
            g = dA[i, j] * activation_grad(code, A[i, j], alpha)
            dS[i, j] = g
            if db.size:
                db[j] += g


@jit
def maxout_backward(dA, argmax, k, dS, db):
    """dS: dA routed to the winning piece, zero elsewhere; db += sum_i dS[i]."""
    n = dA.shape[1]
    dS[:] = 0
    for i in range(dA.shape[0]):
        for u in range(n):
            col = argmax[i, u] * n + u
            dS[i, col] = dA[i, u]
            if db.size:
                db[col] += dA[i, u]


def linear_act_forward(X, W, b, activation, alpha):
    dt = X.dtype
    S = np.empty((X.shape[0], W.shape[0]), dt)
    gemm(S, X, W, trans_b=True)
    b_ = _EMPTY[dt] if b is None else b
    if activation == "maxout":
        A = np.empty((X.shape[0], W.shape[0] // alpha), dt)
        winners = np.empty(A.shape, np.intp)
        bias_maxout(S, b_, alpha, A, winners)
        return A, winners
    bias_activate(S, b_, ACT_CODES[activation], 0.0 if alpha is None else alpha)
    return S, None


def _backward_dS(dA, cache, db):
    """dS of a linear+activation layer, and db (if wanted) in the same pass."""
    db64 = np.zeros(cache.W.shape[0]) if db is not None else _EMPTY[_F64]
    dS = np.empty((dA.shape[0], cache.W.shape[0]), dA.dtype)
    if cache.activation == "maxout":
        maxout_backward(dA, cache.argmax, cache.alpha, dS, db64)
    else:
        activation_backward(dA, cache.A, ACT_CODES[cache.activation],
                            0.0 if cache.alpha is None else cache.alpha, dS, db64)
    if db is not None:
        with np.errstate(over="ignore"):
            db[...] = db64
    return dS


def linear_act_backward(dA, cache, dX, dW, db):
    dS = _backward_dS(dA, cache, db)
    gemm(dW, dS, cache.X, trans_a=True)
    if dX is not None:
        gemm(dX, dS, cache.W)


def mlp_forward(X, params, activation, alpha):
    return _compose.mlp_forward(sys.modules[__name__], X, params, activation, alpha)


def mlp_loss_grad(X, params, target, activation, alpha, head, options, reduction, grads):
    """The last layer's fused kernel runs on one thread when hidden layers exist: their GEMMs
    are BLAS's, and Numba's threads must not wait on BLAS's spinning ones."""
    return _compose.mlp_loss_grad(sys.modules[__name__], X, params, target, activation, alpha,
                                  head, options, reduction, grads,
                                  threads=1 if len(params) > 1 else None)



# ---------------------------------------------------------------------------- training step
_SGD, _ADAM = 0, 1


@jit
def optimizer_update(p, g, s1, s2, kind, lr, momentum, nesterov, wd, b1, b2, eps, t):
    """One parameter array, in place: torch's SGD (s1 = momentum buffer) or Adam (s1 = m,
    s2 = v), the formulas of fastbp.model term for term (weight decay: g + wd p)."""
    p, g, s1, s2 = p.reshape(-1), g.reshape(-1), s1.reshape(-1), s2.reshape(-1)
    inv_bc2 = 1.0 / math.sqrt(1.0 - b2 ** t) if kind == _ADAM else 1.0
    step1 = lr / (1.0 - b1 ** t) if kind == _ADAM else lr
    for i in range(p.size):
        gi = g[i] + wd * p[i] if wd != 0 else g[i]
        if kind == _ADAM:
            m_ = b1 * s1[i] + (1.0 - b1) * gi
            v_ = b2 * s2[i] + (1.0 - b2) * (gi * gi)
            s1[i] = m_
            s2[i] = v_
            p[i] -= step1 * (m_ / (math.sqrt(v_) * inv_bc2 + eps))
        elif momentum != 0:
            v_ = gi if t == 1 else momentum * s1[i] + gi
            s1[i] = v_
            p[i] -= lr * (gi + momentum * v_ if nesterov else v_)
        else:
            p[i] -= lr * gi


@jit
def mlp_step_kernel(X, Ws, bs, dWs, dbs, act, alpha, mean, s1W, s1b, s2W, s2b, kind, lr,
                    momentum, nesterov, wd, b1, b2, adam_eps, t, *head):
    """A whole training step in one call: forward (BLAS products, bias + activation fused),
    the head in place on the last scores, backward (dh * f'(a) fused with the next layer's
    gradient), then the optimizer on every W and b. Returns the loss sums (total, omega)."""
    return _mlp_step(_unowned_pack(HeadPack(*head)), X, Ws, bs, dWs, dbs, act, alpha, mean,
                     s1W, s1b, s2W, s2b, kind, lr, momentum, nesterov, wd, b1, b2, adam_eps, t)


@jit
def mlp_epoch_kernel(X, Ws, bs, dWs, dbs, act, alpha, mean, s1W, s1b, s2W, s2b, kind, lr,
                     momentum, nesterov, wd, b1, b2, adam_eps, t0, batch, sums, *head):
    """mlp_step_kernel on each block of ``batch`` consecutive rows (the head's per-row arrays
    sliced alike) with step counts t0 + 1, t0 + 2, ...: the epoch in one call (a call from
    Python costs more than a small step). sums[s]: block s's loss sums (total, omega)."""
    h = _unowned_pack(HeadPack(*head))
    for s, lo in enumerate(range(0, X.shape[0], batch)):
        hi = min(lo + batch, X.shape[0])
        hb = HeadPack(h.code, h.y[lo:hi] if h.y.size else h.y, h.Z[lo:hi] if h.Z.shape[0] else h.Z,
                      h.sample_weight[lo:hi] if h.sample_weight.size else h.sample_weight,
                      h.weight, h.pos_weight, *h[6:])
        sums[s, 0], sums[s, 1] = _mlp_step(hb, X[lo:hi], Ws, bs, dWs, dbs, act, alpha, mean,
                                           s1W, s1b, s2W, s2b, kind, lr, momentum, nesterov,
                                           wd, b1, b2, adam_eps, t0 + s + 1)


@jit
def _mlp_step(h, X, Ws, bs, dWs, dbs, act, alpha, mean, s1W, s1b, s2W, s2b, kind, lr, momentum,
              nesterov, wd, b1, b2, adam_eps, t):
    """mlp_step_kernel on a HeadPack."""
    L = len(Ws)
    B = X.shape[0]
    hs = [X]
    for l in range(L - 1):
        W, b = Ws[l], bs[l]
        S = np.empty((B, W.shape[0]), X.dtype)
        gemm(S, hs[l], W, False, True)
        for i in range(B):
            for j in range(S.shape[1]):
                S[i, j] = activate(act, S[i, j] + b[j], alpha)
        hs.append(S)
    W, b = Ws[L - 1], bs[L - 1]
    G = np.empty((B, W.shape[0]), X.dtype)
    gemm(G, hs[L - 1], W, False, True)
    total, osum = head_rows(h, G, mean, 1.0, b, np.empty(0), G, np.empty(0))
    for l in range(L - 1, -1, -1):
        gemm(dWs[l], G, hs[l], True, False)
        db = dbs[l]
        db[:] = 0.0
        for i in range(B):
            for j in range(G.shape[1]):
                db[j] += G[i, j]
        if l > 0:
            A = hs[l]
            dh = np.empty_like(A)
            gemm(dh, G, Ws[l])
            for i in range(B):
                for j in range(A.shape[1]):
                    dh[i, j] *= activation_grad(act, A[i, j], alpha)
            G = dh
    for l in range(L):
        optimizer_update(Ws[l], dWs[l], s1W[l], s2W[l], kind, lr, momentum, nesterov, wd, b1,
                         b2, adam_eps, t)
        optimizer_update(bs[l], dbs[l], s1b[l], s2b[l], kind, lr, momentum, nesterov, wd, b1,
                         b2, adam_eps, t)
    return total, osum


def mlp_step(X, params, target, activation, alpha, head, options, reduction, grads, optimizer):
    """One compiled call for SGD / Adam on elementwise activations; otherwise mlp_loss_grad
    and the optimizer's own update."""
    if not _compiled_steps(X, activation, optimizer):
        return _compose.mlp_step(sys.modules[__name__], X, params, target, activation, alpha,
                                 head, options, reduction, grads, optimizer)
    total, osum = mlp_step_kernel(
        X, *_step_args(params, activation, alpha, reduction, grads, optimizer, 1),
        *_pack(head, X, target, options))
    return reduced_loss(total, osum, reduction)


def mlp_epoch(X, params, target, activation, alpha, head, options, reduction, grads, optimizer,
              batch_size):
    """Every step of the epoch in one compiled call where mlp_step runs one, else mlp_step
    per batch."""
    if not _compiled_steps(X, activation, optimizer):
        return _compose.mlp_epoch(sys.modules[__name__], X, params, target, activation, alpha,
                                  head, options, reduction, grads, optimizer, batch_size)
    steps = -(-X.shape[0] // batch_size)
    sums = np.empty((steps, 2))
    mlp_epoch_kernel(X, *_step_args(params, activation, alpha, reduction, grads, optimizer,
                                    steps)[:-1], optimizer.t - steps, batch_size, sums,
                     *_pack(head, X, target, options))
    return [reduced_loss(total, osum, reduction) for total, osum in sums]


def _compiled_steps(X, activation, optimizer):
    """Whether mlp_step_kernel runs these steps: SGD or Adam, an elementwise activation."""
    return (getattr(optimizer, "kind", None) in ("sgd", "adam") and activation != "maxout"
            and X.shape[0] > 0)


def _step_args(params, activation, alpha, reduction, grads, optimizer, steps):
    """mlp_step_kernel's arguments after X and before the head, for the optimizer's next
    ``steps`` updates (counted here): the last one is the step count of the first."""
    kind = _SGD if optimizer.kind == "sgd" else _ADAM
    flat = [a for pair in params for a in pair]
    optimizer.begin(flat, steps)
    state = [s if kind == _ADAM else (s if s is not None else p, p)
             for s, p in zip(optimizer.state, flat)]        # SGD without momentum: unused
    s1, s2 = [s[0] for s in state], [s[1] for s in state]
    return (tuple(flat[0::2]), tuple(flat[1::2]), tuple(g for g, _ in grads),
            tuple(g for _, g in grads), ACT_CODES[activation], 0.0 if alpha is None else alpha,
            reduction == "mean", tuple(s1[0::2]), tuple(s1[1::2]), tuple(s2[0::2]),
            tuple(s2[1::2]), kind, optimizer.lr, getattr(optimizer, "momentum", 0.0),
            getattr(optimizer, "nesterov", False), optimizer.weight_decay,
            *getattr(optimizer, "betas", (0.0, 0.0)), getattr(optimizer, "eps", 0.0),
            optimizer.t - steps + 1)
