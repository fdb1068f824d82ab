/* Heads on scores: one pass per row (rows.h), rows split over fixed blocks. */
#ifndef REAL
#include "common.h"
#define TEMPLATE_FILE "heads.c"
#include "template.h"
#else
#include "rows.h"

/* Below FBP_HEADS_PARALLEL_MIN scores (fastbp.h) one thread is faster than a fork/join (and
 * leaves no OpenMP threads spinning beside the caller's next BLAS call). */

/* Every row of S: dS_i = f_i g_i with f_i = sw_i (/ sum(omega) under mean). The rows are cut
 * into nb fixed blocks (one per thread when large), whose sums are combined in block order:
 * the same bits at the same thread count, however the threads are scheduled. */
int F(heads)(REAL *dS, double *loss_rows, double *sums, const REAL *S, const fbp_head *head,
             int mean, int64_t B, int64_t n)
{
    if (B < 0 || n < 1 || !fbp_known_head(head))
        return FBP_EBADARG;
    F(head_t) h = F(head_view)(head, n);
    double scale = mean ? F(mean_scale)(&h, B) : 1.0;
    int nb = B * n >= FBP_HEADS_PARALLEL_MIN ? (int)fbp_min(fbp_threads(), B) : 1;
    nb = (int)fbp_min(nb, FBP_MAX_BLOCKS);
    double part[2 * FBP_MAX_BLOCKS];
    double small[256];          /* short rows: no malloc (a tiny call costs microseconds) */
    double *tmp = nb * n <= 256 ? small : fbp_malloc((size_t)nb * n * sizeof(double));
    if (!tmp)
        return FBP_ENOMEM;
    if (nb == 1 || fbp_forked_child())   /* (no OpenMP in a forked child: runtime.c) */
        for (int t = 0; t < nb; t++)
            F(head_block)(&h, S, NULL, dS, n, loss_rows, NULL, scale, t * B / nb, (t + 1) * B / nb,
                          0, tmp + (int64_t)t * n, part + 2 * t);
    else {
#pragma omp parallel for num_threads(nb) schedule(static, 1)
        for (int t = 0; t < nb; t++)
            F(head_block)(&h, S, NULL, dS, n, loss_rows, NULL, scale, t * B / nb, (t + 1) * B / nb,
                          0, tmp + (int64_t)t * n, part + 2 * t);
    }
    sums[0] = sums[1] = 0.0;
    for (int t = 0; t < nb; t++) {
        sums[0] += part[2 * t];
        sums[1] += part[2 * t + 1];
    }
    if (tmp != small)
        fbp_free(tmp);
    return FBP_OK;
}
#endif
