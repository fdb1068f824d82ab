"""linear + head (csrc/linear.c): the fused rows (scores, head, dW, db, dX in one pass over four
rows at a time), the whole batch as one block of BLAS products, and the filtered backward of a
row block. softmax_nll's column blocks are in columns.py."""

import numba as nb
import numpy as np

from ..._registry import HeadPack
from ..tuning import Numba as TUNING
from .heads import _unowned_pack, head_block, head_rows, mean_scale
from .rows import head_row, row_weight
from .runtime import _NO_FLOATS, _carve, _keep, gemm
from ._jit import jit, pjit

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


COMBINE_K = 1024       # dW's elements per task of the parallel combine (a row's k chunk)


@pjit
def linear_fused(X, W, b, mean, nblocks, dW, db, dX, *head):
    """The fused path over nblocks fixed row blocks, taken by the threads as they free up
    (C's schedule(dynamic, 1): a thread that loses its core to another pool's spinning threads
    holds up one block, not 1 / threads of the call), then dW's partials combined in parallel
    over (class, k chunk) tasks, each element summed in block order: the bits of
    _fused_combine, the same for the same nblocks however the threads are scheduled."""
    h = HeadPack(*head)
    B = X.shape[0]
    n, d = W.shape
    scale, pdW, pdb, parts = _fused_scratch(h, X, W, mean, nblocks)
    for t in nb.prange(nblocks):        # (chunk size 1: the caller's, fused_in_blocks)
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


@jit
def linear_fused_blocks(X, W, b, mean, nblocks, dW, db, dX, *head):
    """linear_fused's blocks one after the other on the calling thread (the same bits), for a
    process forked after Numba's threads ran: Numba's OpenMP layer aborts a forked child's
    parallel region (libgomp would wait for a pool the child does not have)."""
    h = HeadPack(*head)
    B = X.shape[0]
    scale, pdW, pdb, parts = _fused_scratch(h, X, W, mean, nblocks)
    for t in range(nblocks):
        _zero_block(pdW[t], pdb[t])
        parts[t, 0], parts[t, 1] = linear_rows(
            h, X, W, b, scale, t * B // nblocks, (t + 1) * B // nblocks, pdW[t], pdb[t], dX)
    return _fused_combine(pdW, pdb, parts, dW, db)


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


@jit
def own_scores(S, Xc, W, c0, c1):
    """S[:, c0:c1] = Xc W[c0:c1]^T, fastbp's own product (csrc/products.h's scores): dot tiles
    of 4 rows by 4 classes along k, whose 16 sums LLVM vectorizes into vector accumulators
    (config.FASTMATH's reassociation), each load feeding 4 multiply-adds, W's rows read where
    they lie (BLAS packs all of W again per block of rows). A tile past the rows or classes
    repeats the last one; the stores, last one first, leave each element its own sum."""
    rows, d = Xc.shape
    ud = np.uint64(d)
    zero = W.dtype.type(0)
    for j0 in range(c0, c1, 4):          # 4 rows of W stay in L1 over the block's rows
        q0, q1, q2, q3 = j0, min(j0 + 1, c1 - 1), min(j0 + 2, c1 - 1), min(j0 + 3, c1 - 1)
        for i0 in range(0, rows, 4):
            r0, r1 = i0, min(i0 + 1, rows - 1)
            r2, r3 = min(i0 + 2, rows - 1), min(i0 + 3, rows - 1)
            a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = zero
            a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = zero
            for k in range(ud):
                x0, x1, x2, x3 = Xc[r0, k], Xc[r1, k], Xc[r2, k], Xc[r3, k]
                w0, w1, w2, w3 = W[q0, k], W[q1, k], W[q2, k], W[q3, k]
                a00 += x0 * w0
                a01 += x0 * w1
                a02 += x0 * w2
                a03 += x0 * w3
                a10 += x1 * w0
                a11 += x1 * w1
                a12 += x1 * w2
                a13 += x1 * w3
                a20 += x2 * w0
                a21 += x2 * w1
                a22 += x2 * w2
                a23 += x2 * w3
                a30 += x3 * w0
                a31 += x3 * w1
                a32 += x3 * w2
                a33 += x3 * w3
            S[r3, q3], S[r3, q2], S[r3, q1], S[r3, q0] = a33, a32, a31, a30
            S[r2, q3], S[r2, q2], S[r2, q1], S[r2, q0] = a23, a22, a21, a20
            S[r1, q3], S[r1, q2], S[r1, q1], S[r1, q0] = a13, a12, a11, a10
            S[r0, q3], S[r0, q2], S[r0, q1], S[r0, q0] = a03, a02, a01, a00


@jit
def scores(S, Xc, W, c0, c1, own):
    """S[:, c0:c1] = Xc W[c0:c1]^T: own_scores (own), else BLAS."""
    if own:
        own_scores(S, Xc, W, c0, c1)
    else:
        gemm(S[:, c0:c1], Xc, W[c0:c1], False, True)


# linear_chunked's row blocks on a team of T = P.shape[0] threads (csrc/linear.c's
# chunked_team), thread t owning the classes c_t = [t n / T, (t + 1) n / T), BLAS held to one
# thread by the caller when T > 1. Per block of rows X_c:
#   1. S[:, c_t] = X_c W[c_t]^T (own_scores with own, else BLAS)
#   2. bias + head on whole rows, the rows split over the team (lrow: each row's loss)
#   3. db64[c_t] += S[:, c_t]'s column sums in row order; dW[c_t] (+)= S[:, c_t]^T X_c and
#      P[t] = S[:, c_t] W[c_t], with filter_eps (thr > 0) on the slice's active classes only
#   4. dX_c = the P[t] summed pairwise over t, the columns split over the team (T > 1).
# chunk_team runs each step on Numba's threads; chunk_team_blocks the same steps one thread
# after the other (T = 1, or a forked child). Both return the block's (loss, omega) in row order.

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


@pjit
def chunk_team(S, Xc, W, b, scale, first, own, dW, db64, dXc, P, lrow, thr, Wg, Tg, idx,
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


@jit
def chunk_team_blocks(S, Xc, W, b, scale, first, own, dW, db64, dXc, P, lrow, thr, Wg, Tg,
                      idx, *head):
    h = HeadPack(*head)
    T, (rows, n) = P.shape[0], S.shape
    for t in range(T):
        scores(S, Xc, W, t * n // T, (t + 1) * n // T, own)
    head_block(h, S, scale, b, np.empty(0), S, lrow, 0, rows)
    for t in range(T):
        _team_products(t, T, S, Xc, W, first, dW, db64, P, thr, Wg, Tg, idx, head)
    if dXc.size and T > 1:
        for t in range(T):
            _team_dx(t, T, P, rows, dXc)
    return row_sums(lrow, rows, *head)


# The team by rows (fewer than 2 CHUNKED_MIN_CLASSES classes: csrc/linear.c's rows_team):
# thread t owns rows [t r / T, (t + 1) r / T) of each block of r rows: S_t = X_t W^T, the head,
# dX_t = G_t W, and its own partials Pw[t] (+)= G_t^T X_t and Pb[t] += G_t's column sums;
# after the last block rows_combine sums the partials pairwise over t into dW and db. The
# *_blocks twins run the same tasks one after the other (a forked child: no parallel region).

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


@pjit
def rows_team(S, Xc, W, b, scale, first, own, Pw, Pb, dXc, lrow, *head):
    T = Pw.shape[0]
    for t in nb.prange(T):
        _rows_share(t, T, S, Xc, W, b, scale, first, own, Pw, Pb, dXc, lrow, head)
    return row_sums(lrow, S.shape[0], *head)


@jit
def rows_team_blocks(S, Xc, W, b, scale, first, own, Pw, Pb, dXc, lrow, *head):
    """rows_team's shares one after the other (the same bits), in a forked child."""
    T = Pw.shape[0]
    for t in range(T):
        _rows_share(t, T, S, Xc, W, b, scale, first, own, Pw, Pb, dXc, lrow, head)
    return row_sums(lrow, S.shape[0], *head)


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


@pjit
def rows_combine(Pw, Pb, dW, db64):
    T, n, d = Pw.shape
    for task in nb.prange(n * ((d + COMBINE_K - 1) // COMBINE_K)):
        _combine_task(task, Pw, Pb, dW, db64)


@jit
def rows_combine_blocks(Pw, Pb, dW, db64):
    T, n, d = Pw.shape
    for task in range(n * ((d + COMBINE_K - 1) // COMBINE_K)):
        _combine_task(task, Pw, Pb, dW, db64)


@pjit
def loss_team(S, Xc, W, b, own, T, lrow, *head):
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


@jit
def loss_block(S, Xc, W, b, own, lrow, *head):
    """loss_team on one thread (a forked child: no parallel region)."""
    h = HeadPack(*head)
    scores(S, Xc, W, 0, S.shape[1], own)
    head_block(h, S, 1.0, b, np.empty(0), S, lrow, 0, S.shape[0])
    return row_sums(lrow, S.shape[0], *head)


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
