"""Heads on scores (csrc/heads.c): the rows of S through ``rows.head_row``, on one thread or over
fixed row blocks whose sums are combined in block order (the same bits run to run)."""
import numba as nb
import numpy as np

from ..._registry import SCALARS_AT, HeadPack
from .rows import BHINGE, head_row, relu, row_weight, step
from .runtime import Twins, _unowned
from ._jit import jit

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


def heads_blocks(S, mean, nblocks, dS, loss_rows, *head):
    """head_rows over nblocks fixed row blocks (one per thread), sums combined in block order:
    the same bits for the same nblocks, however the threads are scheduled, and in order (a
    forked child: the serial twin) (csrc/heads.c)."""
    h = HeadPack(*head)
    B = S.shape[0]
    scale = mean_scale(h, B) if mean else 1.0
    parts = np.zeros((nblocks, 2))
    for t in nb.prange(nblocks):
        parts[t, 0], parts[t, 1] = head_block(h, S, scale, np.empty(0, S.dtype), np.empty(0),
                                              dS, loss_rows, t * B // nblocks,
                                              (t + 1) * B // nblocks)
    return _sum_parts(parts)


heads_blocks = Twins(heads_blocks)


@jit
def _sum_parts(parts):
    total = 0.0
    osum = 0.0
    for t in range(parts.shape[0]):
        total += parts[t, 0]
        osum += parts[t, 1]
    return total, osum


@jit
def _unowned_pack(h):
    """h with its arrays unowned (_unowned): a kernel's per-row copies of the pack are then
    free. The caller's pack owns them."""
    return HeadPack(h.code, _unowned(h.y), _unowned(h.Z), _unowned(h.sample_weight),
                    _unowned(h.weight), _unowned(h.pos_weight), *h[SCALARS_AT:])
