"""A head's row math (csrc/rows.h): one row of scores in, its class-weighted loss out and
``f`` times its gradient written to ``g`` (which may be the scores themselves: each ``s[j]`` is
read before ``g[j]`` is written). ``f`` carries the sample weight and the "mean" scale, so a row
is written once. The formulas are the reference backend's term for term (docs/math.md), so
float64 results agree to rounding; sums run in float64.
"""
import math

import numba as nb
import numpy as np
from llvmlite import ir as _ir
from numba.extending import intrinsic

from .._args import CODES
from ._jit import inline, jit

# head codes, as globals the compiled code reads as constants
SOFTMAX, SOFTMAX_PROBS, MHINGE, BHINGE, BCE, SIGMOID_L2, L2, L1, NLL, HUBER, FOCAL = (
    CODES[c] for c in ("SOFTMAX", "SOFTMAX_PROBS", "MHINGE", "BHINGE", "BCE", "SIGMOID_L2", "L2",
                       "L1", "NLL", "HUBER", "FOCAL"))


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


if nb.config.DISABLE_JIT:       # interpreted: the bits through NumPy
    def _as_float64(i):
        return np.int64(i).view(np.float64)


@inline
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


@inline
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


@inline
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


@inline
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


@inline
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


@inline
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
