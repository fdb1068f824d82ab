"""linear + head and linear + activation (csrc/linear.c): the fused rows (scores, head, dW, db,
dX in one pass over four rows at a time), the whole batch as one block of BLAS products, the
chunked path's team steps and the filtered backward of a row block (compiled), and linear.c's
drivers between them (Python: chunked_rows, linear_columns, linear_loss, the layers).
softmax_nll's column block rows are in columns.py, the own products in products.py."""

import contextlib

import numba as nb
import numpy as np

from ..._registry import HeadPack
from ..tuning import Numba as TUNING
from .heads import _unowned_pack, head_block, head_rows, mean_scale
from .rows import head_row, row_weight
from .products import scores
from .._args import ACT_CODES
from .columns import softmax_cols_block, softmax_cols_loss
from .mlp import activation_backward, bias_activate, bias_maxout, maxout_backward
from .runtime import _NO_FLOATS, Twins, _carve, _keep, blas_one_thread, gemm
from ._jit import jit

FUSED_KT_F32, FUSED_KT_F64 = 512, 128    # k tile of the fused rows: the tile's rows stay in L1


TINY_SCORES = TUNING.FUSED_TINY_SCORES    # (a global: compiled in as a constant)


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
    """The mean scale and the partials (dW in X's dtype; db and (loss, omega) in float64) of
    nblocks blocks, unset: each block zeroes its own (_zero_block), on its thread."""
    n, d = W.shape
    scale = mean_scale(h, X.shape[0]) if mean else 1.0
    return (scale, np.empty((nblocks, n, d), X.dtype), np.empty((nblocks, n)),
            np.zeros((nblocks, 2)))


@jit
def _zero_block(pdW, pdb):
    for j in range(pdW.shape[0]):
        pdb[j] = 0.0
        for k in range(pdW.shape[1]):
            pdW[j, k] = 0


COMBINE_K = 1024       # dW's elements per task of the parallel combine (a row's k chunk)


def linear_fused(X, W, b, mean, nblocks, dW, db, dX, *head):
    """The fused path over nblocks fixed row blocks, taken by the threads as they free up
    (C's schedule(dynamic, 1): a thread that loses its core to another pool's spinning threads
    holds up one block, not 1 / threads of the call), then dW's partials combined in parallel
    over (class, k chunk) tasks, each element summed in block order: the same bits for the
    same nblocks however the threads are scheduled, and in order (a forked child)."""
    h = HeadPack(*head)
    B = X.shape[0]
    n, d = W.shape
    scale, pdW, pdb, parts = _fused_scratch(h, X, W, mean, nblocks)
    for t in nb.prange(nblocks):        # (chunk size 1: the caller's, numba/__init__'s _dynamic)
        _zero_block(pdW[t], pdb[t])
        parts[t, 0], parts[t, 1] = linear_rows(
            h, X, W, b, scale, t * B // nblocks, (t + 1) * B // nblocks, pdW[t], pdb[t], dX)
    nk = (d + COMBINE_K - 1) // COMBINE_K
    for task in nb.prange(n * nk):
        j, k0 = task // nk, task % nk * COMBINE_K
        k1 = min(k0 + COMBINE_K, d)
        for k in range(k0, k1):
            dW[j, k] = pdW[0, j, k]
        for t in range(1, nblocks):
            for k in range(k0, k1):
                dW[j, k] += pdW[t, j, k]
    for t in range(1, nblocks):
        pdb[0] += pdb[t]
        parts[0] += parts[t]
    for j in range(db.size):
        db[j] = pdb[0, j]
    return parts[0, 0], parts[0, 1]


linear_fused = Twins(linear_fused)


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


# linear_chunked's row blocks on a team of T = P.shape[0] threads (csrc/linear.c's
# classes_step), thread t owning the classes c_t = [t n / T, (t + 1) n / T), BLAS held to one
# thread by the caller when T > 1. Per block of rows X_c:
#   1. S[:, c_t] = X_c W[c_t]^T (own_scores with own, else BLAS)
#   2. bias + head on whole rows, the rows split over the team (lrow: each row's loss)
#   3. db64[c_t] += S[:, c_t]'s column sums in row order; dW[c_t] (+)= S[:, c_t]^T X_c and
#      P[t] = S[:, c_t] W[c_t], with filter_eps (thr > 0) on the slice's active classes only
#   4. dX_c = the P[t] summed pairwise over t, the columns split over the team (T > 1).
# classes_step runs each step on Numba's threads, or one thread after the other (its serial twin:
# T = 1, or a forked child), and returns the block's (loss, omega) in row order.

@jit
def _team_products(t, T, S, Xc, W, first, dW, db64, P, thr, Wg, Tg, idx, head):
    h = HeadPack(*head)
    rows, n = S.shape
    c0, c1 = t * n // T, (t + 1) * n // T
    if db64.size:
        for r in range(rows):
            for j in range(c0, c1):
                db64[j] += S[r, j]
    Pt = P[t, :rows]
    if thr > 0:
        filtered_slice(S, c0, c1, Xc, W, dW, Pt, thr, Wg[t], Tg[t], idx[c0:c1], h)
        return
    gemm(dW[c0:c1], S[:, c0:c1], Xc, True, False, 0.0 if first else 1.0)
    if Pt.size:
        gemm(Pt, S[:, c0:c1], W[c0:c1])


@jit
def _team_dx(t, T, P, rows, dXc):
    d = dXc.shape[1]
    k0, k1 = t * d // T, (t + 1) * d // T
    w = 1
    while w < T:
        for u in range(0, T - w, 2 * w):
            for r in range(rows):
                for k in range(k0, k1):
                    P[u, r, k] += P[u + w, r, k]
        w *= 2
    for r in range(rows):
        for k in range(k0, k1):
            dXc[r, k] = P[0, r, k]


def classes_step(S, Xc, W, b, scale, first, own, dW, db64, dXc, P, lrow, thr, Wg, Tg, idx,
                 *head):
    h = HeadPack(*head)
    T, (rows, n) = P.shape[0], S.shape
    for t in nb.prange(T):
        scores(S, Xc, W, t * n // T, (t + 1) * n // T, own)
    for t in nb.prange(T):
        head_block(h, S, scale, b, np.empty(0), S, lrow, t * rows // T, (t + 1) * rows // T)
    for t in nb.prange(T):
        _team_products(t, T, S, Xc, W, first, dW, db64, P, thr, Wg, Tg, idx, head)
    if dXc.size and T > 1:
        for t in nb.prange(T):
            _team_dx(t, T, P, rows, dXc)
    return row_sums(lrow, rows, *head)


classes_step = Twins(classes_step)


# The team by rows (plan()'s by_rows: csrc/linear.c's rows_step):
# thread t owns rows [t r / T, (t + 1) r / T) of each block of r rows: S_t = X_t W^T, the head,
# dX_t = G_t W, and its own partials Pw[t] (+)= G_t^T X_t and Pb[t] += G_t's column sums;
# after the last block rows_combine sums the partials pairwise over t into dW and db. Their
# serial twins run the same tasks one after the other (a forked child: no parallel region).

@jit
def _rows_share(t, T, S, Xc, W, b, scale, first, own, Pw, Pb, dXc, lrow, head):
    h = HeadPack(*head)
    rows, n = S.shape
    r0, r1 = t * rows // T, (t + 1) * rows // T
    if r1 == r0:
        return
    scores(S[r0:r1], Xc[r0:r1], W, 0, n, own)
    head_block(h, S, scale, b, np.empty(0), S, lrow, r0, r1)
    for r in range(r0, r1):
        for j in range(n):
            Pb[t, j] += S[r, j]
    gemm(Pw[t], S[r0:r1], Xc[r0:r1], True, False, 0.0 if first else 1.0)
    if dXc.size:
        gemm(dXc[r0:r1], S[r0:r1], W)


def rows_step(S, Xc, W, b, scale, first, own, Pw, Pb, dXc, lrow, *head):
    T = Pw.shape[0]
    for t in nb.prange(T):
        _rows_share(t, T, S, Xc, W, b, scale, first, own, Pw, Pb, dXc, lrow, head)
    return row_sums(lrow, S.shape[0], *head)


rows_step = Twins(rows_step)


@jit
def _combine_task(task, Pw, Pb, dW, db64):
    """rows_combine's task: dW[j, k0:k0 + COMBINE_K] (and db64[j] with k0 = 0), pairwise over
    the team's partials."""
    T, n, d = Pw.shape
    nk = (d + COMBINE_K - 1) // COMBINE_K
    j, k0 = task // nk, task % nk * COMBINE_K
    k1 = min(k0 + COMBINE_K, d)
    w = 1
    while w < T:
        for u in range(0, T - w, 2 * w):
            for k in range(k0, k1):
                Pw[u, j, k] += Pw[u + w, j, k]
            if k0 == 0:
                Pb[u, j] += Pb[u + w, j]
        w *= 2
    for k in range(k0, k1):
        dW[j, k] = Pw[0, j, k]
    if k0 == 0 and db64.size:
        db64[j] = Pb[0, j]


def rows_combine(Pw, Pb, dW, db64):
    T, n, d = Pw.shape
    for task in nb.prange(n * ((d + COMBINE_K - 1) // COMBINE_K)):
        _combine_task(task, Pw, Pb, dW, db64)


rows_combine = Twins(rows_combine)


def loss_step(S, Xc, W, b, own, T, lrow, *head):
    """linear_loss's block of rows on T threads: S = X_c W^T (thread t: its share of the
    classes), then the head on whole rows (its share of the rows; lrow: their losses, the
    gradient written over S unused). Returns the block's (loss, omega) in row order."""
    h = HeadPack(*head)
    rows, n = S.shape
    for t in nb.prange(T):
        scores(S, Xc, W, t * n // T, (t + 1) * n // T, own)
    for t in nb.prange(T):
        head_block(h, S, 1.0, b, np.empty(0), S, lrow, t * rows // T, (t + 1) * rows // T)
    return row_sums(lrow, rows, *head)


loss_step = Twins(loss_step)


@jit
def row_sums(lrow, rows, *head):
    """(sum of lrow[:rows], sum of the rows' weights), in row order."""
    h = HeadPack(*head)
    total = osum = 0.0
    for i in range(rows):
        total += lrow[i]
        osum += row_weight(i, h)
    return total, osum


@jit
def filtered_slice(S, c0, c1, Xc, W, dW, P, thr, Wg, Tg, idx, h):
    """filter_eps's backward for the classes c0..c1 of one block of rows whose gradient is S
    (csrc/linear.c's filtered_slice): only the classes with some |g_ij| >= thr omega_i take
    part in dW[c] += G[:, c]^T X_c and P = G[:, c] W[c], packed in place at the front of the
    slice row by row, W's rows and dW's partials in groups of Wg's rows; mostly active slices
    take the dense products, with the inactive classes' entries zeroed."""
    rows, nc, group = S.shape[0], c1 - c0, Wg.shape[0]
    G = S[:, c0:c1]
    active = np.zeros(nc, np.bool_)
    for r in range(rows):
        t = thr * row_weight(r, h)
        for j in range(nc):
            g = G[r, j]
            if g != 0 and not abs(g) < t:               # NaN is kept, as an active entry
                active[j] = True
    na = 0
    for j in range(nc):
        if active[j]:
            idx[na] = j
            na += 1
    if 2 * na > nc:                     # mostly active: the dense products, the rest zeroed
        for r in range(rows):
            for j in range(nc):
                if not active[j]:
                    G[r, j] = 0
        gemm(dW[c0:c1], G, Xc, True, False, 1.0)
        if P.size:
            gemm(P, G, W[c0:c1])
        return
    for r in range(rows):
        for k in range(na):
            G[r, k] = G[r, idx[k]]
    if P.size and na == 0:
        P[...] = 0
    for g0 in range(0, na, group):
        ng = min(group, na - g0)
        for k in range(ng):
            Wg[k] = W[c0 + idx[g0 + k]]
        gemm(Tg[:ng], G[:, g0:g0 + ng], Xc, True, False)
        for k in range(ng):
            dW[c0 + idx[g0 + k]] += Tg[k]
        if P.size:
            gemm(P, G[:, g0:g0 + ng], Wg[:ng], False, False, 1.0 if g0 else 0.0)


# ---------------------------------------------------------------------------- the drivers
# linear.c's drivers under their C names: the Python between the compiled steps (BLAS calls of
# the column blocks, the loop over blocks of rows), given the head pack ``h`` (absent arrays
# empty) and the call's Plan (tuning.plan).

def rows_of(h, rows):
    """The pack for a block of rows: its labels, targets and sample weights (absent stay empty)."""
    return h._replace(**{k: getattr(h, k)[rows] for k in ("y", "Z", "sample_weight")
                         if getattr(h, k).size})


def linear_loss(h, X, W, b, p):
    """The loss alone, per block of rows: S = X_c W^T (own_scores where linear_head takes it)
    and the head's row losses, on the plan's team split by classes (loss_step), BLAS held to
    one thread when it is BLAS's product; no gradient products. Returns (the rows' losses,
    their sum, the sum of their weights)."""
    B, n, dt = X.shape[0], W.shape[0], X.dtype
    own, chunk, team = bool(p.own), p.chunk, p.team
    rows = np.empty(B)
    total = osum = 0.0
    with (blas_one_thread() if team > 1 and not own else contextlib.nullcontext(True)) as held:
        team = team if held else 1
        block = np.empty((chunk, n), dt)
        for lo in range(0, B, chunk):
            hi = min(lo + chunk, B)
            t, o = loss_step.on(team)(block[:hi - lo], X[lo:hi], W, b, own, team, rows[lo:hi],
                                      *rows_of(h, slice(lo, hi)))
            total += t
            osum += o
    return rows, total, osum


def linear_chunked(h, X, W, b, mean, p, dW, db, dX, filter_eps=0.0):
    """linear_head's blocks of scores: in (chunk, cols) blocks for the plan's "columns"
    (linear_columns), else whole rows (chunked_rows)."""
    if p.path == "columns":
        return linear_columns(h, X, W, b, mean, p.chunk, p.cols, dW, db, dX)
    return chunked_rows(h, X, W, b, mean, p, dW, db, dX, filter_eps)


def chunked_rows(h, X, W, b, mean, p, dW, db, dX, filter_eps=0.0):
    """Per row block: S = X_c W^T (own: by own_scores, else BLAS), bias + head (db in
    float64), dW += S^T X_c, dX_c = S W (with filter_eps > 0 on the block's active classes
    only), on the plan's team of Numba's threads with BLAS held to one thread, split by classes
    (classes_step) or by rows (rows_step), as csrc/linear.c's chunked_rows; a team of one, or
    a forked child's, runs the threads' shares one after the other (the serial twins: the same
    bits) with BLAS on all threads (one) or held (the child). Only one block of scores is ever
    held; the rows' losses are summed in row order."""
    B, n, dt = X.shape[0], W.shape[0], X.dtype
    scale = mean_scale(h, B) if mean else 1.0
    chunk, team, by_rows, own = p.chunk, p.team, p.by_rows, p.own
    with blas_one_thread() if team > 1 else contextlib.nullcontext(False) as held:
        team = team if held else 1
        block, lrow = np.empty((chunk, n), dt), np.empty(chunk)
        db64 = np.zeros(n) if db is not None else _NO_FLOATS
        run = _by_rows if team > 1 and by_rows else _by_classes
        total, osum = run(h, X, W, b, scale, chunk, dW, db64, dX, team, block, lrow, own,
                          filter_eps)
    if db is not None:
        with np.errstate(over="ignore"):       # a diverging run's inf is the answer
            db[...] = db64
    return total, osum


def _by_classes(h, X, W, b, scale, chunk, dW, db64, dX, team, block, lrow, own, filter_eps):
    """classes_step over the blocks of rows."""
    B, (n, d), dt = X.shape[0], W.shape, X.dtype
    P = np.empty((team, chunk, d) if dX is not None else (team, 0, 0), dt)
    thr = filter_eps * scale
    # filter_eps's groups: all threads' Wg and Tg within half the score block
    group = max(1, min(n, chunk * n // (4 * max(d, 1))) // team) if filter_eps else 0
    Wg, Tg = np.empty((team, group, d), dt), np.empty((team, group, d), dt)
    idx = np.empty(n if filter_eps else 0, np.intp)
    step = classes_step.on(team)
    total = osum = 0.0
    if B == 0 or filter_eps:
        dW[...] = 0
    for lo in range(0, B, chunk):
        hi = min(lo + chunk, B)
        dXc = _no_rows(dt) if dX is None else dX[lo:hi]
        Pb = P if team > 1 or dX is None else dXc[None]    # one thread: dX_c itself
        t, o = step(block[:hi - lo], X[lo:hi], W, b, scale, lo == 0, bool(own), dW, db64, dXc,
                    Pb, lrow, thr, Wg, Tg, idx, *rows_of(h, slice(lo, hi)))
        total += t
        osum += o
    return total, osum


def _by_rows(h, X, W, b, scale, chunk, dW, db64, dX, team, block, lrow, own, filter_eps):
    """rows_step over the blocks of rows, then rows_combine."""
    B, (n, d), dt = X.shape[0], W.shape, X.dtype
    Pw, Pb = np.empty((team, n, d), dt), np.zeros((team, n))
    total = osum = 0.0
    for lo in range(0, B, chunk):
        hi = min(lo + chunk, B)
        dXc = _no_rows(dt) if dX is None else dX[lo:hi]
        t, o = rows_step(block[:hi - lo], X[lo:hi], W, b, scale, lo == 0, bool(own), Pw, Pb,
                         dXc, lrow, *rows_of(h, slice(lo, hi)))
        total += t
        osum += o
    rows_combine(Pw, Pb, dW, db64)
    return total, osum


def _no_rows(dt):
    return np.empty((0, 0), dt)


def linear_columns(h, X, W, b, mean, rows, cols, dW, db, dX):
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
    db64 = np.zeros(n) if db is not None else _NO_FLOATS
    total = osum = 0.0
    if B == 0:
        dW[...] = 0
    for lo in range(0, B, rows):
        hi = min(lo + rows, B)
        Xp, hp = X[lo:hi], rows_of(h, slice(lo, hi))
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


# ---------------------------------------------------------------------------- linear + activation
def linear_act_forward(X, W, b, activation, alpha):
    """A = f(X W^T + b) (BLAS, then the activation's epilogue): (A, maxout's winners or
    None)."""
    dt = X.dtype
    S = np.empty((X.shape[0], W.shape[0]), dt)
    gemm(S, X, W, trans_b=True)
    b_ = np.empty(0, dt) if b is None else b
    if activation == "maxout":
        A = np.empty((X.shape[0], W.shape[0] // alpha), dt)
        winners = np.empty(A.shape, np.intp)
        bias_maxout(S, b_, alpha, A, winners)
        return A, winners
    bias_activate(S, b_, ACT_CODES[activation], 0.0 if alpha is None else alpha)
    return S, None


def _backward_dS(dA, cache, db):
    """dS of a linear+activation layer, and db (if wanted) in the same pass."""
    db64 = np.zeros(cache.W.shape[0]) if db is not None else _NO_FLOATS
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
    """dW = dS^T X, db, dX = dS W of a linear+activation layer."""
    dS = _backward_dS(dA, cache, db)
    gemm(dW, dS, cache.X, trans_a=True)
    if dX is not None:
        gemm(dX, dS, cache.W)
