/* The bfloat16 products of the chunked path (linear.c, a bfloat16 call's team by classes):
 * C (+)= A B over pairs, float32 accumulators, one step acc += a0 b0 + a1 b1 per 32-bit word
 * holding two bfloat16 (low half the even index): AVX512-BF16's vdpbf16ps (twice float32's
 * multiply rate), or its arithmetic on float32 vectors (D16_EMULATED: the same loops on any
 * x86-64, for the tests). Included twice by linear.c, D16(name) naming each set's functions.
 * Register tile: D16_RA rows of A by D16_KV vectors of 16 columns, as products.h's own tile.
 *   S = X_c W^T   C = S^T stored transposed: a = class (A = W's rows in place), pairs along k,
 *                 B = X_c's rows as pairs, transposed (dot16_xt)
 *   dW += G^T X_c a = class (A = G's columns paired over rows), B = X_c's row pairs (dot16_rows)
 *   dX = G W      a = row (A = G's rows paired over classes), B = W's row pairs (dot16_rows)
 * Each sums its pairs in one fixed order: the same bits on any team. */

typedef float d16f __attribute__((vector_size(64)));
typedef uint32_t d16u __attribute__((vector_size(64)));

#ifdef D16_EMULATED
/* vdpbf16ps's arithmetic: the odd products, then the even ones, each exact in float32 */
FBP_INLINE d16f D16(step)(d16f acc, d16u a, d16u b)
{
    const d16u hi = (d16u){0} + 0xffff0000u;
    d16u ao = a & hi, bo = b & hi, ae = a << 16, be = b << 16;
    acc += (d16f)ao * (d16f)bo;
    return acc + (d16f)ae * (d16f)be;
}
#else
FBP_INLINE d16f D16(step)(d16f acc, d16u a, d16u b)
{
    return (d16f)_mm512_dpbf16_ps((__m512)acc, (__m512bh)a, (__m512bh)b);
}
#endif

/* acc[r][v] += sum_{p < P} A(r, p) . B[p ldb + 16 v ..]: A(r, p) = ar[r][p sp] */
FBP_INLINE void D16(tile)(d16f acc[D16_RA][D16_KV], const uint32_t *ar[D16_RA], int64_t sp,
                          const uint32_t *b, int64_t ldb, int64_t P)
{
    for (int64_t p = 0; p < P; p++) {
        d16u bv[D16_KV];
        for (int v = 0; v < D16_KV; v++)
            memcpy(&bv[v], b + p * ldb + 16 * v, sizeof bv[v]);
        for (int r = 0; r < D16_RA; r++) {
            d16u av = (d16u){0} + ar[r][p * sp];
            for (int v = 0; v < D16_KV; v++)
                acc[r][v] = D16(step)(acc[r][v], av, bv[v]);
        }
    }
}

/* C[a, k] (+)= sum_{p < P} A[a sa + p sp] . B[p ldb + k] for a < M, k < N (trans: into C[k ldc
 * + a]); add: onto C's values (the next tile's rows of C prefetched meanwhile: dW's come from
 * memory). B's rows hold whole tiles (ldb >= N rounded up to 16 D16_KV, zeros
 * past N). Rows of A past M repeat its last one (computed, not stored). Pairs in blocks of
 * D16_PB (a tile's B rows stay in L1 / L2), each block's sums added onto the last's. pf: pfb
 * bytes the caller reads next, prefetched a share per tile (they come from memory). */
D16_ATTR static void D16(product)(float *C, int64_t ldc, int trans, int add, const uint32_t *A,
                                  int64_t sa, int64_t sp, const uint32_t *Bm, int64_t ldb,
                                  int64_t M, int64_t N, int64_t P, const void *pf, int64_t pfb)
{
    const int64_t kw = 16 * D16_KV;
    int64_t tiles = (M + D16_RA - 1) / D16_RA * ((N + kw - 1) / kw) * ((P + D16_PB - 1) / D16_PB),
            per = tiles ? pfb / 64 / tiles + 1 : 0;
    const char *pp = (const char *)pf, *pend = pf ? pp + pfb : pp;
    for (int64_t p0 = 0; p0 < P || p0 == 0; p0 += D16_PB) {
        int64_t np = fbp_min(D16_PB, P - p0), onto = add || p0 > 0;
        for (int64_t a0 = 0; a0 < M; a0 += D16_RA) {
            int64_t ma = fbp_min(D16_RA, M - a0);
            const uint32_t *ar[D16_RA];
            for (int r = 0; r < D16_RA; r++)
                ar[r] = A + (a0 + fbp_min(r, ma - 1)) * sa + p0 * sp;
            for (int64_t k0 = 0; k0 < N; k0 += kw) {
                int64_t mk = fbp_min(kw, N - k0);
                d16f acc[D16_RA][D16_KV];
                int64_t na0 = k0 + kw < N ? a0 : a0 + D16_RA, nk0 = k0 + kw < N ? k0 + kw : 0;
                for (int64_t r = 0; r < D16_RA && onto && !trans && na0 + r < M; r++)
                    for (int64_t q = nk0; q < fbp_min(nk0 + kw, N); q += 16)
                        __builtin_prefetch(C + (na0 + r) * ldc + q, 1);
                for (int64_t q = 0; q < per && pp < pend; q++, pp += 64)
                    __builtin_prefetch(pp);        /* the caller's next operand, spread out */
                for (int r = 0; r < D16_RA; r++)
                    for (int v = 0; v < D16_KV; v++)
                        acc[r][v] = (d16f){0};
                if (np > 0)
                    D16(tile)(acc, ar, sp, Bm + p0 * ldb + k0, ldb, np);
                for (int64_t r = 0; r < ma; r++) {
                    float s[16 * D16_KV],
                            *c = C + (trans ? k0 * ldc + a0 + r : (a0 + r) * ldc + k0);
                    if (!trans && mk == kw)    /* whole vectors */
                        for (int v = 0; v < D16_KV; v++) {
                            d16f cv = acc[r][v];
                            if (onto) {
                                d16f old;
                                memcpy(&old, c + 16 * v, sizeof old);
                                cv += old;
                            }
                            memcpy(c + 16 * v, &cv, sizeof cv);
                        }
                    else {                     /* (trans: column a0 + r of C^T) */
                        int64_t st = trans ? ldc : 1;
                        memcpy(s, acc[r], sizeof s);
                        for (int64_t q = 0; q < mk; q++)
                            c[q * st] = onto ? c[q * st] + s[q] : s[q];
                    }
                }
            }
        }
        if (P <= 0)
            break;
    }
}
