/* A whole training step of an MLP (elementwise activation, any depth) in one call: forward
 * (GEMM + bias + activation), the head in place on the last scores, backward (GEMMs, db, and
 * dh * f'(a) in one pass), then SGD or Adam on every W and b. */
#ifndef REAL
#include "common.h"
#define TEMPLATE_FILE "mlp.c"
#include "template.h"
#else
#include "rows.h"
#include "layer_ops.h"

/* One parameter array in place, fastbp/model.py's formulas term for term (torch's), with
 * g' = g + wd p:
 *   SGD:  v = momentum v + g' (v = g' at t = 1); p -= lr (g' + momentum v if nesterov else v)
 *         (no momentum: p -= lr g')
 *   Adam: m = b1 m + (1 - b1) g', v = b2 v + (1 - b2) g'^2,
 *         p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * s1 = v or m, s2 = Adam's v (unused otherwise). */
FBP_HOT static void F(optimizer_update)(REAL *p, const REAL *g, REAL *s1, REAL *s2, int64_t size,
                                        int kind, double lr, double momentum, int nesterov,
                                        double wd, double b1, double b2, double eps, int64_t t)
{
    /* one loop per optimizer (branches hoisted, so each loop vectorizes) */
    if (kind == FBP_ADAM) {
        double inv_bc2 = 1.0 / sqrt(1.0 - pow(b2, (double)t));
        double step1 = lr / (1.0 - pow(b1, (double)t));
        for (int64_t i = 0; i < size; i++) {
            double gi = wd != 0 ? g[i] + wd * p[i] : g[i];
            double m = b1 * s1[i] + (1.0 - b1) * gi, v = b2 * s2[i] + (1.0 - b2) * (gi * gi);
            s1[i] = (REAL)m;
            s2[i] = (REAL)v;
            p[i] -= (REAL)(step1 * (m / (sqrt(v) * inv_bc2 + eps)));
        }
    } else if (momentum != 0) {
        for (int64_t i = 0; i < size; i++) {
            double gi = wd != 0 ? g[i] + wd * p[i] : g[i];
            double v = t == 1 ? gi : momentum * s1[i] + gi;
            s1[i] = (REAL)v;
            p[i] -= (REAL)(lr * (nesterov ? gi + momentum * v : v));
        }
    } else
        for (int64_t i = 0; i < size; i++)
            p[i] -= (REAL)(lr * (wd != 0 ? g[i] + wd * p[i] : g[i]));
}

/* ptrs: 8 L pointers, four blocks of 2 L: the parameters W_0, b_0, W_1, b_1, ... (W_l
 * (widths[l+1], widths[l]), b_l (widths[l+1],)), their gradients, then the optimizer's first
 * and second buffer of each; widths (L + 1,): d, hidden widths, n.
 * One step per block of `batch` consecutive rows of X (B, d) -- an epoch in one call, or one
 * step with batch = B -- the optimizer's step count t, t + 1, ...; losses (one per step)
 * receives each step's loss ("mean": sum / sum of weights, NaN when that is 0; else the sum).
 * dW and db keep the last step's gradients. Scratch, allocated once per call: the hidden
 * outputs (kept for backward), two (batch, max width) gradient blocks, float64 vectors. */
int F(mlp_step)(double *losses, REAL *const *ptrs, const int64_t *widths, int L, const REAL *X,
                int act, double alpha, const fbp_head *head, int mean, int kind, double lr,
                double momentum, int nesterov, double wd, double b1, double b2, double adam_eps,
                int64_t t, int64_t batch, int64_t B)
{
    if (B < 1 || batch < 1 || L < 1 || !fbp_known_head(head) || act < FBP_SIGMOID
        || act > FBP_IDENTITY || act == FBP_MAXOUT || (kind != FBP_SGD && kind != FBP_ADAM))
        return FBP_EBADARG;
    batch = fbp_min(batch, B);
    if (!fbp_fits_int(batch))
        return FBP_ETOOBIG;
    int64_t hid = 0, wmax = 1;
    for (int l = 0; l <= L; l++) {
        if (widths[l] < 1)
            return FBP_EBADARG;
        if (!fbp_fits_int(widths[l]))
            return FBP_ETOOBIG;
        if (l >= 1)
            wmax = fbp_max(wmax, widths[l]);
        if (l >= 1 && l < L)
            hid += batch * widths[l];
    }
    if (!FBP_GEMM)
        return FBP_ENOBLAS;
#define W_(l) ptrs[2 * (l)]
#define B_(l) ptrs[2 * (l) + 1]
#define DW_(l) ptrs[2 * L + 2 * (l)]
#define DB_(l) ptrs[2 * L + 2 * (l) + 1]
    REAL *buf = fbp_malloc((size_t)(hid + 2 * batch * wmax) * sizeof(REAL));
    double *db64 = fbp_malloc((size_t)(2 * wmax) * sizeof(double)), *tmp = db64 + wmax;
    if (!buf || !db64) {
        fbp_free(buf);
        fbp_free(db64);
        return FBP_ENOMEM;
    }
    int64_t d = widths[0], n = widths[L];
    for (int64_t lo = 0, step = 0; lo < B; lo += batch, step++) {
        int64_t Bb = fbp_min(batch, B - lo);
        REAL *G = buf + hid, *dh = G + batch * wmax;
        const REAL *Xb = X + lo * d, *h = Xb;
        REAL *A = buf;
        for (int l = 0; l < L - 1; l++) {
            F(gemm)(0, 1, Bb, widths[l + 1], widths[l], h, widths[l], W_(l), widths[l], 0, A);
            F(bias_activate)(A, B_(l), act, alpha, Bb, widths[l + 1]);
            h = A;
            A += Bb * widths[l + 1];
        }
        F(gemm)(0, 1, Bb, n, widths[L - 1], h, widths[L - 1], W_(L - 1), widths[L - 1], 0, G);
        F(head_t) hd = F(head_view)(head, n);     /* this step's rows */
        hd.y = hd.y ? hd.y + lo : NULL;
        hd.Z = hd.Z ? hd.Z + lo * n : NULL;
        hd.sw = hd.sw ? hd.sw + lo : NULL;
        double sums[2];
        F(head_block)(&hd, G, B_(L - 1), G, n, NULL, NULL, mean ? F(mean_scale)(&hd, Bb) : 1.0, 0,
                      Bb, 0, tmp, sums);
        losses[step] = !mean ? sums[0] : (sums[1] != 0 ? sums[0] / sums[1] : NAN);
        int64_t in_off = A - buf;
        for (int l = L - 1; l >= 0; l--) {
            int64_t m = widths[l + 1], k = widths[l];
            if (l)
                in_off -= Bb * k;
            const REAL *in = l ? buf + in_off : Xb;
            F(gemm)(1, 0, m, k, Bb, G, m, in, k, 0, DW_(l));
            memset(db64, 0, (size_t)m * sizeof(double));
            for (int64_t i = 0; i < Bb; i++)
                for (int64_t j = 0; j < m; j++)
                    db64[j] += G[i * m + j];
            for (int64_t j = 0; j < m; j++)
                DB_(l)[j] = (REAL)db64[j];
            if (l) {           /* dh = (G W_l) * f'(a) for the layer below */
                F(gemm)(0, 0, Bb, k, m, G, m, W_(l), k, 0, dh);
                F(activation_backward)(dh, NULL, dh, in, act, alpha, Bb, k);
                REAL *swap = G;
                G = dh;
                dh = swap;
            }
        }
        for (int q = 0; q < 2 * L; q++)      /* W_0, b_0, W_1, ...: params, grads, s1, s2 */
            F(optimizer_update)(ptrs[q], ptrs[2 * L + q], ptrs[4 * L + q], ptrs[6 * L + q],
                                widths[q / 2 + 1] * (q % 2 ? 1 : widths[q / 2]), kind, lr, momentum,
                                nesterov, wd, b1, b2, adam_eps, t + step);
    }
#undef W_
#undef B_
#undef DW_
#undef DB_
    fbp_free(buf);
    fbp_free(db64);
    return FBP_OK;
}
#endif
