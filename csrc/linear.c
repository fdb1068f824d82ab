/* Linear layers: linear + head (fused rows, or chunked BLAS), linear + activation forward and
 * backward. Matrix products go to OpenBLAS (NumPy's or SciPy's: fbp_sgemm / fbp_dgemm, see
 * runtime.c), never a hand GEMM; the fused rows only block small products over registers. */
#ifndef REAL
#include "common.h"

#define FUSED_R 8          /* rows per register block of the fused rows */
#define FUSED_KT 512       /* k tile of their forward: its rows of x and w stay in L1 */

#define TEMPLATE_FILE "linear.c"
#include "template.h"
#else
#include "rows.h"
#include "layer_ops.h"

/* ------------------------------------------------------------------ linear + head, fused */

/* The fused rows' vectors: 64 bytes of REAL, VLR lanes (8 doubles or 16 floats: one AVX-512
 * register, two AVX2 ones). Each dtype runs in its own precision, as BLAS's products do.
 * Loads and stores go through memcpy: no alignment is assumed. */
#define VLR ((int64_t)(64 / sizeof(REAL)))
typedef REAL F(vec) __attribute__((vector_size(64)));
FBP_INLINE F(vec) F(vload)(const REAL *p)
{
    F(vec) v;
    memcpy(&v, p, sizeof v);
    return v;
}
FBP_INLINE void F(vstore)(REAL *p, F(vec) v) { memcpy(p, &v, sizeof v); }
/* the sum of the lanes in double, in a fixed tree order */
FBP_INLINE double F(vsum)(F(vec) v)
{
    double t[64 / sizeof(REAL)];
    for (int64_t l = 0; l < VLR; l++)
        t[l] = v[l];
    for (int64_t w = VLR / 2; w; w /= 2)
        for (int64_t l = 0; l < w; l++)
            t[l] += t[l + w];
    return t[0];
}

/* m rounded up to whole vectors */
static int64_t F(vceil)(int64_t m) { return (m + VLR - 1) / VLR * VLR; }

/* REALs of scratch one block of fused rows needs (carved in linear_rows): whole vectors, so
 * every part (and the next block's scratch) starts on a 64-byte boundary when scratch does */
static int64_t F(fused_scratch)(int64_t n, int64_t ld)
{
    int64_t nd = F(vceil)(n * (int64_t)(sizeof(double) / sizeof(REAL)));   /* n doubles */
    return n * ld + nd + (FUSED_R + 1) * ld + F(vceil)(FUSED_R * n) + FUSED_R * n * VLR
           + F(vceil)(n * FUSED_R) + nd;
}

/* Rows lo..hi, FUSED_R at a time, in vectors of VLR REALs:
 *   s_r = W x_r + b           j in pairs: 16 accumulators, each load feeds 2 or 8 FMAs;
 *   g_r = head(s_r)           in place on s_r (f = sw_r scale; the head's own sums in double);
 *   pdW += sum_r g_r x_r^T, pdb += sum_r g_r, dX_r = W^T g_r
 *                             one pass over k with x_r and dX_r in registers.
 * The rows are first copied to xs with row stride ld (see linear_fused), zero past d and for
 * missing rows, so every k loop runs whole vectors. Wp: W the same way.
 * scratch (F(fused_scratch)(n, ld) REALs, 64-byte aligned): the partials pdW (n, ld) and pdb
 * (n doubles: db's terms cancel, so they add in double), xs (FUSED_R + 1, ld), S (FUSED_R, n),
 * accv (FUSED_R, n) vectors, g (n, FUSED_R), tmp (n doubles); each part 64-byte aligned (so no
 * vector load is split across two cache lines). */
FBP_HOT static void F(linear_rows)(const F(head_t) * h, const REAL *X, const REAL *Wp,
                                   const REAL *b, double scale, int64_t lo, int64_t hi, int64_t d,
                                   int64_t ld, REAL *scratch, REAL *dX, double *out)
{
    enum { R = FUSED_R };
    int64_t n = h->n, kw = F(vceil)(d);
    int64_t nd = F(vceil)(n * (int64_t)(sizeof(double) / sizeof(REAL)));     /* n doubles */
    REAL *pdW = scratch, *xs = pdW + n * ld + nd, *S = xs + (R + 1) * ld,
         *accv = S + F(vceil)(R * n), *g = accv + R * n * VLR,
         *spare = xs + R * ld;                                 /* spare: dX of missing rows */
    double *pdb = (double *)(pdW + n * ld), *tmp = (double *)(g + F(vceil)(n * R));
    double total = 0.0, osum = 0.0;
    memset(pdW, 0, (size_t)(n * ld) * sizeof(REAL));
    memset(pdb, 0, (size_t)n * sizeof(double));
    for (int r = 0; r < R; r++)            /* the padding past d stays 0 */
        memset(xs + r * ld + d, 0, (size_t)(ld - d) * sizeof(REAL));
    for (int64_t i0 = lo; i0 < hi; i0 += R) {
        int64_t cnt = fbp_min(R, hi - i0);
        for (int64_t r = 0; r < R; r++) {
            REAL *xr = xs + r * ld;
            if (r < cnt)
                memcpy(xr, X + (i0 + r) * d, (size_t)d * sizeof(REAL));
            else
                memset(xr, 0, (size_t)d * sizeof(REAL));
        }
        memset(accv, 0, (size_t)(R * n * VLR) * sizeof(REAL));
        for (int64_t k0 = 0; k0 < kw; k0 += FUSED_KT) {
            int64_t k1 = fbp_min(k0 + FUSED_KT, kw);
            for (int64_t j = 0; j < n; j += 2) {
                int64_t j1 = fbp_min(j + 1, n - 1);  /* odd n: the last pair is (j, j) */
                const REAL *w0 = Wp + j * ld, *w1 = Wp + j1 * ld;
                F(vec) a0[R], a1[R];
                for (int r = 0; r < R; r++) {
                    a0[r] = F(vload)(accv + (r * n + j) * VLR);
                    a1[r] = F(vload)(accv + (r * n + j1) * VLR);
                }
                for (int64_t k = k0; k < k1; k += VLR) {
                    F(vec) u = F(vload)(w0 + k), v = F(vload)(w1 + k);
                    for (int r = 0; r < R; r++) {
                        F(vec) xv = F(vload)(xs + r * ld + k);
                        a0[r] += xv * u;
                        a1[r] += xv * v;
                    }
                }
                for (int r = 0; r < R; r++) {
                    F(vstore)(accv + (r * n + j) * VLR, a0[r]);
                    F(vstore)(accv + (r * n + j1) * VLR, a1[r]);
                }
            }
        }
        for (int64_t r = 0; r < R; r++) {
            REAL *s = S + r * n;
            if (r < cnt) {
                int64_t i = i0 + r;
                for (int64_t j = 0; j < n; j++)
                    s[j] = (REAL)(F(vsum)(F(vload)(accv + (r * n + j) * VLR))
                                  + (b ? (double)b[j] : 0.0));
                double swi = h->sw ? h->sw[i] : 1.0;
                total += swi * F(head_row)(h, i, s, s, swi * scale, tmp);
                osum += F(row_weight)(h, i);
            }
            for (int64_t j = 0; j < n; j++)
                g[j * R + r] = r < cnt ? s[j] : (REAL)0;
        }
        for (int64_t j = 0; j < n; j++) {
            const REAL *gj = g + j * R;
            pdb[j] += (((double)gj[0] + gj[1]) + ((double)gj[2] + gj[3]))
                      + (((double)gj[4] + gj[5]) + ((double)gj[6] + gj[7]));
        }
        /* the next block's rows, fetched while this one computes (copying them to xs waited
         * on L3: 13% of the time at shape C) */
        int64_t ahead = fbp_min(R, hi - i0 - R);
        const REAL *next = ahead > 0 ? X + (i0 + R) * d : X;   /* (no pointer past the end) */
        for (int64_t k = 0; k < kw; k += VLR) {
            F(vec) xv[R], dx[R];
            for (int r = 0; r < R; r++) {
                xv[r] = F(vload)(xs + r * ld + k);
                dx[r] = (F(vec)){0};
            }
            for (int64_t r = 0; r < ahead; r++)      /* k < d: inside row r */
                __builtin_prefetch(next + r * d + k);
            for (int64_t j = 0; j < n; j++) {
                const REAL *gj = g + j * R;
                F(vec) w = F(vload)(Wp + j * ld + k), q[R / 2];
                for (int r = 0; r < R; r++)
                    dx[r] += gj[r] * w;
                for (int r = 0; r < R / 2; r++)   /* a tree, not a chain of 8 dependent FMAs */
                    q[r] = gj[2 * r] * xv[2 * r] + gj[2 * r + 1] * xv[2 * r + 1];
                F(vstore)(pdW + j * ld + k,
                          F(vload)(pdW + j * ld + k) + ((q[0] + q[1]) + (q[2] + q[3])));
            }
            if (dX) {
                int64_t m = fbp_min(VLR, d - k);
                for (int r = 0; r < R; r++) {   /* missing rows go to the spare row */
                    REAL *dst = (r < cnt ? dX + (i0 + r) * d : spare) + k;
                    if (m == VLR)                /* a whole vector: no libc call */
                        F(vstore)(dst, dx[r]);
                    else
                        memcpy(dst, &dx[r], (size_t)m * sizeof(REAL));
                }
            }
        }
    }
    out[0] = total;
    out[1] = osum;
}

int F(linear_fused)(REAL *dW, REAL *db, REAL *dX, double *sums, const REAL *X, const REAL *W,
                    const REAL *b, const fbp_head *head, int mean, int nblocks, int64_t B,
                    int64_t d, int64_t n)
{
    if (B < 0 || d < 0 || n < 1 || nblocks < 1 || !fbp_known_head(head))
        return FBP_EBADARG;
    F(head_t) h = F(head_view)(head, n);
    double scale = mean ? F(mean_scale)(&h, B) : 1.0;
    int nb = (int)fbp_min(fbp_min(nblocks, FBP_MAX_BLOCKS), fbp_max(B, 1));
    /* Row stride of the copies: d rounded up to whole vectors, and an odd number of cache
     * lines, so the FUSED_R rows of xs and the n of Wp and pdW fall in different L1 sets
     * (rows a power of two apart share one set: docs/performance.md, "C loop structure"). */
    int64_t kw = F(vceil)(d), ld = kw + ((kw / VLR) % 2 ? 0 : VLR);
    /* Wp (n, ld), then one linear_rows scratch per block. Tiny problems use the stack: a
     * malloc would cost more than their arithmetic (a few microseconds in all). */
    int64_t nld = n * ld, per = F(fused_scratch)(n, ld);
    REAL small[2048 + 64 / sizeof(REAL)];
    double part[2 * FBP_MAX_BLOCKS];
    int on_stack = nb == 1 && nld + per <= 2048;
    void *raw = on_stack ? NULL : fbp_malloc((size_t)(nld + nb * per + VLR) * sizeof(REAL));
    if (!on_stack && !raw)
        return FBP_ENOMEM;
    /* 64-byte aligned, so every part of every block's scratch is (see linear_rows) */
    REAL *buf = (REAL *)(((uintptr_t)(on_stack ? (void *)small : raw) + 63) & ~(uintptr_t)63);
    for (int64_t j = 0; j < n; j++) {
        REAL *wr = buf + j * ld;
        memcpy(wr, W + j * d, (size_t)d * sizeof(REAL));
        memset(wr + d, 0, (size_t)(ld - d) * sizeof(REAL));
    }
    if (nb == 1 || fbp_forked_child())    /* one block: a region costs more than tiny work;
                                             * a forked child has no OpenMP (runtime.c) */
        for (int t = 0; t < nb; t++)
            F(linear_rows)(&h, X, buf, b, scale, t * B / nb, (t + 1) * B / nb, d, ld,
                           buf + nld + t * per, dX, part + 2 * t);
    else {
        /* blocks handed out as threads free up (a core the host takes away for a while then
         * delays one block, not half the rows); their partials still combine in block order */
#pragma omp parallel for num_threads((int)fbp_min(nb, fbp_threads())) schedule(dynamic, 1)
        for (int t = 0; t < nb; t++)
            F(linear_rows)(&h, X, buf, b, scale, t * B / nb, (t + 1) * B / nb, d, ld,
                           buf + nld + t * per, dX, part + 2 * t);
    }
    sums[0] = sums[1] = 0.0;
    REAL *p0 = buf + nld;
    double *pb0 = (double *)(p0 + nld);
    for (int t = 0; t < nb; t++) {          /* block order: deterministic */
        sums[0] += part[2 * t];
        sums[1] += part[2 * t + 1];
        if (t) {
            const double *pbt = (const double *)(p0 + t * per + nld);
            for (int64_t q = 0; q < nld; q++)
                p0[q] += p0[t * per + q];
            for (int64_t j = 0; j < n; j++)
                pb0[j] += pbt[j];
        }
    }
    for (int64_t j = 0; j < n; j++)
        memcpy(dW + j * d, p0 + j * ld, (size_t)d * sizeof(REAL));
    if (db)
        for (int64_t j = 0; j < n; j++)
            db[j] = (REAL)pb0[j];
    fbp_free(raw);
    return FBP_OK;
}

/* ------------------------------------------------------------------ linear + head, chunked */

/* Softmax heads in blocks of (rows, cols) scores, cols < n (many classes: a block of whole rows
 * would be a few rows, and BLAS runs such skinny products slowly). Per panel of rows
 * X_p: pass 1, per column block S = X_p W_c^T + b_c, the rows' statistics (softmax_cols_stats);
 * pass 2, S again, the gradient in place, dW_c += S^T X_p (written once per panel), dX_p += S W_c.
 * Four products instead of three, all of full size. st: per row M, r, rest and the argmax (as a
 * double: exact below 2^53); lin: per row the linear part of the loss. */
FBP_HOT static void F(linear_columns)(const F(head_t) * h, REAL *dW, double *db64, REAL *dX,
                                      double *sums, const REAL *X, const REAL *W, const REAL *b,
                                      double scale, int64_t chunk, int64_t cols, int64_t B,
                                      int64_t d, REAL *S, double *st, double *tmp)
{
    int64_t n = h->n;
    double *lin = st + 4 * chunk;
    for (int64_t lo = 0; lo < B; lo += chunk) {
        int64_t rows = fbp_min(chunk, B - lo);
        const REAL *Xp = X + lo * d;
        for (int pass = 1; pass <= 2; pass++)
            for (int64_t c0 = 0; c0 < n; c0 += cols) {
                int64_t nc = fbp_min(cols, n - c0);
                F(gemm)(0, 1, rows, nc, d, Xp, d, W + c0 * d, d, 0, S);
                for (int64_t r = 0; r < rows; r++) {
                    int64_t i = lo + r;
                    REAL *s = S + r * nc;
                    if (h->code == FBP_SOFTMAX && h->y[i] == h->ignore) {
                        memset(s, 0, (size_t)nc * sizeof(REAL));
                        continue;
                    }
                    if (b)
                        for (int64_t j = 0; j < nc; j++)
                            s[j] += b[c0 + j];
                    if (pass == 1) {
                        F(softmax_cols_stats)(h, i, s, c0, nc, st + 4 * r, tmp);
                        continue;
                    }
                    double swi = h->sw ? h->sw[i] : 1.0;
                    lin[r] = (c0 ? lin[r] : 0.0)
                             + F(softmax_cols_grad)(h, i, s, s, c0, nc, st + 4 * r, swi * scale,
                                                    tmp);
                    if (db64)
                        for (int64_t j = 0; j < nc; j++)
                            db64[c0 + j] += s[j];
                }
                if (pass == 1)
                    continue;
                F(gemm)(1, 0, nc, d, rows, S, nc, Xp, d, lo ? 1 : 0, dW + c0 * d);
                if (dX)
                    F(gemm)(0, 0, rows, d, nc, S, nc, W + c0 * d, d, c0 ? 1 : 0, dX + lo * d);
            }
        for (int64_t r = 0; r < rows; r++) {
            int64_t i = lo + r;
            double om = F(row_weight)(h, i);
            sums[1] += om;
            if (!(h->code == FBP_SOFTMAX && h->y[i] == h->ignore))
                sums[0] +=
                        (h->sw ? h->sw[i] : 1.0) * F(softmax_cols_loss)(h, i, st + 4 * r, lin[r]);
        }
    }
}

/* filter_eps's backward for one block of rows whose gradient G (rows, n) is in S: only the
 * classes with some |g_ij| >= thr_i (thr_i = eps omega_i, scaled as G) take part in dW += G^T X_c
 * and dX_c = G W (docs/math.md, "filter_eps"). Their columns are packed in place at the front
 * of S (row i at i na: never past what is still to be read), then per group of at most `group`
 * classes W's rows are gathered into Wg and dW's partial into Tg (group d REALs each, and n
 * more in Tg: the flags), the partial added to dW's rows. Mostly active blocks take the dense
 * products, with the inactive classes' entries zeroed. */
static void F(filtered_products)(const F(head_t) * h, REAL *S, const REAL *Xc, const REAL *W,
                                 REAL *dW, REAL *dXc, double thr, int64_t lo, int64_t rows,
                                 int64_t d, int64_t group, int64_t *idx, REAL *Wg, REAL *Tg)
{
    int64_t n = h->n, na = 0;
    char *act = (char *)Tg;         /* n flags, read before Tg is written */
    memset(act, 0, (size_t)n);
    for (int64_t r = 0; r < rows; r++) {
        REAL t = (REAL)(thr * F(row_weight)(h, lo + r));
        const REAL *g = S + r * n;
        for (int64_t j = 0; j < n; j++)
            act[j] |= g[j] != 0 && !(fabs(g[j]) < t);    /* NaN is kept, as an active entry */
    }
    for (int64_t j = 0; j < n; j++)
        if (act[j])
            idx[na++] = j;
    if (2 * na > n) {             /* mostly active: the dense products, the rest zeroed */
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < n; j++)
                S[r * n + j] = act[j] ? S[r * n + j] : (REAL)0;
        F(gemm)(1, 0, n, d, rows, S, n, Xc, d, 1, dW);
        if (dXc)
            F(gemm)(0, 0, rows, d, n, S, n, W, d, 0, dXc);
        return;
    }
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < na; k++)
            S[r * na + k] = S[r * n + idx[k]];
    if (dXc && !na)
        memset(dXc, 0, (size_t)(rows * d) * sizeof(REAL));
    for (int64_t g0 = 0; g0 < na; g0 += group) {
        int64_t ng = fbp_min(group, na - g0);
        for (int64_t k = 0; k < ng; k++)
            memcpy(Wg + k * d, W + idx[g0 + k] * d, (size_t)d * sizeof(REAL));
        F(gemm)(1, 0, ng, d, rows, S + g0, na, Xc, d, 0, Tg);
        for (int64_t k = 0; k < ng; k++) {
            REAL *dst = dW + idx[g0 + k] * d, *src = Tg + k * d;
            for (int64_t q = 0; q < d; q++)
                dst[q] += src[q];
        }
        if (dXc)
            F(gemm)(0, 0, rows, d, ng, S + g0, na, Wg, d, g0 ? 1 : 0, dXc);
    }
}

/* Per block of chunk rows: S = X_c W^T (BLAS), bias + head in place (serial: BLAS owns the
 * cores, docs/design.md "Who owns the cores"), dW += S^T X_c (beta = 1), dX_c = S W. Scratch:
 * one (chunk, n) score block and two n-vectors, whatever B. cols < n: softmax heads in
 * (chunk, cols) blocks instead (linear_columns). filter_eps > 0 (softmax heads, cols = n):
 * the two backward products on the active classes only (filtered_products), within one more
 * half of the score block's bytes. */
int F(linear_chunked)(REAL *dW, REAL *db, REAL *dX, double *sums, const REAL *X, const REAL *W,
                      const REAL *b, const fbp_head *head, int mean, int64_t chunk, int64_t cols,
                      double filter_eps, int64_t B, int64_t d, int64_t n)
{
    int softmax = head && (head->code == FBP_SOFTMAX || head->code == FBP_SOFTMAX_PROBS);
    if (B < 0 || d < 0 || n < 1 || chunk < 1 || cols < 1 || !fbp_known_head(head)
        || (cols < n && (!softmax || head->softcap != 0 || head->z_loss != 0)) || !(filter_eps >= 0)
        || (filter_eps > 0 && !softmax))
        return FBP_EBADARG;
    if (!fbp_fits_int(B) || !fbp_fits_int(d) || !fbp_fits_int(n))
        return FBP_ETOOBIG;
    if (!FBP_GEMM)
        return FBP_ENOBLAS;
    F(head_t) h = F(head_view)(head, n);
    double scale = mean ? F(mean_scale)(&h, B) : 1.0;
    chunk = fbp_min(chunk, fbp_max(B, 1));
    cols = fbp_min(cols, n);
    int filter = filter_eps > 0 && cols == n;
    /* filter_eps's groups: Wg and Tg within half the score block, and Tg holds n flags first */
    int64_t group = fbp_min(n, fbp_max(1, chunk * n / (4 * fbp_max(d, 1))));
    REAL *S = fbp_malloc((size_t)(chunk * cols) * sizeof(REAL)),
         *Wg = filter ? fbp_malloc((size_t)(2 * group * d + n) * sizeof(REAL)) : NULL;
    int64_t *idx = filter ? fbp_malloc((size_t)n * sizeof(int64_t)) : NULL;
    double *db64 = fbp_calloc((size_t)n, sizeof(double)),
           *tmp = fbp_malloc((size_t)n * sizeof(double)),
           *st = cols < n ? fbp_malloc((size_t)(5 * chunk) * sizeof(double)) : tmp;
    if (!S || !db64 || !tmp || !st || (filter && (!Wg || !idx))) {
        fbp_free(S);
        fbp_free(Wg);
        fbp_free(idx);
        fbp_free(db64);
        fbp_free(tmp);
        if (st != tmp)
            fbp_free(st);
        return FBP_ENOMEM;
    }
    sums[0] = sums[1] = 0.0;
    if (B == 0 || cols == n)
        memset(dW, 0, (size_t)(n * d) * sizeof(REAL));
    if (cols < n)
        F(linear_columns)(&h, dW, db ? db64 : NULL, dX, sums, X, W, b, scale, chunk, cols, B, d, S,
                          st, tmp);
    else
        for (int64_t lo = 0; lo < B; lo += chunk) {
            int64_t rows = fbp_min(chunk, B - lo);
            const REAL *Xc = X + lo * d;
            double part[2];
            F(gemm)(0, 1, rows, n, d, Xc, d, W, d, 0, S);
            F(head_block)(&h, S, b, S, NULL, db ? db64 : NULL, scale, lo, lo + rows, lo, tmp, part);
            sums[0] += part[0];
            sums[1] += part[1];
            if (filter)
                F(filtered_products)(&h, S, Xc, W, dW, dX ? dX + lo * d : NULL, filter_eps * scale,
                                     lo, rows, d, group, idx, Wg, Wg + group * d);
            else {
                F(gemm)(1, 0, n, d, rows, S, n, Xc, d, 1, dW);
                if (dX)
                    F(gemm)(0, 0, rows, d, n, S, n, W, d, 0, dX + lo * d);
            }
        }
    if (db)
        for (int64_t j = 0; j < n; j++)
            db[j] = (REAL)db64[j];
    fbp_free(S);
    fbp_free(Wg);
    fbp_free(idx);
    fbp_free(db64);
    fbp_free(tmp);
    if (st != tmp)
        fbp_free(st);
    return FBP_OK;
}

/* ------------------------------------------------------------------ linear + activation */

static int F(check_layer)(int act, int k, int64_t B, int64_t d, int64_t m)
{
    if (B < 0 || d < 0 || m < 1 || act < FBP_SIGMOID || act > FBP_IDENTITY
        || (act == FBP_MAXOUT && (k < 1 || m % k)))
        return FBP_EBADARG;
    if (!fbp_fits_int(B) || !fbp_fits_int(d) || !fbp_fits_int(m))
        return FBP_ETOOBIG;
    return FBP_GEMM ? FBP_OK : FBP_ENOBLAS;
}

/* A[i, u] = max_q S[i, q u_n + u] + b[q u_n + u] (first maximum; a NaN piece wins), winners
 * the winning q */
static void F(bias_maxout)(REAL *A, int64_t *winners, const REAL *S, const REAL *b, int k,
                           int64_t B, int64_t m)
{
    int64_t un = m / k;
    for (int64_t i = 0; i < B; i++)
        for (int64_t u = 0; u < un; u++) {
            int64_t best = 0;
            REAL M = S[i * m + u] + (b ? b[u] : 0);
            for (int64_t q = 1; q < k; q++) {
                REAL v = S[i * m + q * un + u] + (b ? b[q * un + u] : 0);
                if (v > M || (v != v && M == M)) {
                    best = q;
                    M = v;
                }
            }
            A[i * un + u] = M;
            winners[i * un + u] = best;
        }
}

int F(linear_act_forward)(REAL *A, int64_t *winners, const REAL *X, const REAL *W, const REAL *b,
                          int act, double alpha, int k, int64_t B, int64_t d, int64_t m)
{
    int status = F(check_layer)(act, k, B, d, m);
    if (status)
        return status;
    if (act != FBP_MAXOUT) {
        F(gemm)(0, 1, B, m, d, X, d, W, d, 0, A);
        F(bias_activate)(A, b, act, alpha, B, m);
        return FBP_OK;
    }
    REAL *S = fbp_malloc((size_t)fbp_max(B * m, 1) * sizeof(REAL));
    if (!S)
        return FBP_ENOMEM;
    F(gemm)(0, 1, B, m, d, X, d, W, d, 0, S);
    F(bias_maxout)(A, winners, S, b, k, B, m);
    fbp_free(S);
    return FBP_OK;
}

int F(linear_act_backward)(REAL *dX, REAL *dW, REAL *db, const REAL *dA, const REAL *A,
                           const int64_t *winners, const REAL *X, const REAL *W, int act,
                           double alpha, int k, int64_t B, int64_t d, int64_t m)
{
    int status = F(check_layer)(act, k, B, d, m);
    if (status)
        return status;
    REAL *dS = fbp_calloc((size_t)fbp_max(B * m, 1), sizeof(REAL));
    double *db64 = db ? fbp_calloc((size_t)m, sizeof(double)) : NULL;
    if (!dS || (db && !db64)) {
        fbp_free(dS);
        fbp_free(db64);
        return FBP_ENOMEM;
    }
    if (act == FBP_MAXOUT) {        /* dA routed to the winning piece, zero elsewhere */
        int64_t un = m / k;
        for (int64_t i = 0; i < B * un; i++) {
            int64_t q = winners[i];
            if (q < 0 || q >= k) {
                status = FBP_EBADARG;
                break;
            }
            int64_t col = q * un + i % un;
            dS[(i / un) * m + col] = dA[i];
            if (db64)
                db64[col] += dA[i];
        }
    } else
        F(activation_backward)(dS, db64, dA, A, act, alpha, B, m);
    if (!status) {
        F(gemm)(1, 0, m, d, B, dS, m, X, d, 0, dW);
        if (dX)
            F(gemm)(0, 0, B, d, m, dS, m, W, d, 0, dX);
        if (db)
            for (int64_t j = 0; j < m; j++)
                db[j] = (REAL)db64[j];
    }
    fbp_free(dS);
    fbp_free(db64);
    return status;
}

#endif
