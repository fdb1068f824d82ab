/* Linear layers: linear + head (fused rows, or chunked BLAS), linear + activation forward and
 * backward. Matrix products go to SciPy's BLAS (fbp_sgemm / fbp_dgemm), never a hand GEMM. */
#ifndef REAL
#include "common.h"
#define TEMPLATE_FILE "linear.c"
#include "template.h"
#else
#include "rows.h"
#include "layer_ops.h"

/* ------------------------------------------------------------------ linear + head, fused */

/* Rows lo..hi, four at a time (each pass over W or dW serves four rows):
 * s_r = W x_r + b, the head in place on s_r (f = sw_r scale), then dW += sum_r g_r x_r^T and
 * db += sum_r g_r (float64 partials pdW, pdb), dX_r = W^T g_r.
 * Scratch: S4 (4, n), zero (d,) zeros (the x of a missing fourth row), acc (d,), tmp (n,). */
FBP_HOT static void F(linear_rows)(const F(head_t) *h, const REAL *X, const REAL *W,
                                   const REAL *b, double scale, int64_t lo, int64_t hi,
                                   int64_t d, double *pdW, double *pdb, REAL *dX, REAL *S4,
                                   const REAL *zero, double *acc, double *tmp, double *out)
{
    int64_t n = h->n;
    double total = 0.0, osum = 0.0;
    for (int64_t i0 = lo; i0 < hi; i0 += 4) {
        int64_t cnt = fbp_min(4, hi - i0);
        const REAL *x0 = X + i0 * d, *x1 = cnt > 1 ? x0 + d : zero,
                   *x2 = cnt > 2 ? x0 + 2 * d : zero, *x3 = cnt > 3 ? x0 + 3 * d : zero;
        for (int64_t j = 0; j < n; j++) {
            const REAL *wj = W + j * d;
            double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0, bj = b ? b[j] : 0.0;
            #pragma omp simd reduction(+ : a0, a1, a2, a3)
            for (int64_t k = 0; k < d; k++) {
                double wk = wj[k];
                a0 += wk * x0[k];
                a1 += wk * x1[k];
                a2 += wk * x2[k];
                a3 += wk * x3[k];
            }
            S4[j] = (REAL)(a0 + bj);
            S4[n + j] = (REAL)(a1 + bj);
            S4[2 * n + j] = (REAL)(a2 + bj);
            S4[3 * n + j] = (REAL)(a3 + bj);
        }
        for (int64_t r = 0; r < 4; r++) {
            REAL *s = S4 + r * n;
            if (r < cnt) {
                int64_t i = i0 + r;
                double swi = h->sw ? h->sw[i] : 1.0;
                total += swi * F(head_row)(h, i, s, s, swi * scale, tmp);
                osum += F(row_weight)(h, i);
            } else
                memset(s, 0, (size_t)n * sizeof(REAL));
        }
        for (int64_t j = 0; j < n; j++) {
            double g0 = S4[j], g1 = S4[n + j], g2 = S4[2 * n + j], g3 = S4[3 * n + j];
            double *pw = pdW + j * d;
            pdb[j] += (g0 + g1) + (g2 + g3);
            for (int64_t k = 0; k < d; k++)
                pw[k] += (g0 * x0[k] + g1 * x1[k]) + (g2 * x2[k] + g3 * x3[k]);
        }
        if (dX)         /* row by row: one accumulator row stays in L1 over the n passes */
            for (int64_t r = 0; r < cnt; r++) {
                memset(acc, 0, (size_t)d * sizeof(double));
                for (int64_t j = 0; j < n; j++) {
                    double g = S4[r * n + j];
                    const REAL *wj = W + j * d;
                    for (int64_t k = 0; k < d; k++)
                        acc[k] += g * wj[k];
                }
                REAL *dx = dX + (i0 + r) * d;
                for (int64_t k = 0; k < d; k++)
                    dx[k] = (REAL)acc[k];
            }
    }
    out[0] = total;
    out[1] = osum;
}

int F(linear_fused)(REAL *dW, REAL *db, REAL *dX, double *sums, const REAL *X, const REAL *W,
                    const REAL *b, int head, const int64_t *y, const REAL *Z, const REAL *sw,
                    const REAL *w, const REAL *pw, int64_t ignore, double eps, double margin,
                    int p, int mean, int nblocks, int64_t B, int64_t d, int64_t n)
{
    if (B < 0 || d < 0 || n < 1 || nblocks < 1 || head < FBP_SOFTMAX || head > FBP_NLL)
        return FBP_EBADARG;
    F(head_t) h = {head, y, Z, sw, w, pw, ignore, n, eps, margin, p};
    double scale = mean ? F(mean_scale)(&h, B) : 1.0;
    int nb = (int)fbp_min(fbp_min(nblocks, FBP_MAX_BLOCKS), fbp_max(B, 1));
    /* per block: partials dW (n, d) and db (n,), acc (d,), tmp (n,); S4 (4, n), zero (d,).
     * Tiny problems use the stack: a malloc and a parallel region would cost more than the
     * arithmetic (the call's whole budget is a few microseconds). */
    int64_t nd = n * d, per64 = nd + n + d + n, perR = 4 * n + d;
    double small64[512], part[2 * FBP_MAX_BLOCKS];
    REAL smallR[256];
    int on_stack = nb == 1 && per64 <= 512 && perR <= 256;
    double *buf64 = on_stack ? small64 : malloc((size_t)(nb * per64) * sizeof(double));
    REAL *bufR = on_stack ? smallR : malloc((size_t)(nb * perR) * sizeof(REAL));
    if (!buf64 || !bufR) {
        if (!on_stack) {
            free(buf64);
            free(bufR);
        }
        return FBP_ENOMEM;
    }
    memset(buf64, 0, (size_t)(nb * per64) * sizeof(double));
    memset(bufR, 0, (size_t)(nb * perR) * sizeof(REAL));
    if (nb == 1)
        F(linear_rows)(&h, X, W, b, scale, 0, B, d, buf64, buf64 + nd, dX, bufR, bufR + 4 * n,
                       buf64 + nd + n, buf64 + nd + n + d, part);
    else {
        #pragma omp parallel for num_threads(nb) schedule(static, 1)
        for (int t = 0; t < nb; t++) {
            double *b64 = buf64 + t * per64;
            REAL *bR = bufR + t * perR;
            F(linear_rows)(&h, X, W, b, scale, t * B / nb, (t + 1) * B / nb, d, b64, b64 + nd,
                           dX, bR, bR + 4 * n, b64 + nd + n, b64 + nd + n + d, part + 2 * t);
        }
    }
    sums[0] = sums[1] = 0.0;
    for (int t = 0; t < nb; t++) {          /* block order: deterministic */
        sums[0] += part[2 * t];
        sums[1] += part[2 * t + 1];
        if (t)
            for (int64_t q = 0; q < nd + n; q++)
                buf64[q] += buf64[t * per64 + q];
    }
    for (int64_t q = 0; q < nd; q++)
        dW[q] = (REAL)buf64[q];
    if (db)
        for (int64_t j = 0; j < n; j++)
            db[j] = (REAL)buf64[nd + j];
    if (!on_stack) {
        free(buf64);
        free(bufR);
    }
    return FBP_OK;
}

/* ------------------------------------------------------------------ linear + head, chunked */

/* Per block of chunk rows: S = X_c W^T (BLAS), bias + head in place (serial: BLAS owns the
 * cores, design.md "Oversubscription"; measured at V: a 2-thread OpenMP epilogue between the
 * GEMMs made the call 472 ms instead of 367), dW += S^T X_c (beta = 1), dX_c = S W. Scratch:
 * one (chunk, n) score block and two n-vectors, whatever B. */
int F(linear_chunked)(REAL *dW, REAL *db, REAL *dX, double *sums, const REAL *X,
                      const REAL *W, const REAL *b, int head, const int64_t *y, const REAL *Z,
                      const REAL *sw, const REAL *w, const REAL *pw, int64_t ignore,
                      double eps, double margin, int p, int mean, int64_t chunk, int64_t B,
                      int64_t d, int64_t n)
{
    if (B < 0 || d < 0 || n < 1 || chunk < 1 || head < FBP_SOFTMAX || head > FBP_NLL)
        return FBP_EBADARG;
    if (!fbp_fits_int(B) || !fbp_fits_int(d) || !fbp_fits_int(n))
        return FBP_ETOOBIG;
    if (!FBP_GEMM)
        return FBP_ENOBLAS;
    F(head_t) h = {head, y, Z, sw, w, pw, ignore, n, eps, margin, p};
    double scale = mean ? F(mean_scale)(&h, B) : 1.0;
    chunk = fbp_min(chunk, fbp_max(B, 1));
    REAL *S = malloc((size_t)(chunk * n) * sizeof(REAL));
    double *db64 = calloc((size_t)n, sizeof(double)), *tmp = malloc((size_t)n * sizeof(double));
    if (!S || !db64 || !tmp) {
        free(S);
        free(db64);
        free(tmp);
        return FBP_ENOMEM;
    }
    memset(dW, 0, (size_t)(n * d) * sizeof(REAL));
    sums[0] = sums[1] = 0.0;
    for (int64_t lo = 0; lo < B; lo += chunk) {
        int64_t rows = fbp_min(chunk, B - lo);
        const REAL *Xc = X + lo * d;
        double part[2];
        F(gemm)(0, 1, rows, n, d, Xc, d, W, d, 0, S);
        F(head_block)(&h, S, b, S, NULL, db ? db64 : NULL, scale, lo, lo + rows, lo, tmp, part);
        sums[0] += part[0];
        sums[1] += part[1];
        F(gemm)(1, 0, n, d, rows, S, n, Xc, d, 1, dW);
        if (dX)
            F(gemm)(0, 0, rows, d, n, S, n, W, d, 0, dX + lo * d);
    }
    if (db)
        for (int64_t j = 0; j < n; j++)
            db[j] = (REAL)db64[j];
    free(S);
    free(db64);
    free(tmp);
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

int F(linear_act_forward)(REAL *A, int64_t *winners, const REAL *X, const REAL *W,
                          const REAL *b, int act, double alpha, int k, int64_t B, int64_t d,
                          int64_t m)
{
    int status = F(check_layer)(act, k, B, d, m);
    if (status)
        return status;
    if (act != FBP_MAXOUT) {
        F(gemm)(0, 1, B, m, d, X, d, W, d, 0, A);
        F(bias_activate)(A, b, act, alpha, B, m);
        return FBP_OK;
    }
    REAL *S = malloc((size_t)fbp_max(B * m, 1) * sizeof(REAL));
    if (!S)
        return FBP_ENOMEM;
    F(gemm)(0, 1, B, m, d, X, d, W, d, 0, S);
    F(bias_maxout)(A, winners, S, b, k, B, m);
    free(S);
    return FBP_OK;
}

int F(linear_act_backward)(REAL *dX, REAL *dW, REAL *db, const REAL *dA, const REAL *A,
                           const int64_t *winners, const REAL *X, const REAL *W, int act,
                           double alpha, int k, int64_t B, int64_t d, int64_t m)
{
    int status = F(check_layer)(act, k, B, d, m);
    if (status)
        return status;
    REAL *dS = calloc((size_t)fbp_max(B * m, 1), sizeof(REAL));
    double *db64 = db ? calloc((size_t)m, sizeof(double)) : NULL;
    if (!dS || (db && !db64)) {
        free(dS);
        free(db64);
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
    free(dS);
    free(db64);
    return status;
}

#endif
