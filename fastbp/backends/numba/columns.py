"""softmax_nll's column blocks (csrc/linear.c's linear_columns): a panel of rows in blocks of
columns, two passes -- first each row's running maximum, exp-sum and weight sum, then the
gradient with the scores recomputed -- for a vocabulary too large for whole rows of scores.
The driver, which calls BLAS between these, is ``linear.linear_columns``."""
import math

import numpy as np

from .rows import argmax, row_weight, vexp
from ._jit import jit


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
