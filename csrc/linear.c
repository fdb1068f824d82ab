/* Linear layers: linear + head (fused rows, or chunked products), linear + activation forward
 * and backward. Matrix products go to OpenBLAS (NumPy's or SciPy's: fbp_sgemm / fbp_dgemm, see
 * runtime.c), except where fastbp's own do better (products.h: the chunked path's, which read
 * W where it lies instead of packing it per block of rows); the fused rows block small products
 * over registers. */
#ifndef REAL
#include "common.h"

#define FUSED_CK 256       /* k chunk of a task combining their partials */
/* fastbp's own products (products.h): register tiles of FBP_OWN_RA rows of C by FBP_OWN_KV
 * vectors (fastbp.h), blocks of OWN_LB classes or rows along the sum (a block of W or dW stays
 * in L2), scores OWN_SROWS rows a time when alone */
#define OWN_LB 128
#define OWN_SROWS 128
#define OWN_PACK 512       /* l of A's rows of a tile copied for contiguous broadcasts */

/* The bfloat16 products (dot16.h): tiles of D16_RA rows by D16_KV vectors, sums in blocks of
 * D16_PB pairs (512 k: a tile's B rows in L1), the backward's packs of G and W per D16_LB
 * classes at most (in L2; dX's partial then read and written once per 128 pairs of its sum) */
#define D16_RA 6
#define D16_KV 4
#define D16_PB 256
#define D16_LB 256
typedef void (*fbp_d16_product)(float *C, int64_t ldc, int trans, int add, const uint32_t *A,
                                int64_t sa, int64_t sp, const uint32_t *Bm, int64_t ldb, int64_t M,
                                int64_t N, int64_t P, const void *pf, int64_t pfb);
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && __GNUC__ >= 10 \
        && !defined(FBP_NO_CLONES)
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16")
#define D16(name) dot16_##name##_hw
#define D16_ATTR
#include "dot16.h"
#undef D16
#undef D16_ATTR
#pragma GCC pop_options
#define FBP_DOT16_HW 1
#else
#define FBP_DOT16_HW 0
#endif
#define D16_EMULATED
#define D16(name) dot16_##name##_emu
#define D16_ATTR FBP_HOT
#include "dot16.h"
#undef D16
#undef D16_ATTR
#undef D16_EMULATED

int fbp_dot16_hw(void)
{
#if FBP_DOT16_HW
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw");
#else
    return 0;
#endif
}

/* set 1: vdpbf16ps (where fbp_dot16_hw), 2: its arithmetic on float32 vectors; else NULL */
static fbp_d16_product dot16_set(int set)
{
#if FBP_DOT16_HW
    if (set == 1 && fbp_dot16_hw())
        return dot16_product_hw;
#endif
    return set == 2 ? dot16_product_emu : NULL;
}

/* two bfloat16 in a word, the first in the low half */
static inline uint32_t dot16_pair(uint16_t lo, uint16_t hi) { return lo | (uint32_t)hi << 16; }
static inline uint16_t dot16_round(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return fbp_to_bf16(u);
}

/* Xp (d / 2, ldt): X_c's rows (rows, d bfloat16) as pairs along k, transposed, zeros past rows;
 * only pairs p0..p1 (a team splits them). S's B operand. */
FBP_HOT static void dot16_xt(uint32_t *Xp, int64_t ldt, const uint16_t *X, int64_t rows, int64_t d,
                             int64_t p0, int64_t p1)
{
    for (int64_t p = p0; p < p1; p++) {
        for (int64_t r = 0; r < rows; r++)
            Xp[p * ldt + r] = dot16_pair(X[r * d + 2 * p], X[r * d + 2 * p + 1]);
        for (int64_t r = rows; r < ldt; r++)
            Xp[p * ldt + r] = 0;
    }
}

/* q[k] = (m0[k], m1[k]) & keep for k < d, zeros up to ldq */
FBP_INLINE void dot16_pair_rows(uint32_t *q, int64_t ldq, const uint16_t *m0, const uint16_t *m1,
                                uint32_t keep, int64_t d)
{
    for (int64_t k = 0; k < d; k++)
        q[k] = dot16_pair(m0[k], m1[k]) & keep;
    for (int64_t k = d; k < ldq; k++)
        q[k] = 0;
}

/* Q (ceil(rows / 2), ldq): M's rows (rows, d bfloat16, row stride ldm) paired over rows, Q[p][k] =
 * (M[2p][k], M[2p + 1][k]), zeros past the rows and past d; only pairs p0..p1. dW's B operand
 * (X_c) and dX's (a tile of W's rows). */
FBP_HOT static void dot16_rows(uint32_t *Q, int64_t ldq, const uint16_t *M, int64_t ldm,
                               int64_t rows, int64_t d, int64_t p0, int64_t p1)
{
    for (int64_t p = p0; p < p1; p++)
        dot16_pair_rows(Q + p * ldq, ldq, M + 2 * p * ldm,
                        M + (2 * p + 1 < rows ? 2 * p + 1 : 2 * p) * ldm,
                        2 * p + 1 < rows ? 0xffffffffu : 0xffffu, d);
}

/* The backward of a bfloat16 call's block of rows on nc classes, G (rows, ld) its float32 score
 * gradient, rounded to bfloat16 as it is packed (autocast's backward products take it in
 * bfloat16 too): per tile of lb classes (dot16_tile_classes), dW[tile] (+)= G[:, tile]^T X_c
 * (Xq: X_c's row pairs) and P (= or +=) G[:, tile] W[tile]. The classes: c0 .. c0 + nc, or
 * act[0 .. nc) (filter_eps's active ones: gathered, their dW rows summed in Tg and added to
 * dW's). pk: the thread's packs (dot16_pack_words). */
FBP_HOT static void dot16_backward(fbp_d16_product prod, const float *G, int64_t ld,
                                   const uint32_t *Xq, int64_t ldq, const uint16_t *W, float *dW,
                                   float *P, int add, int64_t rows, int64_t d, int64_t c0,
                                   int64_t nc, const int64_t *act, int64_t lb, uint32_t *pk)
{
    int64_t pr = (rows + 1) / 2, lr = lb / 2;
    uint32_t *Ga = pk, *Gr = Ga + lb * pr, *Wq = Gr + rows * lr;
    float *Tg = (float *)(Wq + lr * ldq);
    if (P && nc == 0)
        memset(P, 0, (size_t)(rows * d) * sizeof(float));
    for (int64_t j = 0; j < nc; j += lb) {
        int64_t mj = fbp_min(lb, nc - j), pj = (mj + 1) / 2;
        const int64_t *ix = act ? act + j : NULL;      /* the tile's classes: ix[c], or j0 + c */
        int64_t j0 = ix ? 0 : c0 + j;
        for (int64_t p = 0; p < pr; p++) {         /* G's columns paired over rows */
            const float *g0 = G + 2 * p * ld + j0, *g1 = 2 * p + 1 < rows ? g0 + ld : g0;
            uint32_t *ga = Ga + p * mj, keep = 2 * p + 1 < rows ? 0xffffffffu : 0xffffu;
            if (ix)
                for (int64_t c = 0; c < mj; c++)
                    ga[c] = dot16_pair(dot16_round(g0[ix[c]]), dot16_round(g1[ix[c]])) & keep;
            else
                for (int64_t c = 0; c < mj; c++)
                    ga[c] = dot16_pair(dot16_round(g0[c]), dot16_round(g1[c])) & keep;
        }
        if (ix) {
            prod(Tg, d, 0, 0, Ga, 1, mj, Xq, ldq, mj, d, pr, NULL, 0);
            for (int64_t c = 0; c < mj; c++)
                for (int64_t k = 0; k < d; k++)
                    dW[ix[c] * d + k] += Tg[c * d + k];
        } else
            prod(dW + j0 * d, d, 0, add, Ga, 1, mj, Xq, ldq, mj, d, pr, P ? W + j0 * d : NULL,
                 mj * d * (int64_t)sizeof(uint16_t));   /* the tile's W rows, packed next */
        if (!P)
            continue;
        for (int64_t r = 0; r < rows; r++) {       /* G's rows paired over classes */
            const float *g = G + r * ld + j0;
            uint32_t *gr = Gr + r * lr;
            if (ix)
                for (int64_t p = 0; p < mj / 2; p++)
                    gr[p] = dot16_pair(dot16_round(g[ix[2 * p]]), dot16_round(g[ix[2 * p + 1]]));
            else
                for (int64_t p = 0; p < mj / 2; p++)
                    gr[p] = dot16_pair(dot16_round(g[2 * p]), dot16_round(g[2 * p + 1]));
            if (mj % 2)
                gr[pj - 1] = dot16_round(g[ix ? ix[mj - 1] : mj - 1]);
        }
        for (int64_t p = 0; p < pj; p++) {         /* W's rows paired over classes */
            int64_t r0 = ix ? ix[2 * p] : j0 + 2 * p,
                    r1 = 2 * p + 1 < mj ? (ix ? ix[2 * p + 1] : j0 + 2 * p + 1) : r0;
            dot16_pair_rows(Wq + p * ldq, ldq, W + r0 * d, W + r1 * d,
                            2 * p + 1 < mj ? 0xffffffffu : 0xffffu, d);
        }
        prod(P, d, 0, j > 0, Gr, lr, 1, Wq, ldq, rows, d, pj, NULL, 0);
    }
}

/* A bfloat16 call's chunked_rows: the dot16 set's product and X's and W's bfloat16 bits */
typedef struct {
    fbp_d16_product dot;
    const uint16_t *X, *W;
} fbp_dot16_call;

/* dot16_backward's tile of classes: D16_LB, or all n classes rounded up to even */
static int64_t dot16_tile_classes(int64_t n) { return fbp_min(D16_LB, (n + 1) / 2 * 2); }

/* words of one thread's packs for dot16_backward; filtered: with Tg (lb rows of ldq) and n
 * flags (filter_eps's active classes) */
static int64_t dot16_pack_words(int64_t chunk, int64_t ldq, int filtered, int64_t n)
{
    int64_t lb = dot16_tile_classes(n);
    return lb * ((chunk + 1) / 2) + chunk * (lb / 2) + lb / 2 * ldq
           + (filtered ? lb * ldq + (n + 3) / 4 : 0);
}

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
/* m rounded up to whole vectors */
static int64_t F(vceil)(int64_t m) { return (m + VLR - 1) / VLR * VLR; }

/* The fused rows' kernel sets (fused.h), one per ISA the build targets; linear_fused runs the
 * set fbp_tile() names. Each set's functions are compiled for its ISA by the pragma around it. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(FBP_NO_CLONES)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")
#define FBP_VB 64
#define V(name) F(name##_avx512)
#include "fused.h"
#undef FBP_VB
#undef V
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define FBP_VB 32
#define V(name) F(name##_avx2)
#include "fused.h"
#undef FBP_VB
#undef V
#pragma GCC pop_options
#define FBP_FUSED_ISAS 3
#else
#define FBP_FUSED_ISAS 1
#endif
#define FBP_VB 16
#define V(name) F(name##_sse)
#include "fused.h"
#undef FBP_VB
#undef V
/* the AVX-512 set's tiles compiled for the baseline ISA (its 64-byte vectors split in four):
 * slow, but the same loops, so the tests check the AVX-512 set's logic on any x86-64 */
#define FBP_VB 64
#define V(name) F(name##_wide)
#include "fused.h"
#undef FBP_VB
#undef V

/* the kernel sets by fbp_tile(): AVX-512F, AVX2, SSE2, the AVX-512 tiles on SSE2 */
typedef struct {
    int64_t (*block_rows)(int64_t ld, int64_t rows);
    int64_t (*scratch)(int64_t n, int64_t d, int64_t ld, int64_t rb);
    void (*rows)(const F(head_t) *, const REAL *, const REAL *, const REAL *, double, int64_t,
                 int64_t, int64_t, int64_t, int64_t, REAL *, REAL *, const fbp_bf16_rows *,
                 double *);
} F(fused_set);
#define FBP_SET(isa) {F(block_rows_##isa), F(scratch_##isa), F(linear_rows_##isa)}
static const F(fused_set) F(fused_sets)[] = {
#if FBP_FUSED_ISAS == 3
        FBP_SET(avx512), FBP_SET(avx2),
#else
        FBP_SET(sse), FBP_SET(sse),
#endif
        FBP_SET(sse), FBP_SET(wide)};
#undef FBP_SET

#include "products.h"

/* W's rows lo..hi copied to Wp with row stride ld, zero past d */
static void F(pack_rows)(REAL *Wp, const REAL *W, int64_t lo, int64_t hi, int64_t d, int64_t ld)
{
    for (int64_t j = lo; j < hi; j++) {
        memcpy(Wp + j * ld, W + j * d, (size_t)d * sizeof(REAL));
        memset(Wp + j * ld + d, 0, (size_t)(ld - d) * sizeof(REAL));
    }
}

/* dW[j, k0:k0 + FUSED_CK] from the nb blocks' partials (block t's at part + t per, row stride
 * ld): a pairwise tree over the blocks, so the bits depend on nb alone, never on which thread
 * ran which task; one task per (class, k chunk), enough for any team at few classes */
static void F(combine_partials)(REAL *dW, REAL *part, int64_t per, int nb, int64_t j, int64_t k0,
                                int64_t d, int64_t ld)
{
    int64_t k1 = fbp_min(k0 + FUSED_CK, d), at = j * ld;
    for (int64_t w = 1; w < nb; w *= 2)
        for (int64_t t = 0; t + w < nb; t += 2 * w) {
            REAL *dst = part + t * per + at;
            const REAL *src = part + (t + w) * per + at;
            for (int64_t k = k0; k < k1; k++)
                dst[k] += src[k];
        }
    memcpy(dW + j * d + k0, part + at + k0, (size_t)(k1 - k0) * sizeof(REAL));
}

/* linear_fused; bf: a bfloat16 call's X and dX (linear_fused_bf16), else NULL */
static int F(fused)(REAL *dW, REAL *db, REAL *dX, double *sums, const REAL *X, const REAL *W,
                    const REAL *b, const fbp_head *head, int mean, int nblocks, int64_t B,
                    int64_t d, int64_t n, const fbp_bf16_rows *bf)
{
    if (B < 0 || d < 0 || n < 1 || nblocks < 1 || !fbp_known_head(head))
        return FBP_EBADARG;
    F(head_t) h = F(head_view)(head, n);
    double scale = mean ? F(mean_scale)(&h, B) : 1.0;
    int nb = (int)fbp_min(fbp_min(nblocks, FBP_MAX_BLOCKS), fbp_max(B, 1));
    /* Row stride of the copies: d rounded up to whole 64-byte lines (whole vectors of every
     * ISA), an odd number of them, so the rows of xs and the n of Wp and pdW fall in different
     * L1 sets (rows a power of two apart share one set: docs/performance.md, "C loop
     * structure"). */
    int64_t kw = F(vceil)(d), ld = kw + ((kw / VLR) % 2 ? 0 : VLR);
    /* the kernel set in force (fused.h), its rows per block within the block's rows */
    const F(fused_set) *set = &F(fused_sets)[fbp_tile()];
    int64_t rb = set->block_rows(ld, (B + nb - 1) / nb), per = set->scratch(n, d, ld, rb);
    /* Wp (n, ld), then one linear_rows scratch per block. Tiny problems use the stack: a
     * malloc would cost more than their arithmetic (a few microseconds in all). */
    int64_t nld = n * ld;
    REAL small[2048 + 64 / sizeof(REAL)];
    double part[2 * FBP_MAX_BLOCKS];
    int on_stack = nb == 1 && nld + per <= 2048;
    void *raw = on_stack ? NULL : fbp_malloc((size_t)(nld + nb * per + VLR) * sizeof(REAL));
    if (!on_stack && !raw)
        return FBP_ENOMEM;
    /* 64-byte aligned, so every part of every block's scratch is (see linear_rows) */
    REAL *buf = (REAL *)(((uintptr_t)(on_stack ? (void *)small : raw) + 63) & ~(uintptr_t)63);
    int64_t nk = (d + FUSED_CK - 1) / FUSED_CK;     /* the combine's tasks: (class, k chunk) */
    if (nb == 1 || fbp_forked_child()) {  /* one block: a region costs more than tiny work;
                                           * a forked child has no OpenMP (runtime.c) */
        F(pack_rows)(buf, W, 0, n, d, ld);
        for (int t = 0; t < nb; t++)
            set->rows(&h, X, buf, b, scale, t * B / nb, (t + 1) * B / nb, d, ld, rb,
                      buf + nld + t * per, dX, bf, part + 2 * t);
        for (int64_t q = 0; q < n * nk; q++)
            F(combine_partials)(dW, buf + nld, per, nb, q / nk, q % nk * FUSED_CK, d, ld);
    } else
#pragma omp parallel num_threads((int)fbp_min(nb, fbp_threads()))
    {
#pragma omp for schedule(static)
        for (int64_t j = 0; j < n; j++)
            F(pack_rows)(buf, W, j, j + 1, d, ld);
        /* blocks handed out as threads free up (a core the host takes away for a while then
         * delays one block, not half the rows); their partials combine in a fixed order */
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < nb; t++)
            set->rows(&h, X, buf, b, scale, t * B / nb, (t + 1) * B / nb, d, ld, rb,
                      buf + nld + t * per, dX, bf, part + 2 * t);
#pragma omp for schedule(static)
        for (int64_t q = 0; q < n * nk; q++)
            F(combine_partials)(dW, buf + nld, per, nb, q / nk, q % nk * FUSED_CK, d, ld);
    }
    /* db and the sums: O(nb n), the same pairwise order */
    REAL *p0 = buf + nld;
    for (int64_t w = 1; w < nb; w *= 2)
        for (int64_t t = 0; t + w < nb; t += 2 * w) {
            double *pb = (double *)(p0 + t * per + nld);
            const double *pw = (const double *)(p0 + (t + w) * per + nld);
            for (int64_t j = 0; j < n; j++)
                pb[j] += pw[j];
            part[2 * t] += part[2 * (t + w)];
            part[2 * t + 1] += part[2 * (t + w) + 1];
        }
    sums[0] = part[0];
    sums[1] = part[1];
    if (db)
        for (int64_t j = 0; j < n; j++)
            db[j] = (REAL)((const double *)(p0 + nld))[j];
    fbp_free(raw);
    return FBP_OK;
}

int F(linear_fused)(REAL *dW, REAL *db, REAL *dX, double *sums, const REAL *X, const REAL *W,
                    const REAL *b, const fbp_head *head, int mean, int nblocks, int64_t B,
                    int64_t d, int64_t n)
{
    return F(fused)(dW, db, dX, sums, X, W, b, head, mean, nblocks, B, d, n, NULL);
}

#if !FBP_DOUBLE
int linear_fused_bf16(float *dW, float *db, float *dX, uint16_t *dXh, double *sums,
                      const uint16_t *Xh, const float *W, const float *b, const fbp_head *head,
                      int mean, int nblocks, int64_t B, int64_t d, int64_t n)
{
    if (!Xh || (dX && dXh))
        return FBP_EBADARG;
    fbp_bf16_rows bf = {Xh, dXh};
    return F(fused)(dW, db, dX, sums, NULL, W, b, head, mean, nblocks, B, d, n, &bf);
}
#endif

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

/* filter_eps's backward for the classes c0..c0 + nc of one block of rows whose gradient G is in
 * S (rows, row stride ld): only the classes with some |g_ij| >= thr_i (thr_i = eps omega_i,
 * scaled as G) take part in dW[c] += G[:, c]^T X_c and P = G[:, c] W[c] (docs/math.md,
 * "filter_eps"). Their columns are packed in place at the front of the slice, row by row, then
 * per group of at most `group` classes W's rows are gathered into Wg and dW's partial into Tg
 * (group d REALs each, and nc more in Tg: the flags), the partial added to dW's rows. Mostly
 * active slices take the dense products, with the inactive classes' entries zeroed. */
static void F(filtered_slice)(const F(head_t) * h, REAL *S, int64_t ld, const REAL *Xc,
                              const REAL *W, REAL *dW, REAL *P, double thr, int64_t lo,
                              int64_t rows, int64_t d, int64_t c0, int64_t nc, int64_t group,
                              int64_t *idx, REAL *Wg, REAL *Tg, int own)
{
    int64_t na = 0;
    char *act = (char *)Tg;         /* nc flags, read before Tg is written */
    REAL *G = S + c0;
    memset(act, 0, (size_t)nc);
    for (int64_t r = 0; r < rows; r++) {
        REAL t = (REAL)(thr * F(row_weight)(h, lo + r));
        const REAL *g = G + r * ld;
        for (int64_t j = 0; j < nc; j++)
            act[j] |= g[j] != 0 && !(fabs(g[j]) < t);    /* NaN is kept, as an active entry */
    }
    for (int64_t j = 0; j < nc; j++)
        if (act[j])
            idx[na++] = j;
    if (2 * na > nc) {            /* mostly active: the dense products, the rest zeroed */
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < nc; j++)
                G[r * ld + j] = act[j] ? G[r * ld + j] : (REAL)0;
        if (own)
            F(own_backward)(S, ld, Xc, W, dW, P, 1, rows, d, c0, nc);
        else {
            F(gemm_ld)(1, 0, nc, d, rows, G, ld, Xc, d, 1, dW + c0 * d, d);
            if (P)
                F(gemm_ld)(0, 0, rows, d, nc, G, ld, W + c0 * d, d, 0, P, d);
        }
        return;
    }
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < na; k++)
            G[r * ld + k] = G[r * ld + idx[k]];
    if (P && !na)
        memset(P, 0, (size_t)(rows * d) * sizeof(REAL));
    for (int64_t g0 = 0; g0 < na; g0 += group) {
        int64_t ng = fbp_min(group, na - g0);
        for (int64_t k = 0; k < ng; k++)
            memcpy(Wg + k * d, W + (c0 + idx[g0 + k]) * d, (size_t)d * sizeof(REAL));
        if (own)
            F(own_product)(Tg, d, 0, 0, G + g0, 1, ld, Xc, d, ng, d, rows, rows, NULL, 0);
        else
            F(gemm_ld)(1, 0, ng, d, rows, G + g0, ld, Xc, d, 0, Tg, d);
        for (int64_t k = 0; k < ng; k++) {
            REAL *dst = dW + (c0 + idx[g0 + k]) * d, *src = Tg + k * d;
            for (int64_t q = 0; q < d; q++)
                dst[q] += src[q];
        }
        if (P && own)
            F(own_product)(P, d, 0, g0 > 0, G + g0, ld, 1, Wg, d, rows, d, ng, OWN_LB, NULL, 0);
        else if (P)
            F(gemm_ld)(0, 0, rows, d, ng, G + g0, ld, Wg, d, g0 ? 1 : 0, P, d);
    }
}

/* What a team of chunked_rows shares: the call's arguments and the scratch. */
typedef struct {
    const F(head_t) * h;
    REAL *dW, *dX, *S, *P, *fs, *Xt;
    double *db64, *pdb, *lrow, *tmp;
    const REAL *X, *W, *b;
    double scale, thr;               /* thr > 0: filter_eps's threshold (filtered_slice) */
    int64_t chunk, B, d, group, *idx;
    int own;                         /* FBP_OWN_* bits: products of products.h, else BLAS's */
    int64_t ldt;                     /* own: Xt's row length, a whole number of vectors */
    /* a bfloat16 call's products on dot16.h (dot: the set's product, else NULL; X and W NULL):
     * X and W's bfloat16 bits, X_c's pairs for S (xp, ldt) and dW (xq, ldq), each thread's
     * packs (pk, pkw words) */
    fbp_d16_product dot;
    const uint16_t *Xh, *Wh;
    uint32_t *xp, *xq, *pk;
    int64_t ldq, pkw;
    int64_t lds;                     /* S's row stride (by classes) */
} F(team_t);

/* The team by rows (fewer than 2 CHUNKED_MIN_CLASSES classes, where a thread's share of the
 * classes would make its products narrow), in two steps. Step 0: thread t owns rows
 * [t r / T, (t + 1) r / T) of every block of r rows: S_t = X_t W^T, the head, dX_t = G_t W, and
 * its own partials dW_t (+)= G_t^T X_t (in P) and db_t += G_t's column sums (in pdb). Step 1,
 * after every thread's step 0: dW and db = the partials summed pairwise over t, the elements
 * split over the team. T = 1: dW and db directly, no step 1. */
static void F(rows_step)(const F(team_t) * a, int T, int t, int step)
{
    const F(head_t) *h = a->h;
    int64_t n = h->n, d = a->d, nd = n * d, wrote = 0;
    if (step == 1 && (T == 1 || !a->dW))
        return;
    if (step == 1) {
        int64_t q0 = t * nd / T, q1 = (t + 1) * nd / T;
        for (int64_t w = 1; w < T; w *= 2)
            for (int64_t u = 0; u + w < T; u += 2 * w) {
                REAL *dst = a->P + u * nd;
                const REAL *src = a->P + (u + w) * nd;
                for (int64_t q = q0; q < q1; q++)
                    dst[q] += src[q];
            }
        if (q1 > q0)            /* (d = 0: no partials) */
            memcpy(a->dW + q0, a->P + q0, (size_t)(q1 - q0) * sizeof(REAL));
        for (int64_t j = t * n / T; a->db64 && j < (t + 1) * n / T; j++) {
            for (int64_t w = 1; w < T; w *= 2)
                for (int64_t u = 0; u + w < T; u += 2 * w)
                    a->pdb[u * n + j] += a->pdb[(u + w) * n + j];
            a->db64[j] = a->pdb[j];
        }
        return;
    }
    REAL *pw = T == 1 ? a->dW : a->P + t * nd;
    double *pb = T == 1 ? a->db64 : a->pdb + t * n, part[2];
    for (int64_t lo = 0; lo < a->B; lo += a->chunk) {
        int64_t rows = fbp_min(a->chunk, a->B - lo), r0 = t * rows / T,
                nr = (t + 1) * rows / T - r0;
        const REAL *Xr = a->X + (lo + r0) * d;
        REAL *Sr = a->S + t * ((a->chunk + T - 1) / T) * n;   /* the thread's own rows of S:
                                                               * no barrier between blocks */
        if (!nr)
            continue;
        REAL *Xt = a->Xt + t * d * a->ldt;      /* own: the thread's rows transposed */
        if (a->own & FBP_OWN_SCORES) {
            F(own_xt)(Xt, a->ldt, Xr, nr, d, 0, d);
            F(own_scores)(Sr, n, Xt, a->ldt, a->W, n, nr, d);
        } else
            F(gemm_ld)(0, 1, nr, n, d, Xr, d, a->W, d, 0, Sr, n);
        F(head_block)(h, Sr, a->b, Sr, n, a->lrow + lo + r0, NULL, a->scale, lo + r0, lo + r0 + nr,
                      lo + r0, a->tmp + t * n, part);
        if (!a->dW)             /* the loss alone */
            continue;
        if (pb)
            for (int64_t r = 0; r < nr; r++)
                for (int64_t j = 0; j < n; j++)
                    pb[j] += Sr[r * n + j];
        if (a->own & FBP_OWN_BACKWARD)
            F(own_backward)(Sr, n, Xr, a->W, pw, a->dX ? a->dX + (lo + r0) * d : NULL, (int)wrote,
                            nr, d, 0, n);
        else {
            F(gemm_ld)(1, 0, n, d, nr, Sr, n, Xr, d, wrote ? 1 : 0, pw, d);
            if (a->dX)
                F(gemm_ld)(0, 0, nr, d, n, Sr, n, a->W, d, 0, a->dX + (lo + r0) * d, d);
        }
        wrote = 1;
    }
    if (!wrote && a->dW && nd)
        memset(pw, 0, (size_t)nd * sizeof(REAL));
}

/* The team by classes: thread t owns the classes c_t = [t n / T, (t + 1) n / T). Per block of
 * rows X_c (lo.. lo + r), five steps, each after every thread's previous one:
 *   0. own products: Xt = X_c^T, its rows split over the team
 *   1. S[:, c_t] = X_c W[c_t]^T                   (products on the thread's own classes)
 *   2. bias + head on whole rows, the rows split over the team; lrow[i]: row i's loss
 *   3. db64[c_t] += S[:, c_t]'s column sums in row order; dW[c_t] (+)= S[:, c_t]^T X_c and
 *      P_t = S[:, c_t] W[c_t] (dX_c's part from the thread's classes), with filter_eps on the
 *      slice's active classes only (filtered_slice)
 *   4. dX_c = the P_t summed pairwise over t, the columns split over the team (T > 1).
 * dW, db and the loss are summed in an order the team does not change; dX's tree depends on T.
 * Every thread runs each step on a share of the block: no pass over S waits on one thread. */
static void F(classes_step)(const F(team_t) * a, int T, int t, int64_t lo, int step)
{
    const F(head_t) *h = a->h;
    int64_t n = h->n, ld = a->lds, d = a->d, chunk = a->chunk, c0 = t * n / T,
            nc = (t + 1) * n / T - c0, rows = fbp_min(chunk, a->B - lo);
    REAL *S = a->S,
         *Pt = T == 1 ? (a->dX ? a->dX + lo * d : NULL) : (a->P ? a->P + t * chunk * d : NULL);
    const REAL *Xc = a->X ? a->X + lo * d : NULL;
    double part[2];
    if (step == 0 && a->dot) {          /* X_c's pairs: for S by k, for dW by rows */
        int64_t pr = (rows + 1) / 2;
        dot16_xt(a->xp, a->ldt, a->Xh + lo * d, rows, d, t * (d / 2) / T, (t + 1) * (d / 2) / T);
        dot16_rows(a->xq, a->ldq, a->Xh + lo * d, d, rows, d, t * pr / T, (t + 1) * pr / T);
    } else if (step == 1 && a->dot)
        a->dot((float *)S + c0, ld, 1, 0, (const uint32_t *)(const void *)(a->Wh + c0 * d), d / 2,
               1, a->xp, a->ldt, nc, rows, d / 2, NULL, 0);
    else if (step == 0 && (a->own & FBP_OWN_SCORES))
        F(own_xt)(a->Xt, a->ldt, Xc, rows, d, t * d / T, (t + 1) * d / T);
    else if (step == 1 && (a->own & FBP_OWN_SCORES))
        F(own_scores)(S + c0, ld, a->Xt, a->ldt, a->W + c0 * d, nc, rows, d);
    else if (step == 1)
        F(gemm_ld)(0, 1, rows, nc, d, Xc, d, a->W + c0 * d, d, 0, S + c0, ld);
    else if (step == 2)
        F(head_block)(h, S, a->b, S, ld, a->lrow + lo, NULL, a->scale, lo + t * rows / T,
                      lo + (t + 1) * rows / T, lo, a->tmp + t * n, part);
    else if (step >= 3 && !a->dW)           /* the loss alone */
        return;
    else if (step == 3) {
        if (a->db64)
            for (int64_t r = 0; r < rows; r++)
                for (int64_t j = c0; j < c0 + nc; j++)
                    a->db64[j] += S[r * ld + j];
        if (a->dot && a->thr > 0) {     /* filter_eps: the slice's active classes only */
            uint32_t *pk = a->pk + t * a->pkw;
            char *act = (char *)(pk + a->pkw - (n + 3) / 4);
            int64_t na = 0;
            memset(act, 0, (size_t)nc);
            for (int64_t r = 0; r < rows; r++) {
                REAL thr = (REAL)(a->thr * F(row_weight)(h, lo + r));
                const REAL *g = S + r * ld + c0;
                for (int64_t j = 0; j < nc; j++)    /* NaN is kept, as an active entry */
                    act[j] |= g[j] != 0 && !(fabs(g[j]) < thr);
            }
            for (int64_t j = 0; j < nc; j++)
                if (act[j])
                    a->idx[c0 + na++] = c0 + j;
            dot16_backward(a->dot, (const float *)S, ld, a->xq, a->ldq, a->Wh, (float *)a->dW,
                           (float *)Pt, 1, rows, d, c0, na, a->idx + c0, dot16_tile_classes(n), pk);
        } else if (a->dot)
            dot16_backward(a->dot, (const float *)S, ld, a->xq, a->ldq, a->Wh, (float *)a->dW,
                           (float *)Pt, lo > 0, rows, d, c0, nc, NULL, dot16_tile_classes(n),
                           a->pk + t * a->pkw);
        else if (a->thr > 0) {
            REAL *Wg = a->fs + t * (2 * a->group * d + n);
            F(filtered_slice)(h, S, ld, Xc, a->W, a->dW, Pt, a->thr, lo, rows, d, c0, nc, a->group,
                              a->idx + c0, Wg, Wg + a->group * d, a->own & FBP_OWN_BACKWARD);
        } else if (a->own & FBP_OWN_BACKWARD)
            F(own_backward)(S, ld, Xc, a->W, a->dW, Pt, lo > 0, rows, d, c0, nc);
        else {
            F(gemm_ld)(1, 0, nc, d, rows, S + c0, ld, Xc, d, lo ? 1 : 0, a->dW + c0 * d, d);
            if (Pt)
                F(gemm_ld)(0, 0, rows, d, nc, S + c0, ld, a->W + c0 * d, d, 0, Pt, d);
        }
    } else if (step == 4 && T > 1 && a->dX && a->P) {     /* (no partials when d = 0) */
        int64_t k0 = t * d / T, k1 = (t + 1) * d / T;
        for (int64_t w = 1; w < T; w *= 2)
            for (int64_t u = 0; u + w < T; u += 2 * w)
                for (int64_t r = 0; r < rows; r++) {
                    REAL *dst = a->P + (u * chunk + r) * d;
                    const REAL *src = a->P + ((u + w) * chunk + r) * d;
                    for (int64_t k = k0; k < k1; k++)
                        dst[k] += src[k];
                }
        for (int64_t r = 0; r < rows; r++)
            memcpy(a->dX + (lo + r) * d + k0, a->P + r * d + k0, (size_t)(k1 - k0) * sizeof(REAL));
    }
}

/* Every step of the team in order, each on every thread before the next: on T OpenMP threads,
 * or (par = 0: one thread, or a forked child, which has no OpenMP) the threads' shares one
 * after the other -- the same arithmetic, so the same bits. */
static void F(team_run)(const F(team_t) * a, int T, int by_rows, int par)
{
    int64_t blocks = by_rows ? 1 : (a->B + a->chunk - 1) / a->chunk, steps = by_rows ? 2 : 5;
    if (!par) {
        for (int64_t k = 0; k < blocks * steps; k++)
            for (int t = 0; t < T; t++)
                if (by_rows)
                    F(rows_step)(a, T, t, (int)k);
                else
                    F(classes_step)(a, T, t, k / steps * a->chunk, (int)(k % steps));
        return;
    }
#pragma omp parallel num_threads(T)
    {
        int t = omp_get_thread_num();
        for (int64_t k = 0; k < blocks * steps; k++) {
            if (by_rows)
                F(rows_step)(a, T, t, (int)k);
            else
                F(classes_step)(a, T, t, k / steps * a->chunk, (int)(k % steps));
#pragma omp barrier
        }
    }
}

/* linear_chunked's row blocks (cols = n): on the plan's team (tuning.plan) when BLAS can be
 * held to one thread (else BLAS's own threads run the products and the head runs on the
 * caller's), never more than the set_num_threads value (a traced XLA plan may predate it): by
 * classes (classes_step) or by rows (rows_step, exact only). Scratch: the (chunk, n) score
 * block S, lrow (each row's loss, summed here in row order), tmp (T n doubles); a team's
 * partials P (dX's by classes, dW's and db's by rows); with filter_eps, per thread Wg and Tg
 * within its share of half the score block, and idx (n). */
static int F(chunked_rows)(const F(head_t) * h, REAL *dW, double *db64, REAL *dX, double *sums,
                           const REAL *X, const REAL *W, const REAL *b, double scale, double thr,
                           int own, int team, int by_rows, int64_t chunk, int64_t B, int64_t d,
                           double *loss_rows, const fbp_dot16_call *bf)
{
    int64_t n = h->n;
    int T = (int)fbp_max(1, fbp_min(fbp_threads(), team));
    /* BLAS held to one thread where the team calls it: any product not own (filter_eps's
     * slices may; the loss alone has only the scores') */
    int blas = bf   ? 0
               : dW ? own != (FBP_OWN_SCORES | FBP_OWN_BACKWARD) || thr > 0
                    : !(own & FBP_OWN_SCORES),
        hold = T > 1 && blas;
    if (hold && !fbp_blas_hold())
        T = 1;
    F(team_t)
    a = {.h = h,
         .dW = dW,
         .dX = dX,
         .db64 = db64,
         .X = X,
         .W = W,
         .b = b,
         .scale = scale,
         .thr = thr,
         .chunk = chunk,
         .B = B,
         .d = d,
         .own = own,
         .dot = bf ? bf->dot : NULL,
         .Xh = bf ? bf->X : NULL,
         .Wh = bf ? bf->W : NULL};
    /* filter_eps's groups: all threads' Wg and Tg within half the score block */
    a.group = fbp_max(1, fbp_min(n, chunk * n / (4 * fbp_max(d, 1))) / T);
    int64_t partials = T == 1 || !dW ? 0 : by_rows ? n * d : dX ? chunk * d : 0;
    /* by rows, thread t's share of S starts at t ceil(chunk / T) rows */
    /* S's rows: n, or with the dot16 products (whose tiles store S^T, a column of 64 rows at a
     * time) an odd number of 64-byte lines, so that those rows fall in distinct L1 sets */
    a.lds = bf ? ((n + 15) / 16 | 1) * 16 : n;
    a.S = fbp_malloc((size_t)((by_rows ? T * ((chunk + T - 1) / T) : chunk) * a.lds)
                     * sizeof(REAL));
    /* own products: X_c^T, by rows one per thread of its rows */
    a.ldt = F(vceil)(by_rows ? (chunk + T - 1) / T : chunk);
    a.Xt = own & FBP_OWN_SCORES ? fbp_malloc((size_t)((by_rows ? T : 1) * d * a.ldt) * sizeof(REAL))
                                : NULL;
    if (bf) {          /* the dot16 products' operands: whole tiles of 16 D16_KV words */
        int64_t kw = 16 * D16_KV;
        a.ldt = (chunk + kw - 1) / kw * kw;
        a.ldq = (d + kw - 1) / kw * kw;
        a.pkw = dot16_pack_words(chunk, a.ldq, thr > 0, n);
        a.xp = fbp_malloc((size_t)fbp_max(d / 2 * a.ldt, 1) * sizeof(uint32_t));
        a.xq = fbp_malloc((size_t)((chunk + 1) / 2 * a.ldq) * sizeof(uint32_t));
        a.pk = fbp_malloc((size_t)(T * a.pkw) * sizeof(uint32_t));
    }
    a.P = partials ? fbp_malloc((size_t)(T * partials) * sizeof(REAL)) : NULL;
    a.pdb = T > 1 && by_rows && dW ? fbp_calloc((size_t)(T * n), sizeof(double)) : NULL;
    a.lrow = loss_rows ? loss_rows : fbp_malloc((size_t)fbp_max(B, 1) * sizeof(double));
    a.tmp = fbp_malloc((size_t)(T * n) * sizeof(double));
    a.fs = thr > 0 && !bf ? fbp_malloc((size_t)(T * (2 * a.group * d + n)) * sizeof(REAL)) : NULL;
    a.idx = thr > 0 ? fbp_malloc((size_t)n * sizeof(int64_t)) : NULL;
    int status = a.S && a.lrow && a.tmp && (a.P || !partials)
                                 && (a.pdb || T == 1 || !by_rows || !dW)
                                 && (a.Xt || !(own & FBP_OWN_SCORES))
                                 && (thr == 0 || ((a.fs || bf) && a.idx))
                                 && (!bf || (a.xp && a.xq && a.pk))
                         ? FBP_OK
                         : FBP_ENOMEM;
    if (dW && (B == 0 || thr > 0))  /* (else the first block's product writes dW) */
        memset(dW, 0, (size_t)(n * d) * sizeof(REAL));
    if (status == FBP_OK)
        F(team_run)(&a, T, by_rows, T > 1 && !fbp_forked_child());
    if (hold && T > 1)
        fbp_blas_release();
    for (int64_t i = 0; i < B && status == FBP_OK; i++) {     /* in row order */
        sums[0] += a.lrow[i];
        sums[1] += F(row_weight)(h, i);
    }
    fbp_free(a.S);
    fbp_free(a.Xt);
    fbp_free(a.xp);
    fbp_free(a.xq);
    fbp_free(a.pk);
    fbp_free(a.P);
    fbp_free(a.pdb);
    if (a.lrow != loss_rows)
        fbp_free(a.lrow);
    fbp_free(a.tmp);
    fbp_free(a.fs);
    fbp_free(a.idx);
    return status;
}

/* The preconditions linear_chunked and linear_loss share (a status) */
static int F(check_chunked)(const fbp_head *head, int own, int team, int by_rows, int64_t chunk,
                            int64_t B, int64_t d, int64_t n)
{
    if (B < 0 || d < 0 || n < 1 || chunk < 1 || !fbp_known_head(head) || own < 0
        || own > (FBP_OWN_SCORES | FBP_OWN_BACKWARD) || team < 1 || (by_rows != 0 && by_rows != 1))
        return FBP_EBADARG;
    if (!fbp_fits_int(B) || !fbp_fits_int(d) || !fbp_fits_int(n))
        return FBP_ETOOBIG;
    return FBP_GEMM ? FBP_OK : FBP_ENOBLAS;
}

/* Per block of chunk rows: S = X_c W^T, bias + head, dW += S^T X_c, dX_c = S W, on a team
 * (chunked_rows); own (FBP_OWN_* bits): those products by fastbp's own kernels (products.h),
 * the others by BLAS. cols < n: softmax heads in (chunk, cols) blocks instead (linear_columns),
 * their head on one thread between BLAS's products. filter_eps > 0 (softmax heads, cols = n): the two
 * backward products on the active classes only (filtered_slice). */
int F(linear_chunked)(REAL *dW, REAL *db, REAL *dX, double *sums, const REAL *X, const REAL *W,
                      const REAL *b, const fbp_head *head, int mean, int64_t chunk, int64_t cols,
                      double filter_eps, int own, int team, int by_rows, int64_t B, int64_t d,
                      int64_t n)
{
    int softmax = head && (head->code == FBP_SOFTMAX || head->code == FBP_SOFTMAX_PROBS);
    if (cols < 1 || (cols < n && (!softmax || head->softcap != 0 || head->z_loss != 0))
        || !(filter_eps >= 0) || (filter_eps > 0 && (!softmax || by_rows)))
        return FBP_EBADARG;
    int status = F(check_chunked)(head, own, team, by_rows, chunk, B, d, n);
    if (status)
        return status;
    F(head_t) h = F(head_view)(head, n);
    double scale = mean ? F(mean_scale)(&h, B) : 1.0;
    chunk = fbp_min(chunk, fbp_max(B, 1));
    cols = fbp_min(cols, n);
    double *db64 = fbp_calloc((size_t)n, sizeof(double));
    if (!db64)
        return FBP_ENOMEM;
    sums[0] = sums[1] = 0.0;
    if (cols == n)
        status = F(chunked_rows)(&h, dW, db ? db64 : NULL, dX, sums, X, W, b, scale,
                                 filter_eps * scale, own, team, by_rows, chunk, B, d, NULL, NULL);
    else {
        REAL *S = fbp_malloc((size_t)(chunk * cols) * sizeof(REAL));
        double *tmp = fbp_malloc((size_t)(n + 5 * chunk) * sizeof(double));
        if (S && tmp) {
            if (B == 0)
                memset(dW, 0, (size_t)(n * d) * sizeof(REAL));
            F(linear_columns)(&h, dW, db ? db64 : NULL, dX, sums, X, W, b, scale, chunk, cols, B, d,
                              S, tmp + n, tmp);
        } else
            status = FBP_ENOMEM;
        fbp_free(S);
        fbp_free(tmp);
    }
    if (db && status == FBP_OK)
        for (int64_t j = 0; j < n; j++)
            db[j] = (REAL)db64[j];
    fbp_free(db64);
    return status;
}

/* The loss alone: chunked_rows without dW (no gradient products); loss_rows (B,) or NULL: the
 * rows' weighted losses; sums: their sum and the rows' weights' */
int F(linear_loss)(double *loss_rows, double *sums, const REAL *X, const REAL *W, const REAL *b,
                   const fbp_head *head, int64_t chunk, int own, int team, int by_rows, int64_t B,
                   int64_t d, int64_t n)
{
    int status = F(check_chunked)(head, own, team, by_rows, chunk, B, d, n);
    if (status)
        return status;
    F(head_t) h = F(head_view)(head, n);
    sums[0] = sums[1] = 0.0;
    return F(chunked_rows)(&h, NULL, NULL, NULL, sums, X, W, b, 1.0, 0.0, own, team, by_rows,
                           fbp_min(chunk, fbp_max(B, 1)), B, d, loss_rows, NULL);
}

#if !FBP_DOUBLE
/* linear_chunked_f32 of a bfloat16 call on the team by classes, its three products by dot16.h's
 * set (1: vdpbf16ps, where the CPU has it; 2: its arithmetic on float32 vectors): X (B, d) and
 * W (n, d) as bfloat16 bits (4-byte aligned, d even), b float32 (holding bfloat16 values);
 * dW, db, dX float32, each rounded once by the caller if at all; filter_eps > 0 (softmax
 * heads): the backward on each slice's active classes only, as filtered_slice's. */
int linear_chunked_bf16(float *dW, float *db, float *dX, double *sums, const uint16_t *X,
                        const uint16_t *W, const float *b, const fbp_head *head, int mean,
                        int64_t chunk, double filter_eps, int team, int set, int64_t B, int64_t d,
                        int64_t n)
{
    fbp_dot16_call bf = {dot16_set(set), X, W};
    int softmax = head && (head->code == FBP_SOFTMAX || head->code == FBP_SOFTMAX_PROBS);
    if (!bf.dot || !X || !W || !dW || d % 2 || ((uintptr_t)X | (uintptr_t)W) % 4
        || !(filter_eps >= 0) || (filter_eps > 0 && !softmax))
        return FBP_EBADARG;
    int status = F(check_chunked)(head, 0, team, 0, chunk, B, d, n);
    if (status && status != FBP_ENOBLAS)       /* (no BLAS product runs) */
        return status;
    F(head_t) h = F(head_view)(head, n);
    double scale = mean ? F(mean_scale)(&h, B) : 1.0;
    double *db64 = fbp_calloc((size_t)n, sizeof(double));
    if (!db64)
        return FBP_ENOMEM;
    sums[0] = sums[1] = 0.0;
    status = F(chunked_rows)(&h, dW, db ? db64 : NULL, dX, sums, NULL, NULL, b, scale,
                             filter_eps * scale, 0, team, 0, fbp_min(chunk, fbp_max(B, 1)), B, d,
                             NULL, &bf);
    if (db && status == FBP_OK)
        for (int64_t j = 0; j < n; j++)
            db[j] = (float)db64[j];
    fbp_free(db64);
    return status;
}
#endif

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
