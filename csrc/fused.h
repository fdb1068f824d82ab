/* The fused rows of linear + head, one micro-kernel set per ISA (BLIS's way: the same loops,
 * register tiles sized to the ISA's registers, the set chosen at run time: linear.c's
 * linear_fused, by fbp_tile()). Included by linear.c once per REAL and ISA, with
 *   FBP_VB  the vector's bytes: 64 (AVX-512F: 32 registers), 32 (AVX2 + FMA: 16), 16 (SSE2: 16)
 *   V(name) the ISA-suffixed F(name)
 * and the ISA's target pragma around it. Per block of RB rows (RB: their copy stays in L2):
 *   S = X W^T + b   register tiles of FR rows x FC classes, one vector per (row, class), summed
 *                   across lanes at the end (a dot-product tile: whole vectors whatever n is),
 *                   over k chunks whose rows of x and w stay in L1;
 *   G = head(S)     in place, row by row (the head's own sums in double);
 *   dW += G^T X, dX = G W
 *                   one pass over k per group of at most BC classes: that group's dW and W
 *                   vectors stay in registers over all RB rows, each row's x vector read once
 *                   and its dX vector formed in two chains (half the FMA latency of one).
 * Everything sums in a fixed order: the same bits on any team. */

#define VL ((int64_t)(FBP_VB / sizeof(REAL)))          /* lanes of a vector */
/* register tiles: the forward's FR x FC accumulators and the backward's BC accumulators and BC
 * vectors of W, plus a few more, within the ISA's 32 or 16 registers */
#define FR 4
#define FC (FBP_VB == 64 ? 4 : 2)
#define BC (FBP_VB == 64 ? 12 : 6)

typedef REAL V(vec) __attribute__((vector_size(FBP_VB)));
FBP_INLINE V(vec) V(load)(const REAL *p)
{
    V(vec) v;
    memcpy(&v, p, sizeof v);
    return v;
}
FBP_INLINE void V(store)(REAL *p, V(vec) v) { memcpy(p, &v, sizeof v); }
/* the sum of a vector's lanes in double, in a fixed tree order */
FBP_INLINE double V(lanes)(V(vec) v)
{
    double t[FBP_VB / sizeof(REAL)];
    for (int64_t l = 0; l < VL; l++)
        t[l] = v[l];
    for (int64_t w = VL / 2; w; w /= 2)
        for (int64_t l = 0; l < w; l++)
            t[l] += t[l + w];
    return t[0];
}

/* acc[(r0 + r) n + j0 + c] += sum_{k0 <= k < k1} x_r[k] Wp[j0 + c, k] for r < FR, c < fc (a
 * constant where inlined: linear_rows switches on it); acc: one vector per (row, class). */
FBP_INLINE void V(forward_tile)(REAL *acc, const REAL *const x_r[FR], const REAL *Wp, int64_t r0,
                                int64_t j0, int64_t n, int64_t k0, int64_t k1, int64_t ld,
                                int first, const int fc)
{
    V(vec) a[FR][FC], w[FC];
    for (int r = 0; r < FR; r++)
        for (int c = 0; c < fc; c++)
            a[r][c] = first ? (V(vec)){0} : V(load)(acc + ((r0 + r) * n + j0 + c) * VL);
    for (int64_t k = k0; k < k1; k += VL) {
        for (int c = 0; c < fc; c++)
            w[c] = V(load)(Wp + (j0 + c) * ld + k);
        for (int r = 0; r < FR; r++) {
            V(vec) x = V(load)(x_r[r] + k);
            for (int c = 0; c < fc; c++)
                a[r][c] += x * w[c];
        }
    }
    for (int r = 0; r < FR; r++)
        for (int c = 0; c < fc; c++)
            V(store)(acc + ((r0 + r) * n + j0 + c) * VL, a[r][c]);
}

/* Classes j0 .. j0 + bc (bc a constant where inlined), rows 0 .. cnt of the block, k < kw:
 *   pdW[j, k] += sum_r g[r, j] xs[r ldx + k]       (accumulated in registers over the rows)
 *   dout[r ldo + k] = din[r ldi + k] + sum_j g[r, j] Wp[j, k]
 *                   (din: the earlier groups' sum, NULL for the first group)
 * g: (rows, n) row-major. dx: whether dX is wanted. */
FBP_INLINE void V(backward_group)(REAL *pdW, const REAL *din, int64_t ldi, REAL *dout, int64_t ldo,
                                  const REAL *xs, int64_t ldx, const REAL *Wp, const REAL *g,
                                  int64_t j0, int64_t n, int64_t cnt, int64_t kw, int64_t ld,
                                  int dx, const int bc)
{
    for (int64_t k = 0; k < kw; k += VL) {
        V(vec) acc[BC], w[BC];
        for (int c = 0; c < bc; c++) {
            acc[c] = V(load)(pdW + (j0 + c) * ld + k);
            w[c] = V(load)(Wp + (j0 + c) * ld + k);
        }
        for (int64_t r = 0; r < cnt; r++) {
            V(vec) x = V(load)(xs + r * ldx + k), d0 = {0}, d1 = {0};
            const REAL *gr = g + r * n + j0;
            for (int c = 0; c < bc; c++) {
                acc[c] += gr[c] * x;
                if (dx) {
                    if (c % 2)
                        d1 += gr[c] * w[c];
                    else
                        d0 += gr[c] * w[c];
                }
            }
            if (dx)
                V(store)(dout + r * ldo + k,
                         din ? V(load)(din + r * ldi + k) + (d0 + d1) : d0 + d1);
        }
        for (int c = 0; c < bc; c++)
            V(store)(pdW + (j0 + c) * ld + k, acc[c]);
    }
}

/* A bfloat16 row (uint16 bits) widened into REALs, exactly; REALs rounded into a bfloat16 row
 * (to nearest even): a bfloat16 call's rows in and dX out (linear_fused_bf16) */
FBP_INLINE void V(widen_row)(REAL *dst, const uint16_t *src, int64_t d)
{
    for (int64_t k = 0; k < d; k++) {
        uint32_t u = (uint32_t)src[k] << 16;
        float f;
        memcpy(&f, &u, 4);
        dst[k] = (REAL)f;
    }
}
FBP_INLINE void V(narrow_row)(uint16_t *dst, const REAL *src, int64_t d)
{
    for (int64_t k = 0; k < d; k++) {
        float f = (float)src[k];
        uint32_t u;
        memcpy(&u, &f, 4);
        dst[k] = fbp_to_bf16(u);
    }
}

/* Rows of a block of at most `rows`: as many as keep their x and dX rows (2 rb ld REALs) within
 * half the core's L2 (fbp_l2_bytes) between the forward and the backward, whole tiles of FR,
 * from FR to 256 */
static int64_t V(block_rows)(int64_t ld, int64_t rows)
{
    int64_t rb = fbp_l2_bytes() / 2 / (int64_t)sizeof(REAL) / (2 * ld);
    rb = fbp_min(fbp_min(256, rb), (rows + FR - 1) / FR * FR);
    return fbp_max(FR, rb / FR * FR);
}

/* REALs of scratch a block of rb rows needs (carved in linear_rows), every part whole 64-byte
 * lines, so each starts on a line when scratch does */
static int64_t V(scratch)(int64_t n, int64_t d, int64_t ld, int64_t rb)
{
    int64_t line = 64 / (int64_t)sizeof(REAL);
    int64_t nd = (n * (int64_t)(sizeof(double) / sizeof(REAL)) + line - 1) / line * line;
    return n * ld + nd + (2 * rb + 1) * ld + (rb * n * VL + line - 1) / line * line
           + (rb * n + line - 1) / line * line + nd;
}

/* Rows lo..hi of linear + head into this block's partials, rb at a time. scratch
 * (V(scratch)(n, d, ld, rb) REALs, 64-byte aligned): pdW (n, ld), pdb (n doubles: db's terms
 * cancel, so they add in double), a zero row (ld: the rows of a tile past the block's), the
 * copies xs and dxs (rb, ld: rows and dX's partial sums), acc (rb n vectors), S (rb, n):
 * scores, then gradients, tmp (n doubles). Wp: W's rows with stride ld, zero past d. out: the
 * loss and the weight sums.
 * Where rows are read and dX written: in place only as whole vectors on whole 64-byte lines
 * (a vector load across two lines costs two: NumPy's arrays start 16 bytes into one), and for
 * the backward's walks down a column of rb rows an odd number of lines apart too (rows a
 * power of two lines apart share one L1 set); else through xs and dxs, with row stride ld,
 * zero past d. xs is filled as a block starts (one pass along each row: copying as the forward
 * first read a row, k chunk by k chunk, ran C1k 1.3x slower), dxs copied to dX row by row as it
 * ends.
 * A bfloat16 call's rows (bf->X: uint16 bits) are widened into xs as a block starts and its dX
 * (bf->dX) rounded from dxs as it ends: in L2, never a whole float32 copy of X or dX. */
static void V(linear_rows)(const F(head_t) * h, const REAL *X, const REAL *Wp, const REAL *b,
                           double scale, int64_t lo, int64_t hi, int64_t d, int64_t ld, int64_t rb,
                           REAL *scratch, REAL *dX, const fbp_bf16_rows *bf, double *out)
{
    const uint16_t *Xh = bf ? bf->X : NULL;
    uint16_t *dXh = bf ? bf->dX : NULL;
    int64_t n = h->n, kw = (d + VL - 1) / VL * VL, line = 64 / (int64_t)sizeof(REAL);
    int64_t nd = (n * (int64_t)(sizeof(double) / sizeof(REAL)) + line - 1) / line * line;
    int64_t bytes = d * (int64_t)sizeof(REAL);
    int whole = d % VL == 0, lines = whole && bytes % 64 == 0, odd = lines && bytes / 64 % 2;
    int x_back = odd && !Xh && (uintptr_t)X % 64 == 0; /* both passes read X in place, else */
    int staged = !x_back; /* its rows are copied (or widened) to xs as a block starts */
    int dx_back = odd && dX && (uintptr_t)dX % 64 == 0; /* the backward sums dX's groups there */
    int want_dx = dX || dXh;
    /* k chunk: a tile's FR rows of x and W's n rows within 24 KiB of L1 (W's chunk serves every
     * tile of the block), 256 bytes to 2 KiB of each */
    int64_t kt = fbp_max(256, fbp_min(2048, 24576 / (FR + n) / 64 * 64)) / (int64_t)sizeof(REAL);
    REAL *pdW = scratch, *zero = pdW + n * ld + nd, *xs = zero + ld, *dxs = xs + rb * ld,
         *acc = dxs + rb * ld;
    REAL *S = acc + (rb * n * VL + line - 1) / line * line;
    double *pdb = (double *)(pdW + n * ld),
           *tmp = (double *)(S + (rb * n + line - 1) / line * line);
    double total = 0.0, osum = 0.0;
    memset(pdW, 0, (size_t)(n * ld + nd + ld) * sizeof(REAL)); /* pdW, pdb, zero */
    for (int64_t i0 = lo; i0 < hi; i0 += rb) {
        int64_t cnt = fbp_min(rb, hi - i0), rows = (cnt + FR - 1) / FR * FR;
        const REAL *xb = x_back ? X + i0 * d : xs; /* the backward's rows */
        int64_t ldx = x_back ? d : ld, lddx = dx_back ? d : ld;
        REAL *dx = !want_dx ? NULL : dx_back ? dX + i0 * d : dxs;
        if (staged)
            for (int64_t r = 0; r < cnt; r++) {
                if (Xh)
                    V(widen_row)(xs + r * ld, Xh + (i0 + r) * d, d);
                else
                    memcpy(xs + r * ld, X + (i0 + r) * d, (size_t)d * sizeof(REAL));
                memset(xs + r * ld + d, 0, (size_t)(ld - d) * sizeof(REAL));
            }
        if (!kw) /* d = 0: no k chunk sets the accumulators, every score is 0 (+ b) */
            memset(acc, 0, (size_t)(rb * n * VL) * sizeof(REAL));
        for (int64_t k0 = 0; k0 < kw; k0 += kt) {
            int64_t k1 = fbp_min(k0 + kt, kw);
            for (int64_t r0 = 0; r0 < rows; r0 += FR) {
                const REAL *x_r[FR];
                for (int r = 0; r < FR; r++) {
                    int64_t i = r0 + r;
                    x_r[r] = i >= cnt ? zero : !staged ? X + (i0 + i) * d : xs + i * ld;
                }
                for (int64_t j0 = 0; j0 < n; j0 += FC) {
                    int fc = (int)fbp_min(FC, n - j0);
#define FBP_TILE(c) V(forward_tile)(acc, x_r, Wp, r0, j0, n, k0, k1, ld, k0 == 0, c)
                    if (fc == FC)
                        FBP_TILE(FC);
                    else if (fc == 1)
                        FBP_TILE(1);
#if FBP_VB == 64
                    else if (fc == 2)
                        FBP_TILE(2);
                    else
                        FBP_TILE(3);
#endif
#undef FBP_TILE
                }
            }
        }
        for (int64_t r = 0; r < cnt; r++) {
            REAL *s = S + r * n;
            int64_t i = i0 + r;
            for (int64_t j = 0; j < n; j++)
                s[j] = (REAL)(V(lanes)(V(load)(acc + (r * n + j) * VL)) + (b ? (double)b[j] : 0.0));
            double swi = h->sw ? h->sw[i] : 1.0;
            total += swi * F(head_row)(h, i, s, s, swi * scale, tmp);
            osum += F(row_weight)(h, i);
            for (int64_t j = 0; j < n; j++)
                pdb[j] += s[j];
        }
        /* groups of at most BC classes, as even as they go (10 classes: 5 and 5, not 6 and 4) */
        int64_t groups = (n + BC - 1) / BC, size = (n + groups - 1) / groups;
        for (int64_t j0 = 0; j0 < n; j0 += size) {
            int bc = (int)fbp_min(size, n - j0);
            /* dX's partial sums over the groups in dx (the last group's too: storing it to dX
             * at C, 20 rows 12 KiB apart in one L1 set to cold lines, ran 1.4x slower) */
            const REAL *din = j0 ? dx : NULL;
            switch (bc) {
#define FBP_GROUP(c) \
    case c: \
        if (dx) \
            V(backward_group)(pdW, din, lddx, dx, lddx, xb, ldx, Wp, S, j0, n, cnt, kw, ld, 1, c); \
        else \
            V(backward_group)(pdW, NULL, 0, NULL, 0, xb, ldx, Wp, S, j0, n, cnt, kw, ld, 0, c); \
        break;
                FBP_GROUP(1)
                FBP_GROUP(2)
                FBP_GROUP(3)
                FBP_GROUP(4)
                FBP_GROUP(5)
                FBP_GROUP(6)
#if FBP_VB == 64
                FBP_GROUP(7)
                FBP_GROUP(8)
                FBP_GROUP(9)
                FBP_GROUP(10)
                FBP_GROUP(11)
                FBP_GROUP(12)
#endif
#undef FBP_GROUP
            }
        }
        if (dXh)
            for (int64_t r = 0; r < cnt; r++)
                V(narrow_row)(dXh + (i0 + r) * d, dxs + r * ld, d);
        else if (dX && !dx_back)
            for (int64_t r = 0; r < cnt; r++)
                memcpy(dX + (i0 + r) * d, dxs + r * ld, (size_t)d * sizeof(REAL));
    }
    out[0] = total;
    out[1] = osum;
}

#undef VL
#undef FR
#undef FC
#undef BC
