/* fastbp's own products (templated, included in linear.c's REAL pass after the vector helpers):
 * C (+)= A' B with A read by strides and B and C row-major, W read where it lies, no packed copy.
 * One register tile serves all three products of linear + head (docs/performance.md, "Own
 * products"):
 *   S = X_c W^T    C = S^T (stored transposed): a = class (A = W), l = k, B = X_c^T (own_xt)
 *   dX = G W       a = row (A = G), l = class, B = W
 *   dW += G^T X_c  a = class (A = G^T), l = row, B = X_c
 * Each product sums over l in one fixed order: the same bits on any team. */

/* acc[r][v] += sum_{l < L} a[r sr + l sl] B[l ldb + off[v] ..] over FBP_OWN_RA rows of A and
 * FBP_OWN_KV vectors of B's row (offsets off[]): FBP_OWN_RA FBP_OWN_KV accumulators, each B load feeding
 * FBP_OWN_RA FMAs, each broadcast of A FBP_OWN_KV */
FBP_INLINE void F(own_tile)(F(vec) acc[FBP_OWN_RA][FBP_OWN_KV], int ra, const REAL *a, int64_t sr,
                            int64_t sl, const REAL *Bm, int64_t ldb, const int64_t off[FBP_OWN_KV],
                            int64_t L)
{
    for (int64_t l = 0; l < L; l++) {
        F(vec) bv[FBP_OWN_KV];
        for (int v = 0; v < FBP_OWN_KV; v++)
            bv[v] = F(vload)(Bm + l * ldb + off[v]);
        for (int r = 0; r < ra; r++) {      /* (ra: a constant where inlined) */
            REAL s = a[r * sr + l * sl];
            for (int v = 0; v < FBP_OWN_KV; v++)
                acc[r][v] += s * bv[v];
        }
    }
}

/* C[a, k] (+)= sum_{l < L} A[a sa + l sl] B[l ldb + k] for a < M, k < N (trans: C[k ldc + a],
 * S written from X_c^T). add: onto C's values, else over them. Blocks: l by lb (B's rows of a
 * block stay in L2 while every tile of C reads them), a by FBP_OWN_RA, k by FBP_OWN_KV vectors; a tile
 * past N repeats the last vector and stores only its own. A's rows of a tile are copied to ap
 * (l-major) when they are strided along l (G^T: a line per l, a page per few l), so its
 * broadcasts read consecutive REALs; the last tile's rows past M repeat its last row there, or
 * run one row at a time where ap cannot hold them. N % VLR last columns: a last vector ending
 * at N (its lanes before them stored by the one before), or a scalar loop when N < VLR;
 * trans reads B's rows in whole vectors (own_xt pads them) and stores only the first N.
 * pf: pfn REALs the caller reads next, prefetched a share per tile (they come from memory). */
FBP_HOT static void F(own_product)(REAL *C, int64_t ldc, int trans, int add, const REAL *A,
                                   int64_t sa, int64_t sl, const REAL *Bm, int64_t ldb, int64_t M,
                                   int64_t N, int64_t L, int64_t lb, const REAL *pf, int64_t pfn)
{
    int64_t nv = trans || N >= VLR ? (N + VLR - 1) / VLR : 0, nt = nv ? 0 : N,
            tiles = (M + FBP_OWN_RA - 1) / FBP_OWN_RA * ((nv + FBP_OWN_KV - 1) / FBP_OWN_KV),
            per = tiles ? pfn * (int64_t)sizeof(REAL) / 64 / tiles + 1 : 0;
    const char *pp = (const char *)pf, *pend = pf ? (const char *)(pf + pfn) : pp;
    REAL ap[FBP_OWN_RA * OWN_PACK];     /* 24 KiB at most */
    if (M <= 0 || N <= 0)
        return;
    lb = sl != 1 ? fbp_min(lb, OWN_PACK) : lb;
    for (int64_t l0 = 0; l0 < L || l0 == 0; l0 += lb) {
        int64_t nl = fbp_min(lb, L - l0), onto = add || l0 > 0;
        const REAL *Bl = Bm + l0 * ldb;
        for (int64_t a0 = 0; a0 < M; a0 += FBP_OWN_RA) {
            int64_t ma = fbp_min(FBP_OWN_RA, M - a0);
            const REAL *a = A + a0 * sa + l0 * sl;
            int64_t sr = sa, sk = sl, one = ma < FBP_OWN_RA && nl > OWN_PACK;
            if (sl != 1 || (ma < FBP_OWN_RA && !one)) {
                for (int64_t l = 0; l < nl; l++)
                    for (int r = 0; r < FBP_OWN_RA; r++)
                        ap[l * FBP_OWN_RA + r] = a[fbp_min(r, ma - 1) * sa + l * sl];
                a = ap;
                sr = 1;
                sk = FBP_OWN_RA;
            }
            for (int64_t v0 = 0; v0 < nv; v0 += FBP_OWN_KV) {
                int64_t mv = fbp_min(FBP_OWN_KV, nv - v0), off[FBP_OWN_KV];
                F(vec) acc[FBP_OWN_RA][FBP_OWN_KV];
                for (int v = 0; v < FBP_OWN_KV; v++)   /* the last vector ends at N */
                    off[v] = fbp_min((v0 + fbp_min(v, mv - 1)) * VLR, trans ? N : N - VLR);
                for (int r = 0; r < FBP_OWN_RA; r++)
                    for (int v = 0; v < FBP_OWN_KV; v++)
                        acc[r][v] = !onto || r >= ma || v >= mv || trans
                                            ? (F(vec)){0}
                                            : F(vload)(C + (a0 + r) * ldc + off[v]);
                /* the next tile's C, fetched while this one computes: dW's rows come from
                 * memory, and a tile's first FMAs wait on them */
                int64_t na0 = v0 + FBP_OWN_KV < nv ? a0 : a0 + FBP_OWN_RA,
                        nv0 = v0 + FBP_OWN_KV < nv ? v0 + FBP_OWN_KV : 0;
                for (int64_t r = 0; r < FBP_OWN_RA && !trans && na0 + r < M; r++)
                    for (int64_t v = nv0; v < fbp_min(nv0 + FBP_OWN_KV, nv); v++)
                        __builtin_prefetch(C + (na0 + r) * ldc + fbp_min(v * VLR, N - VLR), 1);
                for (int64_t q = 0; q < per && pp < pend; q++, pp += 64)
                    __builtin_prefetch(pp);        /* the caller's next operand, spread out */
                if (!one)
                    F(own_tile)(acc, FBP_OWN_RA, a, sr, sk, Bl, ldb, off, nl);
                else
                    for (int r = 0; r < ma; r++)
                        F(own_tile)(acc + r, 1, a + r * sr, sr, sk, Bl, ldb, off, nl);
                for (int r = 0; r < ma; r++)
                    for (int v = 0; v < mv; v++) {
                        int64_t skip = (v0 + v) * VLR - off[v];     /* lanes stored before */
                        if (!trans && !skip)
                            F(vstore)(C + (a0 + r) * ldc + off[v], acc[r][v]);
                        if (!trans) {
                            for (int64_t q = skip ? skip : VLR; q < VLR; q++)
                                C[(a0 + r) * ldc + off[v] + q] = acc[r][v][q];
                            continue;
                        }
                        REAL *c = C + off[v] * ldc + a0 + r;    /* column a0 + r of S */
                        for (int64_t q = 0; q < fbp_min(VLR, N - off[v]); q++)
                            c[q * ldc] = onto ? c[q * ldc] + acc[r][v][q] : acc[r][v][q];
                    }
            }
            for (int64_t r = 0; r < ma && nt; r++)          /* N < VLR: scalar */
                for (int64_t k = 0; k < N; k++) {
                    REAL s = 0;
                    for (int64_t l = 0; l < nl; l++)
                        s += a[r * sr + l * sk] * Bl[l * ldb + k];
                    C[(a0 + r) * ldc + k] = onto ? C[(a0 + r) * ldc + k] + s : s;
                }
        }
        if (L <= 0)
            break;
    }
}

/* Xt (d, ldt) = X's rows (rows, d) transposed, zero past rows up to ldt (a whole number of
 * vectors): own_product's B for S. Only columns k0..k1 (a team splits them). */
static void F(own_xt)(REAL *Xt, int64_t ldt, const REAL *X, int64_t rows, int64_t d, int64_t k0,
                      int64_t k1)
{
    for (int64_t k = k0; k < k1; k++) {
        for (int64_t r = 0; r < rows; r++)
            Xt[k * ldt + r] = X[r * d + k];
        for (int64_t r = rows; r < ldt; r++)
            Xt[k * ldt + r] = 0;
    }
}

/* S (rows, nc, row stride ldc) = X W^T from Xt = X^T (d, ldt): own_product with S transposed,
 * l = k in one block (a transposed C would be read back per block; Xt's columns of a tile, d
 * FBP_OWN_KV vectors, stay in L2) */
static void F(own_scores)(REAL *S, int64_t ldc, const REAL *Xt, int64_t ldt, const REAL *W,
                          int64_t nc, int64_t rows, int64_t d)
{
    F(own_product)(S, ldc, 1, 0, W, d, 1, Xt, ldt, nc, rows, d, fbp_max(d, 1), NULL, 0);
}

/* dW[c0 .. c0 + nc] (+)= G^T X_c and P (= or +=) G W[c0 .. c0 + nc] with fastbp's own products
 * (G: rows of ldg, columns c0.. of S), class tile by class tile: W's and dW's rows of a tile
 * pass through L2 once for both products. add: onto dW's values. */
static void F(own_backward)(const REAL *S, int64_t ldg, const REAL *Xc, const REAL *W, REAL *dW,
                            REAL *P, int add, int64_t rows, int64_t d, int64_t c0, int64_t nc)
{
    int64_t kw = FBP_OWN_KV * VLR, strips = (d + kw - 1) / kw;
    if (P && nc == 0)
        memset(P, 0, (size_t)(rows * d) * sizeof(REAL));
    for (int64_t j = c0; j < c0 + nc; j += OWN_LB) {
        int64_t mj = fbp_min(OWN_LB, c0 + nc - j), next = fbp_min(OWN_LB, c0 + nc - j - mj) * d;
        /* the tile's dW rows, its W rows fetched meanwhile for dX's part */
        F(own_product)(dW + j * d, d, 0, add, S + j, 1, ldg, Xc, d, mj, d, rows, rows, W + j * d,
                       P ? mj * d : 0);
        /* dX's part a strip of W's columns at a time (it stays in L1 over the rows), the next
         * tile's dW rows fetched meanwhile, a share per strip */
        for (int64_t q = 0; P && q < strips; q++)
            F(own_product)(P + q * kw, d, 0, j > c0, S + j, ldg, 1, W + j * d + q * kw, d, rows,
                           fbp_min(kw, d - q * kw), mj, OWN_LB,
                           dW + (j + mj) * d + q * next / strips,
                           (q + 1) * next / strips - q * next / strips);
    }
}

/* The three products alone on every thread (the benchmark of own products against BLAS):
 *   kind 0: C (M, N) = A (M, K) B^T, B (N, K)     S = X W^T: the team splits N
 *   kind 1: C (M, N) = A (M, K) B, B (K, N)       dX = G W: the team splits M
 *   kind 2: C (M, N) = A^T B, A (K, M), B (K, N)   dW = G^T X: the team splits M
 * Kind 0 transposes A first, in blocks of OWN_SROWS rows, each (K, OWN_SROWS) contiguous
 * (one (K, M) transpose's 4 KiB-strided columns would share L1's sets), the team splitting
 * its columns. own_share: thread t's share. */
static void F(own_share)(int kind, int64_t t, int64_t T, REAL *C, const REAL *A, const REAL *Bm,
                         REAL *Xt, int64_t M, int64_t N, int64_t K)
{
    int64_t a0 = t * M / T, a1 = (t + 1) * M / T, c0 = t * N / T, c1 = (t + 1) * N / T;
    if (kind == 0)
        for (int64_t r0 = 0; r0 < M; r0 += OWN_SROWS)
            F(own_scores)(C + r0 * N + c0, N, Xt + r0 * K, OWN_SROWS, Bm + c0 * K, c1 - c0,
                          fbp_min(OWN_SROWS, M - r0), K);
    else if (kind == 1)
        F(own_product)(C + a0 * N, N, 0, 0, A + a0 * K, K, 1, Bm, N, a1 - a0, N, K, OWN_LB, NULL,
                       0);
    else
        F(own_product)(C + a0 * N, N, 0, 0, A + a0, 1, M, Bm, N, a1 - a0, N, K, OWN_LB, NULL, 0);
}

int F(own_products)(int kind, REAL *C, const REAL *A, const REAL *Bm, int64_t M, int64_t N,
                    int64_t K)
{
    if (kind < 0 || kind > 2 || M < 0 || N < 0 || K < 0)
        return FBP_EBADARG;
    int64_t nb = (M + OWN_SROWS - 1) / OWN_SROWS,
            T = fbp_min(fbp_threads(), (kind ? M : N) / FBP_OWN_RA);
    REAL *Xt = kind ? NULL : fbp_malloc((size_t)fbp_max(nb * K * OWN_SROWS, 1) * sizeof(REAL));
    if (!kind && !Xt)
        return FBP_ENOMEM;
    if (T <= 1 || fbp_forked_child()) {   /* (a forked child has no OpenMP: runtime.c) */
        for (int64_t q = 0; q < nb && !kind; q++)
            F(own_xt)(Xt + q * K * OWN_SROWS, OWN_SROWS, A + q * OWN_SROWS * K,
                      fbp_min(OWN_SROWS, M - q * OWN_SROWS), K, 0, K);
        F(own_share)(kind, 0, 1, C, A, Bm, Xt, M, N, K);
    } else
#pragma omp parallel num_threads((int)T)
    {
        int64_t t = omp_get_thread_num();
        for (int64_t q = 0; q < nb && !kind; q++)
            F(own_xt)(Xt + q * K * OWN_SROWS, OWN_SROWS, A + q * OWN_SROWS * K,
                      fbp_min(OWN_SROWS, M - q * OWN_SROWS), K, t * K / T, (t + 1) * K / T);
#pragma omp barrier
        F(own_share)(kind, t, T, C, A, Bm, Xt, M, N, K);
    }
    fbp_free(Xt);
    return FBP_OK;
}
