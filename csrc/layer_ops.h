/* Layer pieces shared by linear.c and mlp.c, templated (included inside each REAL pass):
 * the GEMM wrapper and the activation epilogues. */

#undef FBP_GEMM
#undef FBP_GEMM_T
#if FBP_DOUBLE
#define FBP_GEMM fbp_dgemm
#else
#define FBP_GEMM fbp_sgemm
#endif

/* Fortran ?gemm with int (LP64) or int64_t (ILP64) integer arguments */
#define FBP_GEMM_T(INT) \
    void (*)(char *, char *, INT *, INT *, INT *, REAL *, REAL *, INT *, REAL *, INT *, REAL *, \
             REAL *, INT *)

/* C (M, N) = op(A) op(B) + beta C on row-major arrays with row lengths lda, ldb, ldc (ta, tb:
 * use the transpose). BLAS is column-major, so it computes C^T = op(B)^T op(A)^T. The callers
 * have checked that every dimension fits an int. */
static void F(gemm_ld)(int ta, int tb, int64_t M, int64_t N, int64_t K, const REAL *A, int64_t lda,
                       const REAL *B, int64_t ldb, REAL beta, REAL *C, int64_t ldc)
{
    if (M == 0 || N == 0)
        return;
    if (K == 0) {           /* op(A) op(B) = 0 */
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++)
                C[i * ldc + j] = beta == 0 ? (REAL)0 : beta * C[i * ldc + j];
        return;
    }
    char TA = ta ? 'T' : 'N', TB = tb ? 'T' : 'N';
    REAL one = 1;
    if (fbp_blas_ilp64) {
        int64_t m = N, n = M, k = K, la = fbp_max(1, lda), lb = fbp_max(1, ldb), lc = ldc;
        ((FBP_GEMM_T(int64_t))FBP_GEMM)(&TB, &TA, &m, &n, &k, &one, (REAL *)B, &lb, (REAL *)A, &la,
                                        &beta, C, &lc);
    } else {
        int m = (int)N, n = (int)M, k = (int)K, la = (int)fbp_max(1, lda),
            lb = (int)fbp_max(1, ldb), lc = (int)ldc;
        ((FBP_GEMM_T(int))FBP_GEMM)(&TB, &TA, &m, &n, &k, &one, (REAL *)B, &lb, (REAL *)A, &la,
                                    &beta, C, &lc);
    }
}

/* F(gemm_ld) on a C whose rows are N long */
static void F(gemm)(int ta, int tb, int64_t M, int64_t N, int64_t K, const REAL *A, int64_t lda,
                    const REAL *B, int64_t ldb, REAL beta, REAL *C)
{
    F(gemm_ld)(ta, tb, M, N, K, A, lda, B, ldb, beta, C, N);
}

/* The body (__VA_ARGS__) once per activation, with ACT a compile-time constant: the switch sits
 * outside the loops, so fbp_activate(ACT, ...) folds to a few selects that vectorize and no
 * data-dependent branch is left to mispredict. */
#undef FBP_PER_ACTIVATION
#define FBP_PER_ACTIVATION(act, ...) \
    switch (act) { \
    case FBP_SIGMOID: { \
        enum { ACT = FBP_SIGMOID }; \
        __VA_ARGS__ \
    } break; \
    case FBP_TANH: { \
        enum { ACT = FBP_TANH }; \
        __VA_ARGS__ \
    } break; \
    case FBP_RELU: { \
        enum { ACT = FBP_RELU }; \
        __VA_ARGS__ \
    } break; \
    case FBP_LEAKY: { \
        enum { ACT = FBP_LEAKY }; \
        __VA_ARGS__ \
    } break; \
    case FBP_ELU: { \
        enum { ACT = FBP_ELU }; \
        __VA_ARGS__ \
    } break; \
    default: { \
        enum { ACT = FBP_IDENTITY }; \
        __VA_ARGS__ \
    } break; \
    }

/* A = f(S + b) in place (one pass after the GEMM). The sigmoid takes its exp from the
 * vectorized fbp_vexp, 256 at a time (libm's scalar exp was ~5% of a 3072-100-10 step). */
FBP_HOT static void F(bias_activate)(REAL *S, const REAL *b, int act, double alpha, int64_t B,
                                     int64_t m)
{
    if (act == FBP_SIGMOID) {
        double e[256];
        for (int64_t i = 0; i < B; i++) {
            REAL *s = S + i * m;
            for (int64_t j0 = 0; j0 < m; j0 += 256) {
                int64_t len = fbp_min(256, m - j0);
                int tiny = 0;
                for (int64_t k = 0; k < len; k++) {
                    e[k] = -fabs(b ? (double)(s[j0 + k] + b[j0 + k]) : (double)s[j0 + k]);
                    tiny |= e[k] < -708.0;
                }
                fbp_vexp(e, len);               /* e = exp(-|x|): sigma(x) and sigma(-x) */
                if (tiny)                       /* below fbp_vexp's clamp: libm's exp */
                    for (int64_t k = 0; k < len; k++) {
                        double x = b ? (double)(s[j0 + k] + b[j0 + k]) : (double)s[j0 + k];
                        if (-fabs(x) < -708.0)
                            e[k] = exp(-fabs(x));
                    }
                for (int64_t k = 0; k < len; k++) {
                    double x = b ? (double)(s[j0 + k] + b[j0 + k]) : (double)s[j0 + k];
                    s[j0 + k] = (REAL)(x >= 0 ? 1.0 / (1.0 + e[k]) : e[k] / (1.0 + e[k]));
                }
            }
        }
        return;
    }
    FBP_PER_ACTIVATION(
            act, for (int64_t i = 0; i < B; i++) {
                REAL *s = S + i * m;
                for (int64_t j = 0; j < m; j++)
                    s[j] = (REAL)fbp_activate(ACT, b ? (double)(s[j] + b[j]) : (double)s[j], alpha);
            })
}

/* dS = dA * f'(a), db64 += sum_i dS_i, in one pass */
FBP_HOT static void F(activation_backward)(REAL *dS, double *db64, const REAL *dA, const REAL *A,
                                           int act, double alpha, int64_t B, int64_t m)
{
    FBP_PER_ACTIVATION(
            act, for (int64_t i = 0; i < B; i++) for (int64_t j = 0; j < m; j++) {
                double g = dA[i * m + j] * fbp_activation_grad(ACT, A[i * m + j], alpha);
                dS[i * m + j] = (REAL)g;
                if (db64)
                    db64[j] += g;
            })
}
