/* One row of every head, templated (included inside each REAL pass of a family file).
 * head_row returns the class-weighted loss of row i and writes f times its class-weighted
 * gradient into g, which may be s itself (s is read in full before g is written); f carries the
 * sample weight and the "mean" scale, so a row is written once. The formulas are docs/math.md's and
 * the reference backend's, term for term; tmp is n doubles of scratch. Sums over a row use
 * `omp simd` reductions (a fixed, vectorized order: the same bits every run). */

/* The caller's fbp_head with its arrays typed, and the row length n; scalar options are read
 * from o (h->o->margin, ...). */
typedef struct {
    const fbp_head *o;
    int code;
    const int64_t *y;            /* (B,) labels, or NULL */
    const REAL *Z, *sw, *w, *pw; /* (B, n) targets, (B,) sample, (n,) class, (n,) pos weights */
    int64_t ignore, n;
} F(head_t);

FBP_INLINE F(head_t) F(head_view)(const fbp_head *o, int64_t n)
{
    F(head_t)
    h = {o,
         (int)o->code,
         o->y,
         (const REAL *)o->Z,
         (const REAL *)o->sample_weight,
         (const REAL *)o->weight,
         (const REAL *)o->pos_weight,
         o->ignore_index,
         n};
    return h;
}

/* index of the first maximum of s, or of its first NaN (as numpy.argmax): the maximum and
 * whether a NaN is present in one vectorized pass, then the first index that has it (a scalar
 * argmax, one compare-and-branch per element, cost as much as the rest of a softmax row) */
FBP_INLINE int64_t F(argmax)(const REAL *s, int64_t n)
{
    REAL M = s[0];
    int nan = 0;
#pragma omp simd reduction(max : M) reduction(| : nan)
    for (int64_t j = 0; j < n; j++) {
        M = s[j] > M ? s[j] : M;
        nan |= s[j] != s[j];
    }
    int64_t m = 0;
    if (nan)
        while (s[m] == s[m])
            m++;
    else
        while (s[m] != M)
            m++;
    return m;
}

/* omega_i: sample weight x class weight of the label (0 for ignore_index) */
FBP_INLINE double F(row_weight)(const F(head_t) * h, int64_t i)
{
    double om = h->sw ? h->sw[i] : 1.0;
    if (h->y) {
        if (h->y[i] == h->ignore)
            return 0.0;
        if (h->w)
            om *= h->w[h->y[i]];
    }
    return om;
}

/* 1 / sum_i omega_i, or 0 when every weight is 0 (the loss is then nan, the gradient 0) */
FBP_INLINE double F(mean_scale)(const F(head_t) * h, int64_t B)
{
    double total = 0.0;
    if (!h->y && !h->sw)
        total = (double)B;
    else
        for (int64_t i = 0; i < B; i++)
            total += F(row_weight)(h, i);
    return total != 0 ? 1.0 / total : 0.0;
}

/* C_j = w_j ((1 - eps) t_j + eps/n), t = e_y (labels) or z (probability rows);
 * loss = sum_j C_j (lse - s_j), g_j = (sum C) p_j - C_j, in the float32-accurate form:
 * m = argmax s, r = sum_{j != m} exp(s_j - s_m), lse - s_j = (s_m - s_j) + log1p(r),
 * p_j = e_j / (1 + r), g_m = (sum_{j != m} C_j - C_m r) / (1 + r). */
FBP_INLINE double F(softmax_row)(const F(head_t) * h, int64_t i, const REAL *s, REAL *g, double f,
                                 double *x)
{
    int64_t n = h->n, m = F(argmax)(s, n), yi = h->y ? h->y[i] : 0;
    const REAL *z = h->Z ? h->Z + i * n : NULL;
    double M = s[m], r = 0.0;
    for (int64_t j = 0; j < n; j++)
        x[j] = (double)s[j] - M;
    if (!z && !h->w && h->o->label_smoothing == 0) { /* plain labels: C = e_y, the common case */
        double lin = M - s[yi];
        fbp_vexp(x, n);
        x[m] = 0.0;
#pragma omp simd reduction(+ : r)
        for (int64_t j = 0; j < n; j++)
            r += x[j];
        double inv = 1.0 / (1.0 + r), fi = f * inv;
        for (int64_t j = 0; j < n; j++)
            g[j] = (REAL)(fi * x[j]);
        if (m == yi)
            g[m] = (REAL)(-f * (r * inv));
        else {
            g[m] = (REAL)fi;
            g[yi] = (REAL)(fi * x[yi] - f);
        }
        return lin + log1p(r);
    }
    double a = 1.0 - h->o->label_smoothing, e_n = h->o->label_smoothing / n, lin = 0.0, rest = 0.0,
           c_m = 0.0;
#define FBP_C(j) ((h->w ? (double)h->w[j] : 1.0) * (a * (z ? (double)z[j] : (j) == yi) + e_n))
    for (int64_t j = 0; j < n; j++) {
        double c = FBP_C(j);
        lin -= c != 0 ? c * x[j] : 0.0;
        if (j != m)
            rest += c;
        else
            c_m = c;
    }
    double total = rest + c_m;
    fbp_vexp(x, n);
    x[m] = 0.0;
#pragma omp simd reduction(+ : r)
    for (int64_t j = 0; j < n; j++)
        r += x[j];
    double inv = 1.0 / (1.0 + r), ft = f * total * inv;
    for (int64_t j = 0; j < n; j++)
        g[j] = (REAL)(ft * x[j] - f * FBP_C(j));
#undef FBP_C
    g[m] = (REAL)(f * ((rest - c_m * r) * inv));
    return lin + total * log1p(r);
}

/* softmax_row with softcap c (s' = c tanh(s / c), the gradient times 1 - tanh^2) and z_loss
 * zeta (+ zeta lse^2, gradient + 2 zeta lse p; labels without class weights: the checks' rule),
 * in double from s': loss = sum_j C_j (lse - s'_j) + zeta lse^2. x: n doubles of scratch. */
FBP_INLINE double F(softmax_llm_row)(const F(head_t) * h, int64_t i, const REAL *s, REAL *g,
                                     double f, double *x)
{
    int64_t n = h->n, yi = h->y ? h->y[i] : 0;
    const REAL *z = h->Z ? h->Z + i * n : NULL;
    double cap = h->o->softcap, zeta = h->o->z_loss, M = -INFINITY, sum = 0.0;
    double a = 1.0 - h->o->label_smoothing, e_n = h->o->label_smoothing / n;
    for (int64_t j = 0; j < n; j++) {
        double v = cap > 0 ? cap * tanh((double)s[j] / cap) : (double)s[j];
        x[j] = v;
        M = v > M || v != v ? v : M; /* a NaN score wins (and propagates) */
    }
    for (int64_t j = 0; j < n; j++)
        sum += exp(x[j] - M);
    double lse = M + log(sum), loss = zeta * lse * lse, total = 0.0;
#define FBP_C(j) ((h->w ? (double)h->w[j] : 1.0) * (a * (z ? (double)z[j] : (j) == yi) + e_n))
    for (int64_t j = 0; j < n; j++) {
        double c = FBP_C(j);
        total += c;
        loss += c != 0 ? c * (lse - x[j]) : 0.0;
    }
    for (int64_t j = 0; j < n; j++) { /* (s[j] is read before g[j], which may be it, is written) */
        double p = exp(x[j] - lse), e = cap > 0 ? exp(-2.0 * fabs((double)s[j] / cap)) : 1.0;
        /* 1 - tanh^2 = 4 e / (1 + e)^2, e = exp(-2 |s| / c): no cancellation where tanh ~ 1 */
        double cap_factor = 4.0 * e / ((1.0 + e) * (1.0 + e));
        g[j] = (REAL)(f * ((total + 2.0 * zeta * lse) * p - FBP_C(j)) * cap_factor);
    }
#undef FBP_C
    return loss;
}

/* C_j of softmax_row (labels or probability row z; j, yi: class indices), for the column
 * blocks below */
FBP_INLINE double F(softmax_c)(const F(head_t) * h, const REAL *z, int64_t yi, int64_t j)
{
    double t = z ? (double)z[j] : (double)(j == yi);
    return (h->w ? (double)h->w[j] : 1.0)
           * ((1.0 - h->o->label_smoothing) * t + h->o->label_smoothing / h->n);
}

/* softmax_row over column blocks (linear_chunked with cols < n): the same quantities, built
 * from blocks s = scores c0 .. c0 + nc of row i. Pass 1 keeps, over the blocks seen so far, the
 * first argmax m (value M), r = sum_{j != m} exp(s_j - M) and rest = sum_{j != m} C_j: a block
 * whose maximum beats M (or is the first NaN) moves the old maximum's term into both sums, r
 * rescaled by exp(M_old - M). A running M of -inf means every term so far is exp(-inf) = 0. */
FBP_INLINE void F(softmax_cols_stats)(const F(head_t) * h, int64_t i, const REAL *s, int64_t c0,
                                      int64_t nc, double *st, double *x)
{
    const REAL *z = h->Z ? h->Z + i * h->n : NULL;
    int64_t yi = h->y ? h->y[i] : 0, mc = F(argmax)(s, nc);
    double Mc = s[mc], M = st[0], sum = 0.0, csum = 0.0;
    int wins = c0 == 0 || Mc > M || (Mc != Mc && M == M);
    int plain = !z && !h->w && h->o->label_smoothing == 0; /* C = e_y: rest is not needed */
    double ref = wins ? Mc : M;
    for (int64_t j = 0; j < nc; j++)
        x[j] = (double)s[j] - ref;
    fbp_vexp(x, nc);
    if (wins)
        x[mc] = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < nc; j++)
        sum += x[j];
    if (!plain)
        for (int64_t j = 0; j < nc; j++)
            csum += (wins && j == mc) ? 0.0 : F(softmax_c)(h, z, yi, c0 + j);
    if (!wins) {
        st[1] += sum;
        st[2] += csum;
        return;
    }
    if (c0 == 0) {
        st[1] = sum;
        st[2] = csum;
    } else { /* the old maximum joins the sums */
        st[1] = (M == -INFINITY ? 0.0 : (st[1] + 1.0) * exp(M - Mc)) + sum;
        st[2] += (plain ? 0.0 : F(softmax_c)(h, z, yi, (int64_t)st[3])) + csum;
    }
    st[0] = Mc;
    st[3] = (double)(c0 + mc);
}

/* Pass 2 on the block, in place (g may be s): g_j = f (total p_j - C_j), with g_m and the loss
 * as softmax_row's. Returns the block's part of lin = sum_j C_j (M - s_j). */
FBP_INLINE double F(softmax_cols_grad)(const F(head_t) * h, int64_t i, const REAL *s, REAL *g,
                                       int64_t c0, int64_t nc, const double *st, double f,
                                       double *x)
{
    const REAL *z = h->Z ? h->Z + i * h->n : NULL;
    int64_t yi = h->y ? h->y[i] : 0, m = (int64_t)st[3];
    double M = st[0], r = st[1], rest = st[2], inv = 1.0 / (1.0 + r), lin = 0.0;
    for (int64_t j = 0; j < nc; j++)
        x[j] = (double)s[j] - M;
    if (!z && !h->w && h->o->label_smoothing == 0) { /* plain labels: C = e_y */
        if (yi >= c0 && yi < c0 + nc)
            lin = -x[yi - c0];
        fbp_vexp(x, nc);
        double fi = f * inv;
        for (int64_t j = 0; j < nc; j++)
            g[j] = (REAL)(fi * x[j]);
        if (yi >= c0 && yi < c0 + nc && yi != m)
            g[yi - c0] = (REAL)(fi * x[yi - c0] - f);
        if (m >= c0 && m < c0 + nc)
            g[m - c0] = (REAL)(m == yi ? -f * (r * inv) : fi);
        return lin;
    }
    double c_m = F(softmax_c)(h, z, yi, m), ft = f * (rest + c_m) * inv;
    for (int64_t j = 0; j < nc; j++) {
        double c = F(softmax_c)(h, z, yi, c0 + j);
        lin -= c != 0 ? c * x[j] : 0.0;
    }
    fbp_vexp(x, nc);
    for (int64_t j = 0; j < nc; j++)
        g[j] = (REAL)(ft * x[j] - f * F(softmax_c)(h, z, yi, c0 + j));
    if (m >= c0 && m < c0 + nc)
        g[m - c0] = (REAL)(f * ((rest - c_m * r) * inv));
    return lin;
}

/* row i's loss from its pass-1 statistics and lin, as softmax_row's: lin + total log1p(r) */
FBP_INLINE double F(softmax_cols_loss)(const F(head_t) * h, int64_t i, const double *st, double lin)
{
    if (!h->Z && !h->w && h->o->label_smoothing == 0)
        return lin + log1p(st[1]);
    const REAL *z = h->Z ? h->Z + i * h->n : NULL;
    double total = st[2] + F(softmax_c)(h, z, h->y ? h->y[i] : 0, (int64_t)st[3]);
    return lin + total * log1p(st[1]);
}

/* sum_{j != y} max(0, s_j - s_y + margin)^p (p = 1, 2), times w_y; g_y = -sum of the others.
 * j = y is a select, not a branch, so the loop vectorizes. */
FBP_INLINE double F(mhinge_row)(const F(head_t) * h, int64_t i, const REAL *s, REAL *g, double f)
{
    int64_t n = h->n, yi = h->y[i];
    double sy = s[yi], wy = h->w ? h->w[yi] : 1.0, loss = 0.0, gsum = 0.0, fw = f * wy;
    if (h->o->p == 1) {
#pragma omp simd reduction(+ : loss, gsum)
        for (int64_t j = 0; j < n; j++) {
            double mj = s[j] - sy + h->o->margin;
            double hj = j == yi ? 0.0 : fbp_relu(mj), gj = j == yi ? 0.0 : fbp_step(mj);
            loss += hj;
            gsum += gj;
            g[j] = (REAL)(fw * gj);
        }
    } else {
#pragma omp simd reduction(+ : loss, gsum)
        for (int64_t j = 0; j < n; j++) {
            double mj = s[j] - sy + h->o->margin; /* loaded for every j: no masked load */
            double hj = j == yi ? 0.0 : fbp_relu(mj);
            loss += hj * hj;
            gsum += 2.0 * hj;
            g[j] = (REAL)(fw * 2.0 * hj);
        }
    }
    g[yi] = (REAL)(-fw * gsum);
    return wy * loss;
}

/* sigmoid_bce's term of one score x (target zj, weights lw and pz): the loss
 * (1-z) x + lw softplus(-x), softplus(-x) = relu(-x) + log1p(e), e = e^-|x|; *gj = f (lw sigma(x)
 * - pz), sigma(x) = 1/(1+e) for x >= 0, e/(1+e) below. Inline exp and log1p: a row vectorizes. */
FBP_INLINE double F(bce_term)(double x, double zj, double lw, double pz, double f, REAL *gj)
{
    double e = fbp_exp1(-fabs(x)), big = 1.0 / (1.0 + e), sig = x >= 0 ? big : e * big;
    *gj = (REAL)(f * (lw * sig - pz));
    return (1.0 - zj) * x + lw * (fbp_relu(-x) + fbp_log1p_unit(e));
}

/* sigmoid_focal's term of one score x (target zj): alpha_t q^gamma ce, q = 1 - p_t, and
 * *gj = f times its gradient, in docs/math.md's finite product form (square: gamma is 2) */
FBP_INLINE double F(focal_term)(double x, double zj, double al, double ga, int square, double f,
                                REAL *gj)
{
    double e = fbp_exp1(-fabs(x)), big = 1.0 / (1.0 + e);
    double sp = x >= 0 ? big : e * big, sm = x >= 0 ? e * big : big;
    double ce = fbp_relu(x) + fbp_log1p_unit(e) - zj * x, q = zj * sm + (1.0 - zj) * sp;
    double at = al >= 0 ? al * zj + (1.0 - al) * (1.0 - zj) : 1.0;
    double qg = square ? q * q : pow(q, ga), ratio = q > 0 ? sp * sm / q : 0.0;
    *gj = (REAL)(f * (at * qg * (ga * (1.0 - 2.0 * zj) * ratio * ce + (sp - zj))));
    return at * qg * ce;
}

FBP_INLINE double F(head_row)(const F(head_t) * h, int64_t i, const REAL *s, REAL *g, double f,
                              double *tmp)
{
    int64_t n = h->n;
    const REAL *z = h->Z ? h->Z + i * n : NULL;
    double loss = 0.0;
    switch (h->code) {
    case FBP_SOFTMAX:
        if (h->y[i] == h->ignore) {
            for (int64_t j = 0; j < n; j++)
                g[j] = 0;
            return 0.0;
        }
        /* fall through */
    case FBP_SOFTMAX_PROBS:
        if (h->o->softcap > 0 || h->o->z_loss > 0)
            return F(softmax_llm_row)(h, i, s, g, f, tmp);
        return F(softmax_row)(h, i, s, g, f, tmp);
    case FBP_MHINGE: return F(mhinge_row)(h, i, s, g, f);
    case FBP_BHINGE: { /* max(0, margin - y s), g = -y 1[margin - y s > 0] */
        double yi = (double)h->y[i], mg = h->o->margin - yi * s[0];
        g[0] = (REAL)(-f * yi * fbp_step(mg));
        return fbp_relu(mg);
    }
    case FBP_NLL: { /* -log p_y, g = -e_y / p_y */
        int64_t yi = h->y[i];
        double py = s[yi];
        for (int64_t j = 0; j < n; j++)
            g[j] = 0;
        g[yi] = (REAL)(-f / py);
        return -log(py);
    }
    case FBP_BCE: /* (1-z) s + lw softplus(-s), lw = 1 + (pw-1) z; g = lw sigma(s) - pw z */
        if (h->pw) { /* (two loops: a vectorized one would read pw[j] even when pw is NULL) */
            const REAL *pw = h->pw;
#pragma omp simd reduction(+ : loss)
            for (int64_t j = 0; j < n; j++)
                loss += F(bce_term)(s[j], z[j], 1.0 + (pw[j] - 1.0) * z[j], pw[j] * z[j], f, g + j);
        } else {
#pragma omp simd reduction(+ : loss)
            for (int64_t j = 0; j < n; j++)
                loss += F(bce_term)(s[j], z[j], 1.0, z[j], f, g + j);
        }
        return loss;
    case FBP_SIGMOID_L2: /* (z - sigma(s))^2, g = -2 (z - sigma) sigma(s) sigma(-s) */
#pragma omp simd reduction(+ : loss)
        for (int64_t j = 0; j < n; j++) {
            double x = s[j], e = fbp_exp1(-fabs(x)), big = 1.0 / (1.0 + e);
            double dz = z[j] - (x >= 0 ? big : e * big);
            loss += dz * dz;
            g[j] = (REAL)(f * (-2.0 * dz * (big * (e * big))));
        }
        return loss;
    case FBP_L2:
#pragma omp simd reduction(+ : loss)
        for (int64_t j = 0; j < n; j++) {
            double dz = (double)z[j] - s[j];
            loss += dz * dz;
            g[j] = (REAL)(f * (-2.0 * dz));
        }
        return loss;
    case FBP_L1: /* |z - s|, g = sign(s - z) */
#pragma omp simd reduction(+ : loss)
        for (int64_t j = 0; j < n; j++) {
            double dz = (double)z[j] - s[j];
            loss += fabs(dz);
            g[j] = (REAL)(f * fbp_sign(-dz));
        }
        return loss;
    case FBP_HUBER: { /* m = min(|r|, delta), r = s - z: m (|r| - m/2), g = sign(r) m */
        double delta = h->o->delta;
#pragma omp simd reduction(+ : loss)
        for (int64_t j = 0; j < n; j++) {
            double r = (double)s[j] - z[j], a = fabs(r), m = a < delta ? a : delta;
            loss += m * (a - 0.5 * m);
            g[j] = (REAL)(f * (fbp_sign(r) * m));
        }
        return loss;
    }
    case FBP_FOCAL: { /* the default gamma = 2 squares: no pow call left in its loop */
        double al = h->o->alpha, ga = h->o->gamma;
        if (ga == 2.0) {
#pragma omp simd reduction(+ : loss)
            for (int64_t j = 0; j < n; j++)
                loss += F(focal_term)(s[j], z[j], al, 2.0, 1, f, g + j);
        } else {
#pragma omp simd reduction(+ : loss)
            for (int64_t j = 0; j < n; j++)
                loss += F(focal_term)(s[j], z[j], al, ga, 0, f, g + j);
        }
        return loss;
    }
    default: /* unreachable (every kernel checks the code first); never a silent head */
        for (int64_t j = 0; j < n; j++)
            g[j] = (REAL)NAN;
        return NAN;
    }
}

/* Rows lo..hi of a head (scores s_i + b if b, in place when dS is S; S, dS and loss_rows hold
 * rows off.. of ld REALs each, labels and weights are indexed by i): returns the block's (sum_i sw_i l_i,
 * sum_i omega_i) in out; db64 (if not NULL) += sum_i dS_i. */
FBP_HOT static void F(head_block)(const F(head_t) * h, const REAL *S, const REAL *b, REAL *dS,
                                  int64_t ld, double *loss_rows, double *db64, double scale,
                                  int64_t lo, int64_t hi, int64_t off, double *tmp, double *out)
{
    int64_t n = h->n;
    double total = 0.0, osum = 0.0;
    for (int64_t i = lo; i < hi; i++) {
        const REAL *s = S + (i - off) * ld;
        REAL *g = dS + (i - off) * ld;
        if (b)
            for (int64_t j = 0; j < n; j++)
                g[j] = s[j] + b[j];
        double swi = h->sw ? h->sw[i] : 1.0;
        double l = swi * F(head_row)(h, i, b ? g : s, g, swi * scale, tmp);
        total += l;
        osum += F(row_weight)(h, i);
        if (loss_rows)
            loss_rows[i - off] = l;
        if (db64)
            for (int64_t j = 0; j < n; j++)
                db64[j] += g[j];
    }
    out[0] = total;
    out[1] = osum;
}
