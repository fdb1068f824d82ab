/* One row of every head, templated (included inside each REAL pass of a family file).
 * head_row returns the class-weighted loss of row i and writes f times its class-weighted
 * gradient into g, which may be s itself (s is read in full before g is written); f carries the
 * sample weight and the "mean" scale, so a row is written once. The formulas are math.md's and
 * the reference backend's, term for term; tmp is n doubles of scratch. Sums over a row use
 * `omp simd` reductions (a fixed, vectorized order: the same bits every run). */

typedef struct {
    int code;
    const int64_t *y;            /* (B,) labels, or NULL */
    const REAL *Z, *sw, *w, *pw; /* (B, n) targets, (B,) sample, (n,) class, (n,) pos weights */
    int64_t ignore, n;
    double eps, margin;
    int p;
} F(head_t);

/* index of the first maximum of s, or of its first NaN (as numpy.argmax) */
FBP_INLINE int64_t F(argmax)(const REAL *s, int64_t n)
{
    int64_t m = 0;
    double M = s[0];
    for (int64_t j = 1; j < n; j++)
        if (s[j] > M || (s[j] != s[j] && M == M)) {
            m = j;
            M = s[j];
        }
    return m;
}

/* omega_i: sample weight x class weight of the label (0 for ignore_index) */
FBP_INLINE double F(row_weight)(const F(head_t) *h, int64_t i)
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
FBP_INLINE double F(mean_scale)(const F(head_t) *h, int64_t B)
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
FBP_INLINE double F(softmax_row)(const F(head_t) *h, int64_t i, const REAL *s, REAL *g,
                                    double f, double *x)
{
    int64_t n = h->n, m = F(argmax)(s, n), yi = h->y ? h->y[i] : 0;
    const REAL *z = h->Z ? h->Z + i * n : NULL;
    double M = s[m], r = 0.0;
    for (int64_t j = 0; j < n; j++)
        x[j] = (double)s[j] - M;
    if (!z && !h->w && h->eps == 0) {        /* plain labels: C = e_y, the common case */
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
    double a = 1.0 - h->eps, e_n = h->eps / n, lin = 0.0, rest = 0.0, c_m = 0.0;
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

/* sum_{j != y} max(0, s_j - s_y + margin)^p (p = 1, 2), times w_y; g_y = -sum of the others.
 * j = y is a select, not a branch, so the loop vectorizes. */
FBP_INLINE double F(mhinge_row)(const F(head_t) *h, int64_t i, const REAL *s, REAL *g,
                                double f)
{
    int64_t n = h->n, yi = h->y[i];
    double sy = s[yi], wy = h->w ? h->w[yi] : 1.0, loss = 0.0, gsum = 0.0, fw = f * wy;
    if (h->p == 1) {
        #pragma omp simd reduction(+ : loss, gsum)
        for (int64_t j = 0; j < n; j++) {
            double mj = s[j] - sy + h->margin;
            double hj = j == yi ? 0.0 : fbp_relu(mj), gj = j == yi ? 0.0 : fbp_step(mj);
            loss += hj;
            gsum += gj;
            g[j] = (REAL)(fw * gj);
        }
    } else {
        #pragma omp simd reduction(+ : loss, gsum)
        for (int64_t j = 0; j < n; j++) {
            double mj = s[j] - sy + h->margin;      /* loaded for every j: no masked load */
            double hj = j == yi ? 0.0 : fbp_relu(mj);
            loss += hj * hj;
            gsum += 2.0 * hj;
            g[j] = (REAL)(fw * 2.0 * hj);
        }
    }
    g[yi] = (REAL)(-fw * gsum);
    return wy * loss;
}

FBP_INLINE double F(head_row)(const F(head_t) *h, int64_t i, const REAL *s, REAL *g,
                                 double f, double *tmp)
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
        return F(softmax_row)(h, i, s, g, f, tmp);
    case FBP_MHINGE:
        return F(mhinge_row)(h, i, s, g, f);
    case FBP_BHINGE: {          /* max(0, margin - y s), g = -y 1[margin - y s > 0] */
        double yi = (double)h->y[i], mg = h->margin - yi * s[0];
        g[0] = (REAL)(-f * yi * fbp_step(mg));
        return fbp_relu(mg);
    }
    case FBP_NLL: {             /* -log p_y, g = -e_y / p_y */
        int64_t yi = h->y[i];
        double py = s[yi];
        for (int64_t j = 0; j < n; j++)
            g[j] = 0;
        g[yi] = (REAL)(-f / py);
        return -log(py);
    }
    case FBP_BCE:   /* (1-z) s + lw softplus(-s), lw = 1 + (pw-1) z; g = lw sigma(s) - pw z */
        for (int64_t j = 0; j < n; j++) {
            double x = s[j], zj = z[j], e = exp(-fabs(x)), big = 1.0 / (1.0 + e);
            double sig = x >= 0 ? big : e * big;
            double lw = h->pw ? 1.0 + (h->pw[j] - 1.0) * zj : 1.0;
            double pz = h->pw ? h->pw[j] * zj : zj;
            loss += (1.0 - zj) * x + lw * (fbp_relu(-x) + log1p(e));
            g[j] = (REAL)(f * (lw * sig - pz));
        }
        return loss;
    case FBP_SIGMOID_L2:        /* (z - sigma(s))^2, g = -2 (z - sigma) sigma(s) sigma(-s) */
        for (int64_t j = 0; j < n; j++) {
            double x = s[j], e = exp(-fabs(x)), big = 1.0 / (1.0 + e);
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
    default:                    /* FBP_L1: |z - s|, g = sign(s - z) */
        #pragma omp simd reduction(+ : loss)
        for (int64_t j = 0; j < n; j++) {
            double dz = (double)z[j] - s[j];
            loss += fabs(dz);
            g[j] = (REAL)(f * fbp_sign(-dz));
        }
        return loss;
    }
}

/* Rows lo..hi of a head (scores s_i + b if b, in place when dS is S; S and dS hold rows
 * off.., labels and weights are indexed by i): returns the block's (sum_i sw_i l_i,
 * sum_i omega_i) in out; db64 (if not NULL) += sum_i dS_i. */
FBP_HOT static void F(head_block)(const F(head_t) *h, const REAL *S, const REAL *b, REAL *dS,
                                  double *loss_rows, double *db64, double scale, int64_t lo,
                                  int64_t hi, int64_t off, double *tmp, double *out)
{
    int64_t n = h->n;
    double total = 0.0, osum = 0.0;
    for (int64_t i = lo; i < hi; i++) {
        const REAL *s = S + (i - off) * n;
        REAL *g = dS + (i - off) * n;
        if (b)
            for (int64_t j = 0; j < n; j++)
                g[j] = s[j] + b[j];
        double swi = h->sw ? h->sw[i] : 1.0;
        double l = swi * F(head_row)(h, i, b ? g : s, g, swi * scale, tmp);
        total += l;
        osum += F(row_weight)(h, i);
        if (loss_rows)
            loss_rows[i] = l;
        if (db64)
            for (int64_t j = 0; j < n; j++)
                db64[j] += g[j];
    }
    out[0] = total;
    out[1] = osum;
}
